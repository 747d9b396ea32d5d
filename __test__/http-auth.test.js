// HTTP handler auth hooks: two tenants scoped by labels.tenant. Tenant A can
// neither see nor touch tenant B's runs through any route, SSE included.

import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import durablyPkg from '../index.js'
import helpers from './helpers.js'
import httpHelpers from './http-helpers.js'

const { defineJob, createDurablyHandler } = durablyPkg
const { makeDurably, closeAll, until, sleep } = helpers
const { startServer, call, openSse, gate } = httpHelpers

const gates = new Map()
const jobs = {
  work: defineJob({
    name: 'work',
    run: async (ctx, input) => {
      await ctx.run('step', () => (input && input.hold ? gates.get(input.hold).promise : 1))
      if (input && input.fail) throw new Error('failed on purpose')
      return { ok: true }
    },
  }),
}

const TENANTS = new Set(['A', 'B'])
const calls = []

/** The hooks an application scoping runs by a `tenant` label would write. */
const tenantAuth = {
  authenticate(request) {
    const tenant = request.headers.get('x-tenant')
    if (!TENANTS.has(tenant)) throw new Response('who are you?', { status: 401, headers: { 'x-auth': 'no' } })
    return { tenant }
  },
  onTrigger(ctx, req) {
    calls.push(['onTrigger', ctx.tenant, req.jobName])
    if (req.labels && req.labels.tenant !== undefined && req.labels.tenant !== ctx.tenant) {
      throw new Response(JSON.stringify({ error: 'not your tenant' }), { status: 403 })
    }
    return { ...req, labels: { ...req.labels, tenant: ctx.tenant } }
  },
  onRunAccess(ctx, run, { operation }) {
    calls.push(['onRunAccess', ctx.tenant, operation, run.id])
    if (run.labels.tenant !== ctx.tenant) throw new Response(null, { status: 403 })
  },
  scopeRuns(ctx, filter) {
    return { ...filter, labels: { ...filter.labels, tenant: ctx.tenant } }
  },
}

let durably
let srv
let scopeOnly
const as = (tenant) => ({ 'x-tenant': tenant })

beforeAll(async () => {
  durably = makeDurably({ jobs, maxConcurrentRuns: 4 })
  await durably.init()
  srv = await startServer(durably, { auth: tenantAuth })
  // Only scopeRuns: single-run routes are scoped by it too.
  scopeOnly = await startServer(durably, { auth: { authenticate: tenantAuth.authenticate, scopeRuns: tenantAuth.scopeRuns } })
})

afterAll(async () => {
  for (const g of gates.values()) g.open()
  await srv?.close()
  await scopeOnly?.close()
  await closeAll()
})

const triggerAs = (server, tenant, body) => call(server.url('/trigger'), { method: 'POST', body, headers: as(tenant) })

describe('authenticate', () => {
  it('a thrown Response is returned as is, on every route', async () => {
    for (const [method, path] of [
      ['GET', '/runs'],
      ['GET', '/run?runId=x'],
      ['POST', '/trigger'],
      ['GET', '/subscribe?runId=x'],
      ['GET', '/runs/subscribe'],
      ['GET', '/no-such-route'],
    ]) {
      const r = await call(srv.url(path), { method, headers: as('C') })
      expect(r.status).toBe(401)
      expect(r.body).toBe('who are you?')
      expect(r.headers.get('x-auth')).toBe('no')
    }
  })

  it('onRequest runs after authenticate with the context, and may answer itself', async () => {
    const seen = []
    const handler = createDurablyHandler(durably, {
      auth: { authenticate: () => ({ user: 'u' }) },
      onRequest: (request, ctx) => {
        seen.push(ctx)
        if (new URL(request.url).searchParams.has('maintenance')) return new Response('later', { status: 503 })
      },
    })
    expect((await handler.handle(new Request('http://x/runs?limit=1'), '')).status).toBe(200)
    expect((await handler.handle(new Request('http://x/runs?maintenance'), '')).status).toBe(503)
    expect(seen).toEqual([{ user: 'u' }, { user: 'u' }])
  })

  it('hook errors: a status-carrying error keeps its status, anything else is a 500 reported to onError', async () => {
    const reported = []
    const handler = createDurablyHandler(durably, {
      auth: {
        authenticate: (request) => {
          if (request.headers.get('x-kind') === 'status') throw Object.assign(new Error('teapot'), { status: 418 })
          throw new Error('bug in the hook')
        },
      },
      onError: (err) => reported.push(err.message),
    })
    const a = await handler.handle(new Request('http://x/runs', { headers: { 'x-kind': 'status' } }), '')
    expect(a.status).toBe(418)
    const b = await handler.handle(new Request('http://x/runs'), '')
    expect(b.status).toBe(500)
    expect(await b.json()).toEqual({ error: 'internal error' })
    expect(reported).toEqual(['bug in the hook'])
  })
})

describe('two tenants', () => {
  const b = {}
  const a = {}
  beforeAll(async () => {
    gates.set('b-active', gate())
    b.done = (await triggerAs(srv, 'B', { jobName: 'work', input: {}, idempotencyKey: 'shared-key' })).body.runId
    b.failed = (await triggerAs(srv, 'B', { jobName: 'work', input: { fail: true } })).body.runId
    b.active = (await triggerAs(srv, 'B', { jobName: 'work', input: { hold: 'b-active' } })).body.runId
    a.done = (await triggerAs(srv, 'A', { jobName: 'work', input: {} })).body.runId
    a.failed = (await triggerAs(srv, 'A', { jobName: 'work', input: { fail: true } })).body.runId
    await durably.waitForRun(b.done, { timeout: 10_000 })
    await durably.waitForRun(a.done, { timeout: 10_000 })
    await until(async () => (await durably.getRun(b.failed)).status === 'failed')
    await until(async () => (await durably.getRun(a.failed)).status === 'failed')
    await until(async () => (await durably.getRun(b.active)).status === 'running')
  })

  it('onTrigger stamps the tenant label; a foreign tenant label is refused with the hook Response', async () => {
    expect((await durably.getRun(b.done)).labels).toEqual({ tenant: 'B' })
    expect((await durably.getRun(a.done)).labels).toEqual({ tenant: 'A' })
    const r = await triggerAs(srv, 'A', { jobName: 'work', input: {}, labels: { tenant: 'B' } })
    expect(r.status).toBe(403)
    expect(r.body).toEqual({ error: 'not your tenant' })
    expect(calls).toContainEqual(['onTrigger', 'A', 'work'])
  })

  it('GET /runs lists only the caller tenant, even when it asks for the other', async () => {
    for (const q of ['', '?label.tenant=B', '?status=failed', '?jobName=work&limit=50']) {
      const r = await call(srv.url(`/runs${q}`), { headers: as('A') })
      expect(r.status).toBe(200)
      expect(r.body.length).toBeGreaterThanOrEqual(q === '?label.tenant=B' ? 0 : 1)
      for (const run of r.body) expect(run.labels.tenant).toBe('A')
    }
    const ids = (await call(srv.url('/runs'), { headers: as('A') })).body.map((r) => r.id)
    expect(ids).toEqual(expect.arrayContaining([a.done, a.failed]))
    expect(ids).not.toEqual(expect.arrayContaining([b.done]))
  })

  it.each([
    ['GET', '/run'],
    ['GET', '/steps'],
    ['POST', '/cancel'],
    ['POST', '/retry'],
    ['POST', '/retrigger'],
    ['DELETE', '/run'],
  ])("%s %s on the other tenant's runs is refused and changes nothing", async (method, path) => {
    const before = await durably.getRuns()
    for (const id of [b.done, b.failed, b.active]) {
      for (const server of [srv, scopeOnly]) {
        const r = await call(server.url(`${path}?runId=${id}`), { method, headers: as('A') })
        // Out of the caller's scope = "not found" (its existence is not revealed).
        expect(r.status).toBe(404)
        expect(JSON.stringify(r.body ?? '')).not.toContain('failed on purpose')
      }
    }
    await sleep(50)
    const after = await durably.getRuns()
    expect(after.map((r) => [r.id, r.status])).toEqual(before.map((r) => [r.id, r.status]))
    // The owner still can.
    const own = await call(srv.url(`/run?runId=${b.done}`), { headers: as('B') })
    expect(own.status).toBe(200)
  })

  it('onRunAccess is asked with the operation (403 from its Response when the scope lets a run through)', async () => {
    const ops = []
    const server = await startServer(durably, {
      auth: {
        authenticate: tenantAuth.authenticate,
        onRunAccess(ctx, run, { operation }) {
          ops.push(operation)
          if (run.labels.tenant !== ctx.tenant) throw new Response(null, { status: 403 })
        },
      },
    })
    try {
      for (const [method, path] of [
        ['GET', '/run'],
        ['GET', '/steps'],
        ['GET', '/subscribe'],
        ['POST', '/cancel'],
        ['POST', '/retry'],
        ['POST', '/retrigger'],
        ['DELETE', '/run'],
      ]) {
        const r = await call(server.url(`${path}?runId=${b.failed}`), { method, headers: as('A') })
        expect(r.status).toBe(403)
      }
      expect(ops).toEqual(['read', 'steps', 'subscribe', 'cancel', 'retry', 'retrigger', 'delete'])
      expect((await durably.getRun(b.failed)).status).toBe('failed')
    } finally {
      await server.close()
    }
  })

  it('onRunAccess returning false answers 404, like a run out of scope', async () => {
    const handler = createDurablyHandler(durably, {
      auth: { authenticate: () => ({}), onRunAccess: (ctx, run) => run.id !== b.done && undefined },
    })
    const res = await handler.handle(new Request(`http://x/run?runId=${b.done}`), '')
    expect(res.status).toBe(404)
    expect(await res.json()).toEqual({ error: 'Run not found' })
    const ok = await handler.handle(new Request(`http://x/run?runId=${a.done}`), '')
    expect(ok.status).toBe(200)
  })

  it("GET /subscribe to the other tenant's run is refused; own run streams", async () => {
    for (const server of [srv, scopeOnly]) {
      const sse = await openSse(server.url(`/subscribe?runId=${b.active}`), { headers: as('A') })
      expect(sse.status).toBe(404)
      expect(sse.events).toEqual([])
    }
    const own = await openSse(srv.url(`/subscribe?runId=${a.done}`), { headers: as('A') })
    await own.ended
    expect(own.events).toMatchObject([{ type: 'run:snapshot', run: { id: a.done } }])
  })

  it('GET /runs/subscribe only streams the caller tenant events', async () => {
    const sseA = await openSse(srv.url('/runs/subscribe'), { headers: as('A') })
    const sseSpy = await openSse(srv.url('/runs/subscribe?label.tenant=B'), { headers: as('A') })
    const sseB = await openSse(scopeOnly.url('/runs/subscribe'), { headers: as('B') })
    const idB = (await triggerAs(srv, 'B', { jobName: 'work', input: {} })).body.runId
    const idA = (await triggerAs(srv, 'A', { jobName: 'work', input: {} })).body.runId
    await sseA.next((e) => e.type === 'run:complete' && e.runId === idA)
    await sseB.next((e) => e.type === 'run:complete' && e.runId === idB)
    // B's cancel/delete of its own run must not reach A either.
    gates.get('b-active').open()
    await durably.waitForRun(b.active, { timeout: 10_000 })
    await call(srv.url(`/run?runId=${b.active}`), { method: 'DELETE', headers: as('B') })
    await sseB.next((e) => e.type === 'run:delete' && e.runId === b.active)
    await sleep(100)
    expect(sseA.events.length).toBeGreaterThan(0)
    for (const e of sseA.events) expect(e.labels.tenant).toBe('A')
    for (const e of sseB.events) expect(e.labels.tenant).toBe('B')
    // Asking for label.tenant=B is overridden by the scope: still only A's events.
    for (const e of sseSpy.events) expect(e.labels.tenant).toBe('A')
    expect(sseSpy.events.some((e) => e.runId === idB || e.runId === b.active)).toBe(false)
    await Promise.all([sseA.close(), sseB.close(), sseSpy.close()])
  })

  it("an idempotency key of the other tenant's run does not leak that run", async () => {
    const r = await triggerAs(srv, 'A', { jobName: 'work', input: {}, idempotencyKey: 'shared-key' })
    expect(r.status).toBe(409)
    expect(JSON.stringify(r.body)).not.toContain(b.done)
    const own = await triggerAs(srv, 'B', { jobName: 'work', input: {}, idempotencyKey: 'shared-key' })
    expect(own.body).toEqual({ runId: b.done, disposition: 'idempotent' })
  })

  it("tenant B's runs are all still there, untouched by A", async () => {
    expect((await durably.getRun(b.done)).status).toBe('completed')
    expect((await durably.getRun(b.failed)).status).toBe('failed')
    const runsB = (await call(srv.url('/runs'), { headers: as('B') })).body
    expect(runsB.every((r) => r.labels.tenant === 'B')).toBe(true)
    expect(runsB.map((r) => r.id)).toEqual(expect.arrayContaining([b.done, b.failed]))
  })
})
