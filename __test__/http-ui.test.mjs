// The handler's dashboard side without a browser: the `ui` option, the
// static files and their headers, read-only refusals, and the routes the
// page uses (/logs, /jobs, /stats) including auth scoping.

import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import fs from 'node:fs'
import path from 'node:path'
import durablyPkg from '../index.js'
import helpers from './helpers.js'
import httpHelpers from './http-helpers.js'

const { defineJob, withLogPersistence, createDurablyHandler, createDurably } = durablyPkg
const { makeDurably, closeAll, ROOT } = helpers
const { startServer, call } = httpHelpers

const jobs = {
  work: defineJob({
    name: 'work',
    run: async (ctx, input) => {
      ctx.log.info('begin', { n: input.n })
      await ctx.run('step-a', () => {
        ctx.log.warn('inside a')
        return 1
      })
      if (input.fail) throw new Error('failed on purpose')
      return { n: input.n }
    },
  }),
}

let d
const servers = []
const serve = async (options) => {
  const s = await startServer(d, options)
  servers.push(s)
  return s
}
let done
let failed

beforeAll(async () => {
  d = makeDurably({ jobs })
  d.use(withLogPersistence())
  await d.init()
  done = (await d.jobs.work.triggerAndWait({ n: 1 }, { labels: { tenant: 't1' } })).id
  const f = await d.jobs.work.trigger({ n: 2, fail: true }, { labels: { tenant: 't2' } })
  await d.waitForRun(f.id).catch(() => {})
  failed = f.id
  // A job this instance does not register, written by another instance on the store.
  const other = createDurably({ ...helpers.sameStore(d), jobs: { x: defineJob({ name: 'elsewhere', run: async () => 1 }) } })
  await other.jobs.x.trigger(null, { labels: { tenant: 't1' } })
  await other.close()
})

afterAll(async () => {
  await Promise.all(servers.map((s) => s.close()))
  await closeAll()
})

describe('ui option and files', () => {
  it('is off by default and checks its options', async () => {
    const s = await serve({})
    expect((await call(s.url('/ui'))).status).toBe(404)
    expect(() => createDurablyHandler(d, { ui: 'yes' })).toThrow(/ui must be true or/)
    expect(() => createDurablyHandler(d, { ui: { readonly: true } })).toThrow(/unknown ui option readonly/)
    expect(() => createDurablyHandler(d, { ui: { title: 5 } })).toThrow(/ui.title/)
    expect(() => createDurablyHandler(d, { ui: { readOnly: 'no' } })).toThrow(/ui.readOnly/)
  })

  it('serves the page with a CSP, escaped server values and no inline code', async () => {
    const s = await serve({ ui: { title: '<script>alert(1)</script> & co' } })
    const page = await call(s.url('/ui'))
    expect(page.status).toBe(200)
    expect(page.headers.get('content-type')).toBe('text/html; charset=utf-8')
    const csp = page.headers.get('content-security-policy')
    for (const d of ["default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"]) {
      expect(csp).toContain(d)
    }
    expect(page.headers.get('x-content-type-options')).toBe('nosniff')
    const html = page.body
    expect(html).toContain('<title>&lt;script&gt;alert(1)&lt;/script&gt; &amp; co</title>')
    expect(html).not.toContain('<script>alert')
    expect(html).toContain('<script type="module" src="/api/durably/ui/app.js"></script>')
    expect(html).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/) // every script is a file
    expect(html).not.toMatch(/\sstyle=|\son[a-z]+=/i)
    const meta = /<meta name="durably-config" content="([^"]*)">/.exec(html)[1]
    const config = JSON.parse(meta.replaceAll('&quot;', '"').replaceAll('&lt;', '<').replaceAll('&gt;', '>').replaceAll('&amp;', '&'))
    expect(config).toEqual({ base: '/api/durably', title: '<script>alert(1)</script> & co', readOnly: false })

    const js = await call(s.url('/ui/app.js'))
    expect(js.headers.get('content-type')).toBe('text/javascript; charset=utf-8')
    expect(js.headers.get('content-security-policy')).toBe(csp)
    expect((await call(s.url('/ui/app.css'))).headers.get('content-type')).toBe('text/css; charset=utf-8')
    expect((await call(s.url('/ui/secret.txt'))).status).toBe(404)
    expect((await call(s.url('/ui/../package.json'))).status).toBe(404)
    expect((await call(s.url('/ui'), { method: 'POST' })).status).toBe(405)
  })

  it('ships small, dependency-free files: under 60 KB, no innerHTML with data', () => {
    const dir = path.join(ROOT, 'lib', 'ui')
    const size = ['index.html', 'app.css', 'app.js'].reduce((n, f) => n + fs.statSync(path.join(dir, f)).size, 0)
    expect(size).toBeLessThanOrEqual(60 * 1024)
    const js = fs.readFileSync(path.join(dir, 'app.js'), 'utf8')
    expect(js).not.toMatch(/innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function/)
    expect(js).not.toMatch(/^\s*import\s/m) // no module to fetch from elsewhere
  })
})

describe('read-only', () => {
  it('refuses every mutating route with 403 and still serves reads', async () => {
    const s = await serve({ ui: { readOnly: true } })
    const refused = [
      ['POST', '/trigger', { jobName: 'work', input: { n: 9 } }],
      ['POST', `/retry?runId=${failed}`],
      ['POST', `/retrigger?runId=${done}`],
      ['POST', `/cancel?runId=${done}`],
      ['DELETE', `/run?runId=${done}`],
    ]
    for (const [method, p, body] of refused) {
      const r = await call(s.url(p), { method, body })
      expect(r.status, `${method} ${p}`).toBe(403)
      expect(r.body.error).toContain('read-only')
    }
    expect((await d.getRun(failed)).status).toBe('failed')
    expect(await d.getRun(done)).not.toBeNull()
    expect((await d.getRuns({ jobName: 'work' })).length).toBe(2)
    expect((await call(s.url(`/run?runId=${done}`))).status).toBe(200)
    expect((await call(s.url('/stats'))).status).toBe(200)
    expect((await call(s.url('/ui'))).body).toContain('&quot;readOnly&quot;:true')
  })

  it('may be decided per request from the auth context', async () => {
    const s = await serve({
      auth: { authenticate: (req) => ({ role: req.headers.get('x-role') }) },
      ui: { readOnly: (ctx) => ctx.role !== 'admin' },
    })
    expect((await call(s.url(`/retrigger?runId=${done}`), { method: 'POST', headers: { 'x-role': 'viewer' } })).status).toBe(403)
    const ok = await call(s.url(`/retrigger?runId=${done}`), { method: 'POST', headers: { 'x-role': 'admin' } })
    expect(ok.status).toBe(200)
    await d.waitForRun(ok.body.runId)
    await d.deleteRun(ok.body.runId)
  })
})

describe('routes for the dashboard', () => {
  it('GET /logs: a run’s persisted logs; 400, 404 and onRunAccess like other run routes', async () => {
    const seen = []
    const s = await serve({
      auth: {
        authenticate: () => ({}),
        onRunAccess: (ctx, run, { operation }) => {
          seen.push(operation)
          return run.id !== failed
        },
      },
    })
    const r = await call(s.url(`/logs?runId=${done}`))
    expect(r.status).toBe(200)
    expect(r.body.map((l) => [l.stepName, l.level, l.message])).toEqual([
      [null, 'info', 'begin'],
      ['step-a', 'warn', 'inside a'],
    ])
    expect(r.body[0]).toMatchObject({ runId: done, data: { n: 1 } })
    expect(seen).toEqual(['logs'])
    expect((await call(s.url(`/logs?runId=${failed}`))).status).toBe(404)
    expect((await call(s.url('/logs?runId=nope'))).status).toBe(404)
    expect((await call(s.url('/logs'))).status).toBe(400)
  })

  it('GET /stats and GET /jobs, also those of jobs another process runs', async () => {
    const s = await serve({})
    const stats = (await call(s.url('/stats'))).body
    expect(stats).toEqual({
      total: 3,
      byStatus: { pending: 1, running: 0, completed: 1, failed: 1, cancelled: 0 },
      byJob: {
        elsewhere: { total: 1, pending: 1, running: 0, completed: 0, failed: 0, cancelled: 0 },
        work: { total: 2, pending: 0, running: 0, completed: 1, failed: 1, cancelled: 0 },
      },
    })
    expect(await d.getStats()).toEqual(stats)
    expect((await call(s.url('/jobs'))).body).toEqual([
      { name: 'elsewhere', registered: false },
      { name: 'work', registered: true },
    ])
  })

  it('scoped callers only count the runs they may see', async () => {
    const s = await serve({
      auth: { authenticate: () => ({ tenant: 't1' }), scopeRuns: (ctx, f) => ({ ...f, labels: { tenant: ctx.tenant } }) },
    })
    const stats = (await call(s.url('/stats'))).body
    expect(stats.total).toBe(2)
    expect(stats.byStatus).toEqual({ pending: 1, running: 0, completed: 1, failed: 0, cancelled: 0 })
    expect(Object.keys(stats.byJob)).toEqual(['elsewhere', 'work'])
    expect(stats.byJob.work.failed).toBe(0)
  })
})
