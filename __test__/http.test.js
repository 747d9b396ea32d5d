// HTTP handler: every route over a real node:http server, success and error
// cases, SSE streams (late subscribers, filters, throttling) and listener leaks.

import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import http from 'node:http'
import { z } from 'zod'
import durablyPkg from '../index.js'
import sse from '../lib/http-sse.js'
import helpers from './helpers.js'
import httpHelpers from './http-helpers.js'

const { defineJob, createDurablyHandler, toNodeHandler } = durablyPkg
const { ProgressThrottle, SseChannel } = sse
const { makeDurably, closeAll, until, sleep } = helpers
const { startServer, call, openSse, gate } = httpHelpers

const gates = new Map()
const hold = (key) => {
  const g = gate()
  gates.set(key, g)
  return g
}

const jobs = {
  echo: defineJob({ name: 'echo', run: async (ctx, input) => input }),
  typed: defineJob({
    name: 'typed',
    input: z.object({ n: z.number() }),
    run: async (ctx, input) => ({ twice: input.n * 2, big: 10n, when: new Date(0), tags: new Set(['a']) }),
  }),
  gated: defineJob({
    name: 'gated',
    run: async (ctx, input) => {
      await ctx.run('first', () => 1)
      ctx.progress(1, 2, 'half')
      await ctx.run('wait', () => gates.get(input.key).promise)
      ctx.log.info('released', { key: input.key })
      if (input.fail) throw new Error('asked to fail')
      return { key: input.key }
    },
  }),
  failing: defineJob({
    name: 'failing',
    run: async (ctx) => {
      await ctx.run('boom', () => {
        throw new Error('boom')
      })
    },
  }),
  progress: defineJob({
    name: 'progress',
    run: async (ctx, input) => {
      for (let i = 1; i <= input.n; i++) {
        ctx.progress(i, input.n)
        await sleep(input.every)
      }
      return { done: input.n }
    },
  }),
}

let durably
let srv

beforeAll(async () => {
  durably = makeDurably({ jobs, maxConcurrentRuns: 4 })
  await durably.init()
  srv = await startServer(durably, { sseThrottleMs: 100 })
})

afterAll(async () => {
  for (const g of gates.values()) g.open()
  if (srv) await srv.close()
  await closeAll()
})

const trigger = (body) => call(srv.url('/trigger'), { method: 'POST', body })
const runOf = (id) => call(srv.url(`/run?runId=${encodeURIComponent(id)}`))
const waitStatus = (id, status) =>
  until(async () => (await durably.getRun(id)).status === status, { what: `run ${id} ${status}` })

describe('POST /trigger', () => {
  it('creates a run and reports its disposition', async () => {
    const r = await trigger({ jobName: 'echo', input: { a: 1 }, labels: { team: 'x' } })
    expect(r.status).toBe(200)
    expect(r.body).toEqual({ runId: expect.any(String), disposition: 'created' })
    const run = await durably.waitForRun(r.body.runId, { timeout: 10_000 })
    expect(run.output).toEqual({ a: 1 })
    expect(run.labels).toEqual({ team: 'x' })
  })

  it('honours idempotency keys and coalescing', async () => {
    const a = await trigger({ jobName: 'echo', input: 1, idempotencyKey: 'idem-1' })
    const b = await trigger({ jobName: 'echo', input: 2, idempotencyKey: 'idem-1' })
    expect(b.body).toEqual({ runId: a.body.runId, disposition: 'idempotent' })

    const g = hold('coal-block')
    const blocker = await trigger({ jobName: 'gated', input: { key: 'coal-block' }, concurrencyKey: 'ck' })
    await waitStatus(blocker.body.runId, 'running')
    const p1 = await trigger({ jobName: 'echo', input: 1, concurrencyKey: 'ck', coalesce: 'skip' })
    const p2 = await trigger({ jobName: 'echo', input: 2, concurrencyKey: 'ck', coalesce: 'skip' })
    expect(p1.body.disposition).toBe('created')
    expect(p2.body).toEqual({ runId: p1.body.runId, disposition: 'coalesced' })
    g.open()
    await durably.waitForRun(p1.body.runId, { timeout: 10_000 })
  })

  it('accepts null for optional fields', async () => {
    const r = await trigger({ jobName: 'echo', input: null, idempotencyKey: null, labels: null, coalesce: null })
    expect(r.status).toBe(200)
  })

  it.each([
    ['malformed JSON', '{"jobName": "echo",', 400],
    ['empty body', '', 400],
    ['an array body', '[1,2]', 400],
    ['a string body', '"echo"', 400],
    ['missing jobName', { input: 1 }, 400],
    ['empty jobName', { jobName: '' }, 400],
    ['numeric jobName', { jobName: 7 }, 400],
    ['unknown job', { jobName: 'nope' }, 400],
    ['invalid input', { jobName: 'typed', input: { n: 'x' } }, 400],
    ['unknown field', { jobName: 'echo', input: 1, priority: 3 }, 400],
    ['non-string label', { jobName: 'echo', labels: { a: 1 } }, 400],
    ['labels array', { jobName: 'echo', labels: ['a'] }, 400],
    ['numeric idempotencyKey', { jobName: 'echo', idempotencyKey: 5 }, 400],
    ['bad coalesce', { jobName: 'echo', concurrencyKey: 'k', coalesce: 'merge' }, 400],
    ['coalesce without concurrencyKey', { jobName: 'echo', coalesce: 'skip' }, 400],
    ['too deep', `{"jobName":"echo","input":${'['.repeat(1000)}${']'.repeat(1000)}}`, 400],
    ['invalid UTF-8', Buffer.from([0x7b, 0xff, 0xfe, 0x7d]), 400],
  ])('%s → %i with a JSON message', async (_, body, status) => {
    const res = await fetch(srv.url('/trigger'), {
      method: 'POST',
      body: typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body),
    })
    expect(res.status).toBe(status)
    expect(res.headers.get('content-type')).toBe('application/json; charset=utf-8') // as documented in README (Routes)
    const err = await res.json()
    expect(err.error).toEqual(expect.any(String))
  })

  it('refuses a body over the size limit with 413', async () => {
    const r = await trigger({ jobName: 'echo', input: 'x'.repeat(1.2 * 1024 * 1024) })
    expect(r.status).toBe(413)
    expect(r.body.error).toMatch(/larger/)
  })

  it('only allows POST (405 with Allow)', async () => {
    const r = await call(srv.url('/trigger'))
    expect(r.status).toBe(405)
    expect(r.headers.get('allow')).toBe('POST')
  })
})

describe('GET /runs, /run, /steps', () => {
  let done
  let failed
  beforeAll(async () => {
    done = (await trigger({ jobName: 'typed', input: { n: 21 }, labels: { list: 'yes', kind: 'a' } })).body.runId
    failed = (await trigger({ jobName: 'failing', input: null, labels: { list: 'yes', kind: 'b' } })).body.runId
    await durably.waitForRun(done, { timeout: 10_000 })
    await waitStatus(failed, 'failed')
  })

  it('lists runs in the client shape, newest first', async () => {
    const r = await call(srv.url('/runs?label.list=yes'))
    expect(r.status).toBe(200)
    expect(r.body.map((x) => x.id)).toEqual([failed, done])
    const run = r.body[1]
    expect(run).toMatchObject({
      id: done,
      jobName: 'typed',
      status: 'completed',
      input: { n: 21 },
      output: { twice: 42, big: '10', when: '1970-01-01T00:00:00.000Z', tags: ['a'] },
      labels: { list: 'yes', kind: 'a' },
      completedStepCount: 0,
      isTerminal: true,
      isActive: false,
    })
    for (const hidden of ['idempotencyKey', 'concurrencyKey', 'errorStack', 'leaseOwner', 'leaseGeneration']) {
      expect(run).not.toHaveProperty(hidden)
    }
    expect(r.body[0].error).toMatch(/boom/)
    expect(r.body[0]).not.toHaveProperty('errorStack')
  })

  it('filters by jobName (repeatable), status (repeatable or comma list), labels, limit and offset', async () => {
    const ids = async (q) => (await call(srv.url(`/runs?label.list=yes&${q}`))).body.map((x) => x.id)
    expect(await ids('jobName=typed')).toEqual([done])
    expect(await ids('jobName=typed&jobName=failing')).toEqual([failed, done])
    expect(await ids('status=failed')).toEqual([failed])
    expect(await ids('status=failed&status=completed')).toEqual([failed, done])
    expect(await ids('status=completed,failed')).toEqual([failed, done])
    expect(await ids('label.kind=a')).toEqual([done])
    expect(await ids('label.kind=zzz')).toEqual([])
    expect(await ids('limit=1')).toEqual([failed])
    expect(await ids('limit=1&offset=1')).toEqual([done])
    expect(await ids('unrelated=1&_=123')).toEqual([failed, done])
  })

  it.each([
    'status=bogus',
    'status=',
    'status=running,',
    'limit=-1',
    'limit=abc',
    'limit=1.5',
    'limit=99999999999999999999',
    'limit=1001',
    'offset=1e3',
    'limit=1&limit=2',
    'label.=x',
    'label.a=1&label.a=2',
    'jobName=',
  ])('GET /runs?%s → 400', async (q) => {
    const r = await call(srv.url(`/runs?${q}`))
    expect(r.status).toBe(400)
    expect(r.body.error).toEqual(expect.any(String))
  })

  it('GET /run returns one run; 400 without runId; 404 for an unknown one', async () => {
    const r = await runOf(done)
    expect(r.status).toBe(200)
    expect(r.body).toMatchObject({ id: done, status: 'completed', isTerminal: true, isActive: false })
    expect((await call(srv.url('/run'))).status).toBe(400)
    expect((await call(srv.url('/run?runId='))).status).toBe(400)
    expect((await call(srv.url(`/run?runId=${done}&runId=${done}`))).status).toBe(400)
    expect((await call(srv.url(`/run?runId=${'x'.repeat(500)}`))).status).toBe(400)
    const missing = await runOf('01ZZZZZZZZZZZZZZZZZZZZZZZZ')
    expect(missing.status).toBe(404)
    expect(missing.body).toEqual({ error: 'Run not found' })
  })

  it('GET /steps returns the steps in order; 404 for an unknown run', async () => {
    const g = hold('steps')
    const id = (await trigger({ jobName: 'gated', input: { key: 'steps' } })).body.runId
    g.open()
    await durably.waitForRun(id, { timeout: 10_000 })
    const r = await call(srv.url(`/steps?runId=${id}`))
    expect(r.status).toBe(200)
    expect(r.body.map((s) => [s.name, s.index, s.status])).toEqual([
      ['first', 0, 'completed'],
      ['wait', 1, 'completed'],
    ])
    expect(r.body[0]).toEqual({
      id: expect.any(String),
      runId: id,
      name: 'first',
      index: 0,
      status: 'completed',
      output: 1,
      error: null,
      startedAt: expect.any(String),
      completedAt: expect.any(String),
    })
    const f = await call(srv.url(`/steps?runId=${failed}`))
    expect(f.body[0]).toMatchObject({ name: 'boom', status: 'failed', error: expect.stringMatching(/boom/) })
    expect(f.body[0]).not.toHaveProperty('errorStack')
    expect((await call(srv.url('/steps?runId=01ZZZZZZZZZZZZZZZZZZZZZZZZ'))).status).toBe(404)
    expect((await call(srv.url('/steps'))).status).toBe(400)
  })
})

describe('run actions', () => {
  const post = (action, id) => call(srv.url(`/${action}?runId=${id}`), { method: 'POST' })

  it('POST /retry puts a failed run back as the same run; 409 for a completed one', async () => {
    const g = hold('retry')
    const id = (await trigger({ jobName: 'gated', input: { key: 'retry', fail: true } })).body.runId
    g.open()
    await waitStatus(id, 'failed')
    const r = await post('retry', id)
    expect(r).toMatchObject({ status: 200, body: { success: true, runId: id } })
    await waitStatus(id, 'failed')
    const c = (await trigger({ jobName: 'echo', input: 1 })).body.runId
    await durably.waitForRun(c, { timeout: 10_000 })
    const conflict = await post('retry', c)
    expect(conflict.status).toBe(409)
    expect(conflict.body.error).toEqual(expect.any(String))
    expect((await post('retry', '01ZZZZZZZZZZZZZZZZZZZZZZZZ')).status).toBe(404)
    expect((await call(srv.url('/retry'), { method: 'POST' })).status).toBe(400)
    expect((await call(srv.url(`/retry?runId=${id}`))).status).toBe(405)
  })

  it('POST /retrigger creates a new run with the same input and labels', async () => {
    const id = (await trigger({ jobName: 'echo', input: { again: true }, labels: { l: 'v' } })).body.runId
    await durably.waitForRun(id, { timeout: 10_000 })
    const r = await post('retrigger', id)
    expect(r.status).toBe(200)
    expect(r.body.success).toBe(true)
    expect(r.body.runId).not.toBe(id)
    const again = await durably.waitForRun(r.body.runId, { timeout: 10_000 })
    expect(again).toMatchObject({ input: { again: true }, labels: { l: 'v' }, output: { again: true } })
    expect((await post('retrigger', '01ZZZZZZZZZZZZZZZZZZZZZZZZ')).status).toBe(404)
  })

  it('POST /cancel cancels an active run; 409 once it is terminal', async () => {
    hold('cancel')
    const id = (await trigger({ jobName: 'gated', input: { key: 'cancel' } })).body.runId
    await waitStatus(id, 'running')
    expect(await post('cancel', id)).toMatchObject({ status: 200, body: { success: true } })
    expect((await runOf(id)).body).toMatchObject({ status: 'cancelled', isTerminal: true })
    expect((await post('cancel', id)).status).toBe(409)
    expect((await post('cancel', '01ZZZZZZZZZZZZZZZZZZZZZZZZ')).status).toBe(404)
    gates.get('cancel').open()
  })

  it('DELETE /run deletes a terminal run; 409 for an active one', async () => {
    const g = hold('delete')
    const id = (await trigger({ jobName: 'gated', input: { key: 'delete' } })).body.runId
    await waitStatus(id, 'running')
    const del = () => call(srv.url(`/run?runId=${id}`), { method: 'DELETE' })
    expect((await del()).status).toBe(409)
    g.open()
    await durably.waitForRun(id, { timeout: 10_000 })
    expect(await del()).toMatchObject({ status: 200, body: { success: true } })
    expect((await runOf(id)).status).toBe(404)
    expect((await del()).status).toBe(404)
  })
})

describe('routing', () => {
  it('unknown routes and paths outside basePath get 404 JSON', async () => {
    for (const p of [srv.url('/nope'), srv.url('/runs/x'), `${srv.origin}/elsewhere`, `${srv.origin}/api/durablyx/runs`]) {
      const r = await call(p)
      expect(r.status).toBe(404)
      expect(r.body.error).toEqual(expect.any(String))
    }
  })

  it('tolerates a trailing slash and a basePath given with one', async () => {
    expect((await call(srv.url('/runs/?limit=1'))).status).toBe(200)
    const handler = createDurablyHandler(durably)
    const res = await handler.handle(new Request('http://x/api/durably/runs?limit=1'), '/api/durably/')
    expect(res.status).toBe(200)
  })

  it('toNodeHandler passes requests outside basePath to next() when given', async () => {
    const node = toNodeHandler(createDurablyHandler(durably), '/api/durably')
    const server = http.createServer((req, res) =>
      node(req, res, () => {
        res.statusCode = 299
        res.end('next')
      }),
    )
    await new Promise((r) => server.listen(0, '127.0.0.1', r))
    const origin = `http://127.0.0.1:${server.address().port}`
    try {
      expect((await fetch(`${origin}/other`)).status).toBe(299)
      expect((await fetch(`${origin}/api/durably/runs?limit=1`)).status).toBe(200)
    } finally {
      server.closeAllConnections()
      await new Promise((r) => server.close(r))
    }
  })

  it('handle() works on a web Request directly and reads Express-parsed bodies', async () => {
    const handler = createDurablyHandler(durably)
    const res = await handler.handle(
      new Request('http://x/trigger', { method: 'POST', body: JSON.stringify({ jobName: 'echo', input: 5 }) }),
      '',
    )
    expect(res.status).toBe(200)
    const node = toNodeHandler(handler, '/d')
    const server = http.createServer((req, res2) => {
      let text = ''
      req.on('data', (c) => (text += c))
      req.on('end', () => {
        req.body = JSON.parse(text) // what express.json() leaves behind
        node(req, res2)
      })
    })
    await new Promise((r) => server.listen(0, '127.0.0.1', r))
    try {
      const r = await call(`http://127.0.0.1:${server.address().port}/d/trigger`, {
        method: 'POST',
        body: { jobName: 'echo', input: 6 },
      })
      expect(r).toMatchObject({ status: 200, body: { disposition: 'created' } })
    } finally {
      server.closeAllConnections()
      await new Promise((r) => server.close(r))
    }
  })

  it('validates its options', () => {
    expect(() => createDurablyHandler(durably, { sseThrottleMs: -1 })).toThrow(/sseThrottleMs/)
    expect(() => createDurablyHandler(durably, { auth: {} })).toThrow(/authenticate/)
    expect(() => createDurablyHandler(durably, { auth: { authenticate() {}, scopeRun() {} } })).toThrow(/scopeRun/)
    expect(() => createDurablyHandler(durably, { bogus: 1 })).toThrow(/bogus/)
    expect(() => createDurablyHandler({})).toThrow(/Durably/)
  })
})

describe('SSE GET /subscribe', () => {
  it('streams the current state, then live events, and ends after the terminal event', async () => {
    const g = hold('live')
    const id = (await trigger({ jobName: 'gated', input: { key: 'live' } })).body.runId
    await until(async () => (await durably.getRun(id)).progress !== null, { what: 'progress' })
    // A late subscriber: the run started before it connected.
    const sse = await openSse(srv.url(`/subscribe?runId=${id}`))
    expect(sse.status).toBe(200)
    expect(sse.headers.get('content-type')).toBe('text/event-stream; charset=utf-8') // as documented in README (Server-sent events)
    expect(sse.headers.get('cache-control')).toMatch(/no-cache/)
    const snap = await sse.next((e) => e.type === 'run:snapshot')
    expect(snap.run).toMatchObject({ id, status: 'running', progress: { current: 1, total: 2, message: 'half' } })
    expect(snap.run).toHaveProperty('isActive', true)
    expect(sse.events[0]).toBe(snap)
    g.open()
    await sse.ended
    expect(sse.error).toBeUndefined()
    const types = sse.events.map((e) => e.type)
    expect(types).toEqual(['run:snapshot', 'step:complete', 'log:write', 'run:complete'])
    expect(sse.events.at(-1)).toMatchObject({ runId: id, jobName: 'gated', output: { key: 'live' } })
    for (const f of sse.frames) expect(f).toMatch(/^id: [0-9a-f]{8}\.\d+\ndata: \{.*\}$/)
  })

  it('a subscriber to a finished run gets its final state and the stream ends', async () => {
    const id = (await trigger({ jobName: 'echo', input: 'fin' })).body.runId
    await durably.waitForRun(id, { timeout: 10_000 })
    const sse = await openSse(srv.url(`/subscribe?runId=${id}`))
    await sse.ended
    expect(sse.events).toHaveLength(1)
    expect(sse.events[0]).toMatchObject({ type: 'run:snapshot', run: { id, status: 'completed', output: 'fin' } })
  })

  it('follows a run from pending to completion', async () => {
    const blocker = hold('blocker')
    const g = hold('pending')
    const b = (await trigger({ jobName: 'gated', input: { key: 'blocker' }, concurrencyKey: 'sse-pk' })).body.runId
    await waitStatus(b, 'running')
    const id = (await trigger({ jobName: 'gated', input: { key: 'pending' }, concurrencyKey: 'sse-pk' })).body.runId
    const sse = await openSse(srv.url(`/subscribe?runId=${id}`))
    const snap = await sse.next((e) => e.type === 'run:snapshot')
    expect(snap.run).toMatchObject({ status: 'pending', isActive: true, isTerminal: false })
    blocker.open()
    await sse.next((e) => e.type === 'step:start' && e.stepName === 'wait')
    g.open()
    await sse.ended
    const types = sse.events.map((e) => e.type)
    expect(types.slice(0, 3)).toEqual(['run:snapshot', 'run:start', 'step:start'])
    expect(types).toContain('run:progress')
    expect(types.at(-1)).toBe('run:complete')
  })

  it('400 without runId, 404 for an unknown run', async () => {
    expect((await call(srv.url('/subscribe'))).status).toBe(400)
    const r = await call(srv.url('/subscribe?runId=01ZZZZZZZZZZZZZZZZZZZZZZZZ'))
    expect(r.status).toBe(404)
    expect(r.body).toEqual({ error: 'Run not found' })
  })

  it('throttles progress per run and always delivers the last one', async () => {
    let coreProgress = 0
    const off = durably.on('run:progress', () => coreProgress++)
    const handler = await startServer(durably, { sseThrottleMs: 300 })
    try {
      const id = (await trigger({ jobName: 'progress', input: { n: 120, every: 8 } })).body.runId
      const sse = await openSse(handler.url(`/subscribe?runId=${id}`))
      await sse.ended
      const progress = sse.events.filter((e) => e.type === 'run:progress')
      expect(coreProgress).toBeGreaterThan(progress.length)
      // At most one per 300 ms over the run's life, plus the first one and the flushed last one
      // (bounded by the measured duration, so a loaded machine does not make it flaky).
      const run = await durably.getRun(id)
      const lifetime = Date.parse(run.completedAt) - Date.parse(run.startedAt)
      expect(progress.length).toBeLessThanOrEqual(Math.floor(lifetime / 300) + 3)
      expect(progress.length).toBeLessThan(coreProgress)
      expect(progress.at(-1).progress).toEqual({ current: 120, total: 120 })
      expect(sse.events.at(-1).type).toBe('run:complete')
    } finally {
      off()
      await handler.close()
    }
  })
})

describe('SSE GET /runs/subscribe', () => {
  it('streams events of matching runs only, in the slim shape', async () => {
    const sse = await openSse(srv.url('/runs/subscribe?jobName=echo&label.feed=on'))
    expect(sse.status).toBe(200)
    await trigger({ jobName: 'echo', input: 'other-label', labels: { feed: 'off' } })
    await trigger({ jobName: 'typed', input: { n: 1 }, labels: { feed: 'on' } })
    const id = (await trigger({ jobName: 'echo', input: { secret: 1 }, labels: { feed: 'on' } })).body.runId
    const done = await sse.next((e) => e.type === 'run:complete')
    expect(done).toEqual({ type: 'run:complete', runId: id, jobName: 'echo', labels: { feed: 'on' }, timestamp: expect.any(String) })
    expect(sse.events.every((e) => e.runId === id)).toBe(true)
    expect(sse.events.map((e) => e.type)).toEqual(['run:trigger', 'run:start', 'run:complete'])
    expect(sse.events[0]).not.toHaveProperty('input')
    await sse.close()
  })

  it('several jobName filters; 400 for bad filters', async () => {
    const sse = await openSse(srv.url('/runs/subscribe?jobName=echo&jobName=typed&label.multi=1'))
    await trigger({ jobName: 'typed', input: { n: 2 }, labels: { multi: '1' } })
    await trigger({ jobName: 'echo', input: 2, labels: { multi: '1' } })
    await until(() => sse.events.filter((e) => e.type === 'run:complete').length === 2, { what: 'two completions' })
    expect(new Set(sse.events.map((e) => e.jobName))).toEqual(new Set(['echo', 'typed']))
    await sse.close()
    expect((await call(srv.url('/runs/subscribe?label.=x'))).status).toBe(400)
    expect((await call(srv.url('/runs/subscribe?jobName='))).status).toBe(400)
  })
})

describe('SSE connections do not leak listeners', () => {
  it('20 clients connecting and disconnecting repeatedly leave the listener count at its baseline', async () => {
    hold('leak')
    const id = (await trigger({ jobName: 'gated', input: { key: 'leak' } })).body.runId
    await waitStatus(id, 'running')
    const baseline = durably._events.listenerCount()
    // A dropped /subscribe stream stays parked for a resuming client for sseResumeMs, then lets go.
    const resumable = await startServer(durably, { sseResumeMs: 200 })
    for (let round = 0; round < 5; round++) {
      const clients = await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          openSse(i % 2 ? resumable.url(`/subscribe?runId=${id}`) : srv.url(`/runs/subscribe?label.round=${round}`)),
        )
      )
      expect(clients.every((c) => c.status === 200)).toBe(true)
      await until(() => durably._events.listenerCount() === baseline + 20, { what: 'listeners to attach' })
      await Promise.all(clients.map((c) => c.close()))
      await until(() => durably._events.listenerCount() === baseline, { what: 'listeners back to baseline' })
    }
    await resumable.close()
    gates.get('leak').open()
    await durably.waitForRun(id, { timeout: 10_000 })
    expect(durably._events.listenerCount()).toBe(baseline)
  })

  it('a client that disconnects mid-stream unsubscribes at once', async () => {
    const baseline = durably._events.listenerCount()
    const raw = await new Promise((resolve, reject) => {
      const req = http.get(srv.url('/runs/subscribe'), resolve)
      req.on('error', reject)
    })
    await until(() => durably._events.listenerCount() === baseline + 1, { what: 'listener' })
    raw.destroy()
    await until(() => durably._events.listenerCount() === baseline, { timeout: 2000, what: 'unsubscribe' })
  })
})

describe('ProgressThrottle', () => {
  it('sends at most one progress per interval per run, the last always, flushed before terminal events', async () => {
    const out = []
    const t = new ProgressThrottle(50, (e) => out.push(e))
    const p = (runId, current) => ({ type: 'run:progress', runId, progress: { current } })
    t.push(p('a', 1))
    t.push(p('a', 2))
    t.push(p('b', 1))
    t.push(p('a', 3))
    expect(out.map((e) => `${e.runId}${e.progress.current}`)).toEqual(['a1', 'b1'])
    await sleep(80)
    expect(out.map((e) => `${e.runId}${e.progress.current}`)).toEqual(['a1', 'b1', 'a3'])
    t.push(p('b', 2))
    t.push({ type: 'run:complete', runId: 'b' })
    expect(out.slice(3).map((e) => e.type + (e.progress ? e.progress.current : ''))).toEqual(['run:progress2', 'run:complete'])
    t.stop()
    const all = []
    const off = new ProgressThrottle(0, (e) => all.push(e))
    for (let i = 0; i < 5; i++) off.push(p('a', i))
    expect(all).toHaveLength(5)
  })
})

describe('SseChannel', () => {
  it('drops a client that stops reading instead of buffering without bound, and cleans up once', async () => {
    const channel = new SseChannel(new Request('http://x/'), 0)
    let cleanups = 0
    channel.onEnd(() => cleanups++)
    const reader = channel.response().body.getReader()
    for (let i = 0; i < 10_050; i++) channel.send({ type: 'log:write', runId: 'r', i })
    expect(channel.closed).toBe(true)
    expect(cleanups).toBe(1)
    await expect(reader.read()).rejects.toThrow(/too slow/)
    channel.end()
    expect(cleanups).toBe(1)
  })

  it('ends when the request signal aborts, and a cancelled body runs cleanup', async () => {
    const ac = new AbortController()
    const a = new SseChannel(new Request('http://x/', { signal: ac.signal }), 0)
    let endedA = 0
    a.onEnd(() => endedA++)
    ac.abort()
    expect(endedA).toBe(1)
    const b = new SseChannel(new Request('http://x/'), 0)
    let endedB = 0
    b.onEnd(() => endedB++)
    await b.response().body.cancel()
    expect(endedB).toBe(1)
    expect(b.closed).toBe(true)
  })
})
