// durably/browser in real Chromium (issue 17): the Rust store compiled to
// wasm in a dedicated Worker, SQLite on OPFS, job functions in the page.
// Pages are served from 127.0.0.1 (a secure context, as OPFS needs) by a
// small static server. Needs the bundle from `npm run build:browser`
// (.ci/run builds it first); under CI=true a missing bundle or browser fails.

import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import fs from 'node:fs'
import http from 'node:http'
import path from 'node:path'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'

const require = createRequire(import.meta.url)
const { browserSkipReason, launchBrowser, chromiumPath } = require('./browser.js')

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const BUNDLE = path.join(ROOT, 'browser', 'index.mjs')

function skipReason() {
  const noBrowser = browserSkipReason()
  if (noBrowser) return noBrowser
  if (!fs.existsSync(BUNDLE) || !fs.existsSync(path.join(ROOT, 'browser', 'durably_wasm_bg.wasm'))) {
    const reason = 'the durably/browser bundle is not built (run npm run build:browser)'
    if (process.env.CI === 'true') throw new Error(`browser tests need the bundle under CI: ${reason}`)
    return reason
  }
  return null
}

const reason = skipReason()
if (reason) console.warn(`skipping durably/browser tests: ${reason}`)

const TYPES = { '.mjs': 'text/javascript', '.js': 'text/javascript', '.html': 'text/html', '.wasm': 'application/wasm', '.css': 'text/css' }
const SERVED = ['/browser/', '/__test__/', '/examples/browser/']

/** Serves the bundle, the fixtures and the example from the package root on 127.0.0.1. */
function startServer() {
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x')
    const file = path.join(ROOT, path.normalize(decodeURIComponent(url.pathname)))
    if (!SERVED.some((p) => url.pathname.startsWith(p)) || !file.startsWith(ROOT) || !fs.existsSync(file)) {
      res.writeHead(404).end('not found')
      return
    }
    res.writeHead(200, { 'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream', 'cache-control': 'no-store' })
    fs.createReadStream(file).pipe(res)
  })
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)))
}

describe.skipIf(reason)('durably/browser on OPFS in Chromium', () => {
  let server
  let browser
  let context
  let base
  const errors = []

  beforeAll(async () => {
    server = await startServer()
    base = `http://127.0.0.1:${server.address().port}`
    browser = await launchBrowser()
    context = await browser.newContext()
  }, 60_000)

  afterAll(async () => {
    await browser?.close()
    await new Promise((r) => (server ? server.close(r) : r()))
  })

  /** Opens the test page on database `db`; resolves once `init()` settled. */
  async function open(db, query = '') {
    const page = await context.newPage()
    page.on('pageerror', (err) => errors.push(`${db}: ${err.message}`))
    await page.goto(`${base}/__test__/browser/opfs-page.html?db=${db}${query}`)
    const ready = await page.evaluate(() => window.ready)
    return { page, ready }
  }

  it('runs a 3-step job to completion; run, steps and progress are read back from OPFS by a new page', async () => {
    const { page, ready } = await open('complete.db')
    expect(ready).toBe('ok')
    const done = await page.evaluate(async () => {
      const r = await window.durably.jobs.threeSteps.triggerAndWait({ n: 4 }, { timeout: 20_000 })
      return { ...r, executed: window.executed() }
    })
    expect(done.disposition).toBe('created')
    expect(done.output.a).toBe(5)
    expect(done.output.b).toBe(10)
    expect(done.output.c.sum).toBe(13)
    expect(done.executed).toEqual(['one', 'two', 'three'])
    await page.close() // the worker ends and releases the database

    // A new page (new worker, new wasm instance) reads what is on OPFS.
    const again = await open('complete.db')
    expect(again.ready).toBe('ok')
    const stored = await again.page.evaluate(async (id) => {
      const run = await window.durably.getRun(id)
      const steps = await window.durably.getSteps(id)
      const root = await navigator.storage.getDirectory()
      const dir = await root.getDirectoryHandle('durably')
      const files = []
      for await (const name of dir.keys()) files.push(name)
      return {
        status: run.status,
        output: run.output,
        progress: run.progress,
        dateIsDate: run.output.c.at instanceof Date,
        steps: steps.map((s) => [s.name, s.index, s.status, s.output]),
        files,
      }
    }, done.id)
    expect(stored.status).toBe('completed')
    expect(stored.dateIsDate).toBe(true) // tagged values survive the round trip
    expect(stored.progress).toEqual({ current: 3, total: 3, message: 'done' })
    expect(stored.steps.map((s) => s.slice(0, 3))).toEqual([
      ['one', 0, 'completed'],
      ['two', 1, 'completed'],
      ['three', 2, 'completed'],
    ])
    expect(stored.steps[0][3]).toBe(5)
    expect(stored.files.length).toBeGreaterThan(0) // the access handle pool's files
    await again.page.close()
  }, 60_000)

  it('resumes a run from step 2 after a reload in the middle of step 2; step 1 is not executed again', async () => {
    // A stale threshold of a minute: only the new tab's recovery at start can resume the run in time.
    const { page, ready } = await open('reload.db', '&hold=two&stale=60000')
    expect(ready).toBe('ok')
    const id = await page.evaluate(async () => (await window.durably.jobs.threeSteps.trigger({ n: 1 })).id)
    // Wait until step two is executing (and step one is committed).
    await page.waitForFunction(() => window.executed().includes('two'), null, { timeout: 20_000 })
    const mid = await page.evaluate(async (id) => {
      const run = await window.durably.getRun(id)
      const steps = await window.durably.getSteps(id)
      return { status: run.status, steps: steps.map((s) => s.name) }
    }, id)
    expect(mid).toEqual({ status: 'running', steps: ['one'] })
    // While the step runs in the page, the worker's timer renews the lease (heartbeatInterval 300 ms).
    const beats = await page.evaluate(async (id) => {
      const beat = async () => JSON.parse(await window.durably._rpc.call('getRun', id)).heartbeatAt
      const first = await beat()
      await new Promise((r) => setTimeout(r, 1000))
      return [first, await beat()]
    }, id)
    expect(Date.parse(beats[1])).toBeGreaterThan(Date.parse(beats[0]))

    // Reload without the hold: the new page's worker owns the database and resumes the run.
    await page.goto(`${base}/__test__/browser/opfs-page.html?db=reload.db&stale=60000`)

    expect(await page.evaluate(() => window.ready)).toBe('ok')
    const after = await page.evaluate(async (id) => {
      const run = await window.durably.waitForRun(id, { timeout: 20_000 })
      const steps = await window.durably.getSteps(id)
      return { status: run.status, output: run.output, steps: steps.map((s) => s.name), executed: window.executed() }
    }, id)
    expect(after.status).toBe('completed')
    expect(after.output.b).toBe(4)
    expect(after.steps).toEqual(['one', 'two', 'three'])
    // 'one' ran once; 'two' ran before the reload and again after it.
    expect(after.executed).toEqual(['one', 'two', 'two', 'three'])
    await page.close()
  }, 60_000)

  it('a failing step fails the run; retry() runs it again from the failed step', async () => {
    const { page, ready } = await open('retry.db')
    expect(ready).toBe('ok')
    const failed = await page.evaluate(async () => {
      localStorage.setItem('fail:retry.db', '1')
      const run = await window.durably.jobs.flaky.trigger({})
      const err = await window.durably.waitForRun(run.id, { timeout: 20_000 }).then(
        () => null,
        (e) => ({ name: e.name, message: e.message }),
      )
      const stored = await window.durably.getRun(run.id)
      const steps = await window.durably.getSteps(run.id)
      return { id: run.id, err, status: stored.status, error: stored.error, steps: steps.map((s) => [s.name, s.status, s.error]) }
    })
    expect(failed.err?.message).toContain('fragile step failed on purpose')
    expect(failed.status).toBe('failed')
    expect(failed.error).toContain('fragile step failed on purpose')
    expect(failed.steps).toEqual([
      ['before', 'completed', null],
      ['fragile', 'failed', 'fragile step failed on purpose'],
    ])

    const retried = await page.evaluate(async (id) => {
      localStorage.setItem('fail:retry.db', '0')
      const events = []
      window.durably.on('run:retry', (e) => events.push(e.type))
      const pending = await window.durably.retry(id)
      const run = await window.durably.waitForRun(id, { timeout: 20_000 })
      const steps = await window.durably.getSteps(id)
      return { pendingStatus: pending.status, events, status: run.status, output: run.output, steps: steps.map((s) => [s.name, s.status]) }
    }, failed.id)
    expect(retried.pendingStatus).toBe('pending')
    expect(retried.events).toEqual(['run:retry'])
    expect(retried.status).toBe('completed')
    expect(retried.output).toBe('kept+fixed')
    expect(retried.steps).toEqual([
      ['before', 'completed'],
      ['fragile', 'completed'],
    ])
    await page.close()
  }, 60_000)

  it('a second tab on the same database is refused with DB_LOCKED; the first keeps working', async () => {
    const first = await open('locked.db')
    expect(first.ready).toBe('ok')
    const second = await open('locked.db', '&lockTimeout=500')
    expect(second.ready.code).toBe('DB_LOCKED')
    expect(second.ready.message).toContain("the database 'locked.db' (OPFS directory 'durably') is open in another tab")
    // Its API fails with the same error rather than touching the file.
    const call = await second.page.evaluate(() =>
      window.durably.getRuns().then(
        () => null,
        (e) => e.code,
      ),
    )
    expect(call).toBe('DB_LOCKED')
    // A database in another OPFS directory is fine in the second tab.
    // (A string: vitest would rewrite the dynamic import of a function.)
    const other = await second.page.evaluate(`(async () => {
      const { createDurably } = await import('durably')
      const d = createDurably({ path: 'other.db', directory: 'other' })
      await d.migrate()
      const runs = await d.getRuns()
      await d.close()
      return runs.length
    })()`)
    expect(other).toBe(0)
    // Options that make no sense in a tab are refused by name.
    const refused = await second.page.evaluate(`(async () => {
      const { createDurably } = await import('durably')
      const out = []
      for (const o of [{ url: 'postgres://h/db' }, { retainRuns: '1d' }, { directory: '' }, { pollingInterval: -1 }]) {
        try {
          createDurably(o)
          out.push(null)
        } catch (e) {
          out.push(e.code + ': ' + e.message)
        }
      }
      return out
    })()`)
    expect(refused[0]).toBe('VALIDATION_ERROR: option url is not supported by durably/browser (it stores in SQLite on OPFS, not in PostgreSQL)')
    expect(refused[1]).toContain('option retainRuns is not supported by durably/browser')
    expect(refused[2]).toContain('directory must be a non-empty string')
    expect(refused[3]).toContain('pollingInterval')
    const r = await first.page.evaluate(() => window.durably.jobs.threeSteps.triggerAndWait({ n: 0 }, { timeout: 20_000 }))
    expect(r.output.c.sum).toBe(5)
    await second.page.close()
    await first.page.close()
  }, 60_000)

  it('cancel() stops a running run (its signal fires); retrigger() and deleteRun() work on terminal runs', async () => {
    const { page, ready } = await open('manage.db', '&hold=two')
    expect(ready).toBe('ok')
    const out = await page.evaluate(async () => {
      const d = window.durably
      const held = await d.jobs.threeSteps.trigger({ n: 1 })
      while (!window.executed().includes('two')) await new Promise((r) => setTimeout(r, 20))
      const events = []
      d.on('run:cancel', (e) => events.push(e.runId))
      const waited = d.waitForRun(held.id, { timeout: 20_000 }).then(() => 'completed', (e) => e.code)
      const cancelled = await d.cancel(held.id)
      const flaky = await d.jobs.flaky.triggerAndWait({}, { timeout: 20_000 })
      const again = await d.retrigger(flaky.id)
      const againDone = await d.waitForRun(again.id, { timeout: 20_000 })
      await d.deleteRun(flaky.id)
      return {
        cancelledStatus: cancelled.status,
        waited: await waited,
        events,
        stored: (await d.getRun(held.id)).status,
        retriggered: again.id !== flaky.id && againDone.output === 'kept+fixed',
        deleted: await d.getRun(flaky.id),
        conflict: await d.retrigger(held.id).then(() => null, (e) => e.code),
      }
    })
    expect(out.cancelledStatus).toBe('cancelled')
    expect(out.waited).toBe('CANCELLED')
    expect(out.events.length).toBe(1)
    expect(out.stored).toBe('cancelled')
    expect(out.retriggered).toBe(true)
    expect(out.deleted).toBe(null)
    expect(out.conflict).toBe(null) // a cancelled run is terminal: retrigger makes a new run
    await page.close()
  }, 60_000)

  it('fails a run past its job timeout with the engine message (fenced write), fires its signal, frees its slot', async () => {
    const { page, ready } = await open('timeout.db', '&jobTimeout=400&dir=timeout')
    expect(ready).toBe('ok')
    const out = await page.evaluate(async () => {
      const d = window.durably
      const events = []
      d.on('run:fail', (e) => events.push({ type: e.type, runId: e.runId, error: e.error }))
      const t0 = Date.now()
      const run = await d.jobs.stuck.trigger()
      const waited = await d.waitForRun(run.id, { timeout: 20_000 }).then(
        () => 'completed',
        (e) => ({ name: e.name, code: e.code, message: e.message }),
      )
      const elapsed = Date.now() - t0
      // maxConcurrentRuns is 1 and the stuck step never ends: the next run
      // only gets the slot because the timeout freed it.
      const next = await d.jobs.threeSteps.triggerAndWait({ n: 1 }, { timeout: 20_000 })
      const stored = await d.getRun(run.id)
      const steps = await d.getSteps(run.id)
      return {
        id: run.id,
        waited,
        elapsed,
        events,
        signal: window.stuckSignal,
        status: stored.status,
        error: stored.error,
        steps: steps.map((s) => [s.name, s.status]),
        next: next.output.a,
      }
    })
    expect(out.status).toBe('failed')
    expect(out.error).toBe('run timed out after 400 ms') // src/engine/policy.rs timeout_message
    expect(out.waited.code).toBe('RUN_FAILED')
    expect(out.waited.message).toContain('run timed out after 400 ms')
    expect(out.elapsed).toBeGreaterThanOrEqual(400)
    expect(out.signal).toEqual({ name: 'TimeoutError', message: `run ${out.id} timed out after 400 ms` })
    expect(out.events).toEqual([{ type: 'run:fail', runId: out.id, error: `run ${out.id} timed out after 400 ms` }])
    expect(out.steps).toEqual([['first', 'completed']])
    expect(out.next).toBe(2) // threeSteps({ n: 1 }) completed
    await page.close()
  }, 60_000)

  /**
   * The files of the OPFS access handle pool in `directory`, read from a page
   * that does not open the database: each file's SQLite name (the pool keeps
   * it in the file's first 512 bytes; empty for a free slot) and size.
   */
  async function poolFiles(ctx, directory) {
    const page = await ctx.newPage()
    await page.goto(`${base}/browser/index.mjs`) // same origin, no durably instance
    const files = await page.evaluate(async (directory) => {
      const top = await (await navigator.storage.getDirectory()).getDirectoryHandle(directory)
      const dir = await top.getDirectoryHandle('.opaque') // sqlite-wasm-vfs keeps the pool there
      const out = []
      for await (const [, handle] of dir.entries()) {
        if (handle.kind !== 'file') continue
        const file = await handle.getFile()
        const head = new Uint8Array(await file.slice(0, 512).arrayBuffer())
        const end = head.indexOf(0)
        out.push({ name: new TextDecoder().decode(head.subarray(0, end < 0 ? 512 : end)), size: file.size })
      }
      return out
    }, directory)
    await page.close()
    return files.filter((f) => f.name !== '')
  }

  it('a tab killed in the middle of a large commit: the database opens, integrity_check is ok, the run resumes with committed steps kept and the interrupted step re-run', async () => {
    const MB = 24 // its commit takes about 2 s here (measured: 24 MB 2.2 s, 48 MB 4.0 s from post to reply)

    /**
     * One attempt in a fresh context (OPFS is per context; the crash takes down
     * only this renderer, page and worker): the renderer is crashed (CDP
     * Page.crash) `delay` ms after the page posts the big step's flush.
     */
    async function crashDuringCommit(delay) {
      const ctx = await browser.newContext()
      const page = await ctx.newPage()
      const executed = []
      await page.exposeFunction('reportStep', (name) => executed.push(name))
      const cdp = await ctx.newCDPSession(page)
      await page.exposeFunction('crashNow', () => setTimeout(() => cdp.send('Page.crash').catch(() => {}), delay))
      const crashed = new Promise((resolve) => page.on('crash', resolve))
      await page.goto(`${base}/__test__/browser/opfs-page.html?db=crash.db&dir=crash&mb=${MB}&crashOnFlush=1&stale=60000`)
      expect(await page.evaluate(() => window.ready)).toBe('ok')
      page.evaluate(() => void window.durably.jobs.bigCommit.trigger()).catch(() => {})
      await Promise.race([crashed, new Promise((_, reject) => setTimeout(() => reject(new Error('the tab did not crash')), 60_000))])
      return { ctx, executed, left: await poolFiles(ctx, 'crash') }
    }

    // Too early (the flush not yet in a transaction) leaves no journal: try other delays.
    const tried = []
    let hit = null
    for (const delay of [600, 1000, 300, 1500, 2000]) {
      const attempt = await crashDuringCommit(delay)
      tried.push({ delay, left: attempt.left })
      // A hot rollback journal: the crash hit the big step's write transaction.
      if (attempt.left.some((f) => f.name === 'crash.db-journal' && f.size > 4096)) {
        hit = attempt
        break
      }
      await attempt.ctx.close()
    }
    expect(hit, `no crash landed inside the commit: ${JSON.stringify(tried)}`).not.toBe(null)
    const { ctx } = hit
    try {
      expect(hit.executed).toEqual(['small', 'big'])
      expect(hit.left.map((f) => f.name).sort()).toEqual(['crash.db', 'crash.db-journal'])

      // A new page opens the same database: SQLite rolls the hot journal back.
      const again = await ctx.newPage()
      const resumed = []
      await again.exposeFunction('reportStep', (name) => resumed.push(name))
      await again.goto(`${base}/__test__/browser/opfs-page.html?db=crash.db&dir=crash&mb=${MB}&stale=60000`)
      expect(await again.evaluate(() => window.ready)).toBe('ok')
      const out = await again.evaluate(async () => {
        const d = window.durably
        const integrity = await d._call('integrityCheck')
        const [run] = await d.getRuns({ jobName: 'big-commit' })
        const done = await d.waitForRun(run.id, { timeout: 60_000 })
        const steps = await d.getSteps(run.id)
        return {
          integrity,
          output: done.output,
          steps: steps.map((s) => [s.name, s.status, typeof s.output === 'string' ? s.output.length : s.output]),
          integrityAfter: await d._call('integrityCheck'),
        }
      })
      expect(out.integrity).toBe('ok')
      expect(resumed).toEqual(['big', 'after']) // step 'small' was committed before the crash: not executed again
      expect(out.steps).toEqual([
        ['small', 'completed', 4],
        ['big', 'completed', MB * 1024 * 1024],
        ['after', 'completed', MB * 1024 * 1024],
      ])
      expect(out.output).toEqual({ small: 'kept', after: MB * 1024 * 1024 })
      expect(out.integrityAfter).toBe('ok')
      await again.close()
      expect((await poolFiles(ctx, 'crash')).map((f) => f.name)).toEqual(['crash.db']) // the journal is gone
    } finally {
      await ctx.close()
    }
  }, 240_000)

  it('refuses to start outside a secure context, with a clear error', async () => {
    // The same server under a name that is not localhost: plain http there is not a secure context.
    const { chromium } = require('playwright-core')
    const insecure = await chromium.launch({
      executablePath: chromiumPath(),
      headless: true,
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run',
        '--host-resolver-rules=MAP durably.invalid 127.0.0.1',
      ],
    })
    try {
      const page = await insecure.newPage()
      await page.goto(`http://durably.invalid:${server.address().port}/__test__/browser/opfs-page.html?db=insecure.db`)
      const out = await page.waitForFunction(() => window.insecureError ?? null, null, { timeout: 20_000 }).then((h) => h.jsonValue())
      expect(out.isSecureContext).toBe(false)
      expect(out.code).toBe('INSECURE_CONTEXT')
      expect(out.message).toContain('needs a secure context')
    } finally {
      await insecure.close()
    }
  }, 60_000)

  it('examples/browser: the progress bar survives a reload and the run completes', async () => {
    const page = await context.newPage()
    page.on('pageerror', (err) => errors.push(`example: ${err.message}`))
    const url = `${base}/examples/browser/index.html?stepMs=150`
    await page.goto(url)
    await page.locator('#start:not([disabled])').click()
    await page.waitForFunction(() => document.getElementById('bar').value >= 3, null, { timeout: 20_000 })
    await page.reload()
    // The new page finds the unfinished run and shows its progress from where it is.
    const first = await page.waitForFunction(() => document.getElementById('bar').value || null, null, { timeout: 20_000 })
    expect(await first.jsonValue()).toBeGreaterThanOrEqual(3)
    await page.waitForFunction(() => document.getElementById('status').textContent.startsWith('completed'), null, { timeout: 30_000 })
    expect(await page.locator('#status').textContent()).toBe('completed: 10 photos')
    expect(await page.locator('#bar').evaluate((b) => b.value)).toBe(10)
    await page.waitForFunction(() => document.getElementById('steps').textContent !== '', null, { timeout: 10_000 })
    expect(await page.locator('#steps').textContent()).toBe('10 steps stored')
    await page.close()
  }, 60_000)

  it('no uncaught errors in the pages', () => {
    expect(errors).toEqual([])
  })
})

describe('the shared job module in Node', () => {
  it('is imported unchanged and runs on the native engine', async () => {
    const { threeSteps, flaky } = await import('./fixtures/shared-jobs.mjs')
    const { createDurably } = require('..')
    const { tempDb } = require('./helpers.js')
    const executed = []
    globalThis.durablyTestHooks = { step: (name) => executed.push(name), shouldFail: () => false }
    const durably = createDurably({ path: tempDb(), jobs: { threeSteps, flaky }, pollingInterval: 50 })
    try {
      await durably.init()
      const r = await durably.jobs.threeSteps.triggerAndWait({ n: 4 }, { timeout: 10_000 })
      expect(r.output.a).toBe(5)
      expect(r.output.c.sum).toBe(13)
      expect(r.output.c.at).toBeInstanceOf(Date)
      expect(executed).toEqual(['one', 'two', 'three'])
      const f = await durably.jobs.flaky.triggerAndWait({}, { timeout: 10_000 })
      expect(f.output).toBe('kept+fixed')
    } finally {
      delete globalThis.durablyTestHooks
      await durably.close()
    }
  })
})
