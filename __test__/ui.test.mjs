// Dashboard in a real browser: headless Chromium (playwright-core, Debian's
// chromium) against a node:http server on 127.0.0.1 serving
// createDurablyHandler(d, { ui }) with real runs executed by a real worker.

import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import fs from 'node:fs'
import path from 'node:path'
import durablyPkg from '../index.js'
import helpers from './helpers.js'
import httpHelpers from './http-helpers.js'
import browserHelpers from './browser.js'

const { defineJob, withLogPersistence, createDurably } = durablyPkg
const { makeDurably, closeAll, until, ROOT } = helpers
const { startServer, call, gate } = httpHelpers
const { launchBrowser, browserSkipReason } = browserHelpers

const skipReason = browserSkipReason()
if (skipReason) console.warn(`[ui.test] skipped: ${skipReason}`)
const OUT = path.join(ROOT, 'test-output', 'ui')
const XSS = '<img src=x onerror="window.__xss=1">'

// Keys whose `charge` step fails until removed (so a retry can succeed).
const failing = new Set()
const gates = new Map()
const hold = (key) => {
  const g = gate()
  gates.set(key, g)
  return g
}

const jobs = {
  sync: defineJob({
    name: 'sync-users',
    run: async (ctx, input) => {
      ctx.log.info('starting', { org: input.org })
      const users = await ctx.run('fetch-users', () => ['ann', 'bob', 'cy'])
      for (const [i, u] of users.entries()) {
        await ctx.run(`save-${u}`, async () => {
          ctx.log.info(`saved ${u}`)
          await new Promise((r) => setTimeout(r, 5))
          return u
        })
        ctx.progress(i + 1, users.length, `saved ${u}`)
      }
      return { syncedCount: users.length }
    },
  }),
  charge: defineJob({
    name: 'charge-card',
    run: async (ctx, input) => {
      await ctx.run('load-order', () => ({ order: input.key }))
      await ctx.run('charge', () => {
        if (failing.has(input.key)) {
          ctx.log.error('card declined', { key: input.key })
          throw new Error(`card declined for ${input.key}`)
        }
        return 'ok'
      })
      return { charged: input.key }
    },
  }),
  slow: defineJob({
    name: 'slow-import',
    run: async (ctx, input) => {
      for (let i = 1; i <= input.n; i++) {
        await ctx.run(`chunk-${i}`, () => gates.get(`${input.key}:${i}`)?.promise ?? null)
        ctx.progress(i, input.n, `chunk ${i}`)
      }
      return { chunks: input.n }
    },
  }),
}

describe.skipIf(!!skipReason)('dashboard in Chromium', () => {
  let d
  let srv
  let roSrv
  let browser
  let page

  const byStatus = async (status) => (await d.getRuns({ status })).length
  const goto = async (p, q = '') => {
    await page.goto(srv.url(`/ui${q}`))
    if (p !== 'detail') await page.waitForSelector('#runs[data-loaded]')
    else await page.waitForSelector('#run[data-status]')
  }
  const rowStatuses = () => page.$$eval('tr.run', (trs) => trs.map((t) => t.dataset.status))

  beforeAll(async () => {
    fs.mkdirSync(OUT, { recursive: true })
    d = makeDurably({ jobs, maxConcurrentRuns: 4 })
    d.use(withLogPersistence())
    await d.init()
    for (const org of ['acme', 'globex']) {
      await d.jobs.sync.triggerAndWait({ org }, { labels: { team: org === 'acme' ? 'a' : 'b' } })
    }
    for (const key of ['o-1', 'o-2', 'o-3']) failing.add(key)
    for (const key of ['o-1', 'o-2', 'o-3']) {
      const r = await d.jobs.charge.trigger({ key }, { labels: { team: 'a', order: key } })
      await d.waitForRun(r.id).catch(() => {})
    }
    const x = await d.jobs.sync.trigger({ org: 'evil' }, { labels: { note: XSS } })
    await d.waitForRun(x.id)
    srv = await startServer(d, { ui: { title: 'Acme jobs' } })
    roSrv = await startServer(d, { ui: { readOnly: true } })
    browser = await launchBrowser()
    page = await browser.newPage({ viewport: { width: 1280, height: 800 } })
    page.on('dialog', (dialog) => dialog.accept())
  })

  afterAll(async () => {
    await browser?.close()
    await srv?.close()
    await roSrv?.close()
    for (const g of gates.values()) g.open()
    await closeAll()
  })

  it('lists runs with statuses, labels and a CSP on its files', async () => {
    const res = await call(srv.url('/ui'))
    expect(res.headers.get('content-security-policy')).toContain("script-src 'self'")
    expect((await call(srv.url('/ui/app.js'))).headers.get('content-security-policy')).toContain("default-src 'none'")
    await goto('list')
    expect(await page.title()).toBe('Acme jobs')
    const statuses = await rowStatuses()
    expect(statuses.filter((s) => s === 'failed')).toHaveLength(3)
    expect(statuses.filter((s) => s === 'completed')).toHaveLength(3)
    // The counts come from their own request (GET /stats), after the list's.
    await page.waitForSelector('#counts a[data-count=failed]')
    expect(await page.textContent('#counts')).toContain('failed3')
    await page.screenshot({ path: path.join(OUT, 'list.png'), fullPage: true })
  })

  it('filters by status, job and label, from the URL and from the controls', async () => {
    await goto('list', '?status=failed')
    expect(await rowStatuses()).toEqual(['failed', 'failed', 'failed'])
    expect(await page.inputValue('select[name=status]')).toBe('failed')

    await goto('list', '?label.team=b')
    expect(await page.$$eval('tr.run td.labels', (tds) => tds.map((t) => t.textContent))).toEqual(['team=b'])

    await goto('list', '?jobName=charge-card&label.order=o-2')
    expect(await page.$$eval('tr.run', (trs) => trs.length)).toBe(1)

    // From the controls: the URL follows, so a reload shows the same view.
    await goto('list')
    await page.waitForSelector('select[name=jobName] option[value="sync-users"]', { state: 'attached' })
    await page.selectOption('select[name=jobName]', 'sync-users')
    await page.waitForURL(/jobName=sync-users/)
    await page.fill('input[name=labels]', 'team=a')
    await page.click('#apply')
    await page.waitForURL(/label\.team=a/)
    await page.waitForSelector('#runs[data-loaded]')
    await until(async () => (await page.$$('tr.run')).length === 1, { what: 'one filtered row' })
    await page.reload()
    await page.waitForSelector('#runs[data-loaded]')
    expect(await page.$$eval('tr.run', (trs) => trs.map((t) => t.children[2].textContent))).toEqual(['sync-users'])
    expect(await page.inputValue('input[name=labels]')).toBe('team=a')
  })

  it('pages through runs', async () => {
    const made = []
    for (let i = 0; i < 26; i++) made.push(await d.jobs.sync.trigger({ org: `p${i}` }, { labels: { batch: 'paging' } }))
    await Promise.all(made.map((r) => d.waitForRun(r.id)))
    await goto('list', '?label.batch=paging')
    expect(await page.$$eval('tr.run', (t) => t.length)).toBe(25)
    expect(await page.isDisabled('#prev')).toBe(true)
    await page.click('#next')
    await page.waitForURL(/page=2/)
    await until(async () => (await page.$$('tr.run')).length === 1, { what: 'page 2 with one run' })
    expect(await page.isDisabled('#next')).toBe(true)
    const onPage2 = await page.$eval('tr.run', (t) => t.dataset.runId)
    expect(onPage2).toBe(made[0].id) // newest first: the oldest is alone on page 2
  })

  it('shows the XSS label as text, never as markup', async () => {
    await goto('list', '?label.note=' + encodeURIComponent(XSS))
    expect(await page.$$eval('tr.run td.labels', (tds) => tds.map((t) => t.textContent))).toEqual([`note=${XSS}`])
    expect(await page.$$('main img')).toHaveLength(0)
    const id = await page.$eval('tr.run', (t) => t.dataset.runId)
    await goto('detail', `?run=${id}`)
    expect(await page.textContent('#run .labels')).toBe(`note=${XSS}`)
    expect(await page.$$('img')).toHaveLength(0)
    expect(await page.evaluate(() => window.__xss)).toBeUndefined()
  })

  it('shows a run: steps with durations, logs by step, the failed step and its error', async () => {
    const [failed] = await d.getRuns({ jobName: 'charge-card', labels: { order: 'o-3' } })
    await goto('detail', `?run=${failed.id}`)
    expect(await page.$$eval('.step', (s) => s.map((e) => [e.dataset.step, e.dataset.status]))).toEqual([
      ['load-order', 'completed'],
      ['charge', 'failed'],
    ])
    expect(await page.textContent('.step.failed pre.error')).toContain('card declined for o-3')
    expect(await page.textContent('#error')).toContain('card declined for o-3')
    expect(await page.textContent('.step.failed .logs')).toContain('card declined')
    expect(await page.textContent('#attempts')).toBe('1')
    await page.screenshot({ path: path.join(OUT, 'detail-failed.png'), fullPage: true })

    const [done] = await d.getRuns({ jobName: 'sync-users', labels: { team: 'a' } })
    await goto('detail', `?run=${done.id}`)
    const steps = await page.$$eval('.step', (s) =>
      s.map((e) => ({
        name: e.dataset.step,
        duration: e.querySelector('.duration').textContent,
        bar: e.querySelector('.timeline > i').style.width,
        logs: [...e.querySelectorAll('.log .msg')].map((m) => m.textContent),
      })),
    )
    expect(steps.map((s) => s.name)).toEqual(['fetch-users', 'save-ann', 'save-bob', 'save-cy'])
    for (const s of steps) {
      expect(s.duration).toMatch(/\d+ ms|s$/)
      expect(Number.parseFloat(s.bar)).toBeGreaterThan(0)
    }
    expect(steps[2].logs).toEqual(['saved bob'])
    expect(await page.textContent('#run-logs')).toContain('starting')
    expect(JSON.parse(await page.textContent('#output'))).toEqual({ syncedCount: 3 })
    expect(JSON.parse(await page.textContent('#input'))).toEqual({ org: 'acme' })
    await page.screenshot({ path: path.join(OUT, 'detail.png'), fullPage: true })
  })

  it("updates a running run's progress without a reload, in the list and the detail", async () => {
    for (let i = 1; i <= 3; i++) hold(`live:${i}`)
    const run = await d.jobs.slow.trigger({ key: 'live', n: 3 }, { labels: { t: 'live' } })
    await page.goto(srv.url(`/ui?label.t=live`))
    await page.waitForSelector('#runs[data-loaded]')
    await page.evaluate(() => (window.__sameDocument = true))
    gates.get('live:1').open()
    await page.waitForFunction(() => document.querySelector('tr.run .ptext')?.textContent.startsWith('1/3'))
    expect(await page.evaluate(() => window.__sameDocument)).toBe(true)
    // The whole list while it runs (the README's picture).
    await page.goto(srv.url('/ui'))
    await page.waitForSelector('tr.run[data-status="running"]')
    await page.screenshot({ path: path.join(OUT, 'list-live.png') })
    await page.goto(srv.url(`/ui?label.t=live`))
    await page.waitForSelector('#runs[data-loaded]')
    await page.evaluate(() => (window.__sameDocument = true))

    await page.click(`tr.run a`)
    await page.waitForSelector('#run[data-status="running"]')
    gates.get('live:2').open()
    await page.waitForFunction(() => document.querySelector('#run .ptext')?.textContent.startsWith('2/3'))
    gates.get('live:3').open()
    await page.waitForSelector('#run[data-status="completed"]')
    expect(await page.evaluate(() => window.__sameDocument)).toBe(true)
    expect((await d.getRun(run.id)).status).toBe('completed')
  })

  it('a new run appears in the list without a reload', async () => {
    await goto('list', '?jobName=sync-users&label.t=fresh')
    await page.evaluate(() => (window.__sameDocument = true))
    expect(await page.$$('tr.run')).toHaveLength(0)
    const r = await d.jobs.sync.trigger({ org: 'new' }, { labels: { t: 'fresh' } })
    await page.waitForSelector(`tr.run[data-run-id="${r.id}"][data-status="completed"]`)
    expect(await page.evaluate(() => window.__sameDocument)).toBe(true)
  })

  it('runs written by another instance on the store appear through the slow poll', async () => {
    await goto('list', '?label.t=elsewhere')
    await page.evaluate(() => (window.__sameDocument = true))
    // Another instance has its own events: only the page's poll can see this run.
    const other = createDurably({ ...helpers.sameStore(d), jobs: { x: defineJob({ name: 'elsewhere', run: async () => 1 }) } })
    const r = await other.jobs.x.trigger(null, { labels: { t: 'elsewhere' } })
    await other.close()
    await page.waitForSelector(`tr.run[data-run-id="${r.id}"][data-status="pending"]`, { timeout: 15_000 })
    expect(await page.evaluate(() => window.__sameDocument)).toBe(true)
    await d.cancel(r.id)
  })

  it('retries a failed run, which turns green live', async () => {
    const [run] = await d.getRuns({ jobName: 'charge-card', labels: { order: 'o-1' } })
    await goto('detail', `?run=${run.id}`)
    expect(await page.getAttribute('#run', 'data-status')).toBe('failed')
    await page.evaluate(() => (window.__sameDocument = true))
    failing.delete('o-1')
    await page.click('#retry')
    await page.waitForSelector('#run[data-status="completed"]')
    expect(await page.evaluate(() => window.__sameDocument)).toBe(true)
    expect(await page.textContent('#attempts')).toBe('2')
    expect(await page.$$('.step.failed')).toHaveLength(0)
    expect((await d.getRun(run.id)).status).toBe('completed')
  })

  it('cancels a running run and deletes it', async () => {
    hold('c:1')
    const run = await d.jobs.slow.trigger({ key: 'c', n: 1 })
    await until(async () => (await d.getRun(run.id)).status === 'running', { what: 'running' })
    await goto('detail', `?run=${run.id}`)
    expect(await page.isDisabled('#delete')).toBe(true)
    await page.click('#cancel')
    await page.waitForSelector('#run[data-status="cancelled"]')
    expect((await d.getRun(run.id)).status).toBe('cancelled')
    gates.get('c:1').open()
    await page.click('#delete')
    await page.waitForSelector('#runs[data-loaded]')
    expect(await d.getRun(run.id)).toBeNull()
  })

  it('retries all failed runs at once from the list', async () => {
    failing.clear()
    await goto('list', '?status=failed')
    expect(await rowStatuses()).toEqual(['failed', 'failed'])
    await page.check('#select-all')
    expect(await page.textContent('#selected-count')).toBe('2 selected')
    await page.click('#bulk-retry')
    await until(async () => (await byStatus('failed')) === 0, { what: 'no failed run left' })
    await page.waitForFunction(() => document.querySelectorAll('tr.run').length === 0)
    const charge = await d.getRuns({ jobName: 'charge-card' })
    await until(async () => (await d.getRuns({ jobName: 'charge-card', status: 'completed' })).length === charge.length, {
      what: 'retried runs completed',
    })
  })

  it('read-only mode hides every action and the server refuses them', async () => {
    const [run] = await d.getRuns({ jobName: 'charge-card' })
    await page.goto(roSrv.url('/ui'))
    await page.waitForSelector('#runs[data-loaded]')
    expect(await page.$$('input[type=checkbox]')).toHaveLength(0)
    expect(await page.$$('#bulk-retry, #bulk-cancel, #bulk-delete')).toHaveLength(0)
    await page.goto(roSrv.url(`/ui?run=${run.id}`))
    await page.waitForSelector('#run[data-status]')
    expect(await page.$$('#retry, #retrigger, #cancel, #delete')).toHaveLength(0)
    const status = await page.evaluate(async (u) => (await fetch(u, { method: 'POST' })).status, roSrv.url(`/retrigger?runId=${run.id}`))
    expect(status).toBe(403)
    expect(await d.getRuns({ jobName: 'charge-card' })).toHaveLength(3)
  })
})
