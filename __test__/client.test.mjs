// durably/client in Node against a real node:http handler: every call, error
// codes, and subscribe() resuming after dropped connections with no event
// lost or repeated (and the server side of it: sequence, id lines, after=,
// Last-Event-ID, the resume window).

import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { createDurablyClient, DurablyClientError } from 'durably/client'
import durablyPkg from '../index.js'
import helpers from './helpers.js'
import httpHelpers from './http-helpers.js'

const { defineJob, withLogPersistence } = durablyPkg
const { makeDurably, closeAll, until, sleep } = helpers
const { startServer, call, openSse, gate } = httpHelpers

const gates = new Map()
const hold = (key) => {
  const g = gate()
  gates.set(key, g)
  return g
}

const jobs = {
  echo: defineJob({ name: 'echo', run: async (ctx, input) => ({ echoed: input }) }),
  chatty: defineJob({
    name: 'chatty',
    // Logs `n` lines in each of `phases` steps; each phase waits for its gate.
    run: async (ctx, input) => {
      for (let p = 0; p < input.phases; p++) {
        await ctx.run(`wait-${p}`, () => gates.get(`${input.key}:${p}`).promise)
        for (let i = 0; i < input.n; i++) {
          ctx.log.info(`phase ${p} line ${i}`)
          ctx.progress(p * input.n + i + 1, input.phases * input.n)
        }
      }
      if (input.fail) throw new Error('failed on purpose')
      return { lines: input.phases * input.n }
    },
  }),
}

let durably
let srv

beforeAll(async () => {
  durably = makeDurably({ jobs, maxConcurrentRuns: 4 })
  durably.use(withLogPersistence())
  await durably.init()
  // No progress throttling: every event of a run reaches the client, so the
  // lists can be compared one to one.
  srv = await startServer(durably, { sseThrottleMs: 0 })
})

afterAll(async () => {
  for (const g of gates.values()) g.open()
  if (srv) await srv.close()
  await closeAll()
})

/** Every event of `runId` as the engine emitted it (in-process). */
function recordEngine(runId) {
  const seen = []
  const off = durably._events.onAny((e) => {
    if (e.runId === runId && e.type !== 'worker:error') seen.push(e)
  })
  return { seen, off }
}

/**
 * A fetch whose /subscribe responses break (as a dropped network would)
 * after `dropAfter[i]` messages on connection i. Records every URL asked.
 */
function droppingFetch(dropAfter, onDrop = () => {}) {
  const urls = []
  let connection = 0
  const f = async (url, init = {}) => {
    urls.push(url)
    if (!url.includes('/subscribe?')) return fetch(url, init)
    const limit = dropAfter[connection++]
    if (limit === undefined) return fetch(url, init)
    const ac = new AbortController()
    init.signal?.addEventListener('abort', () => ac.abort(), { once: true })
    const res = await fetch(url, { ...init, signal: ac.signal })
    const reader = res.body.getReader()
    let messages = 0
    let buf = ''
    const decoder = new TextDecoder()
    const body = new ReadableStream({
      async pull(controller) {
        const { value, done } = await reader.read().catch(() => ({ done: true }))
        if (done) return controller.close()
        // Pass whole messages only up to the limit, then cut the connection.
        buf += decoder.decode(value, { stream: true })
        let i
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const frame = buf.slice(0, i + 2)
          buf = buf.slice(i + 2)
          if (messages === limit) {
            ac.abort()
            controller.error(new TypeError('network connection lost'))
            onDrop(connection - 1)
            return
          }
          messages++
          controller.enqueue(new TextEncoder().encode(frame))
        }
      },
      cancel() {
        ac.abort()
      },
    })
    return new Response(body, { status: res.status, headers: res.headers })
  }
  return { fetch: f, urls }
}

describe('client calls', () => {
  const client = () => createDurablyClient({ baseUrl: srv.url('') })

  it('trigger, triggerAndWait, getRun, getRuns, getSteps, retrigger, deleteRun', async () => {
    const c = client()
    const t = await c.trigger('echo', { a: 1 }, { labels: { src: 'client' } })
    expect(t).toEqual({ runId: expect.any(String), disposition: 'created' })
    const done = await c.triggerAndWait('echo', 'hello', { timeout: 10_000 })
    expect(done).toEqual({ runId: expect.any(String), output: { echoed: 'hello' }, disposition: 'created' })
    await durably.waitForRun(t.runId, { timeout: 10_000 })
    const run = await c.getRun(t.runId)
    expect(run).toMatchObject({ id: t.runId, jobName: 'echo', status: 'completed', output: { echoed: { a: 1 } }, isTerminal: true })
    const listed = await c.getRuns({ jobName: 'echo', labels: { src: 'client' }, status: ['completed'] })
    expect(listed.map((r) => r.id)).toEqual([t.runId])
    const steps = await c.getSteps(t.runId)
    expect(steps).toEqual([])
    const again = await c.retrigger(t.runId)
    expect(again.runId).not.toBe(t.runId)
    await durably.waitForRun(again.runId, { timeout: 10_000 })
    await c.deleteRun(again.runId)
    expect(await c.getRun(again.runId)).toBeNull()
    // The job handle sends the bound name.
    const viaJob = await c.job('echo').triggerAndWait(7)
    expect(viaJob.output).toEqual({ echoed: 7 })
  })

  it('retry a failed run, cancel a running one; errors carry status and code', async () => {
    const c = client()
    hold('f:0')
    const { runId } = await c.trigger('chatty', { key: 'f', phases: 1, n: 1, fail: true })
    gates.get('f:0').open()
    const failed = c.waitForRun(runId, { timeout: 10_000 })
    await expect(failed).rejects.toMatchObject({ code: 'RUN_FAILED', runId, message: 'failed on purpose' })
    expect((await c.getRun(runId)).status).toBe('failed')
    // 409: only failed/cancelled runs can be retried; a completed one cannot be cancelled.
    expect(await c.retry(runId)).toEqual({ runId })
    await until(async () => (await c.getRun(runId)).status === 'failed', { what: 'failed again' })

    hold('c:0')
    const running = await c.trigger('chatty', { key: 'c', phases: 1, n: 1 })
    await until(async () => (await c.getRun(running.runId)).status === 'running', { what: 'running' })
    const waiting = c.waitForRun(running.runId, { timeout: 10_000 }).catch((e) => e)
    await c.cancel(running.runId)
    expect(await waiting).toMatchObject({ code: 'CANCELLED' })
    const conflict = await c.cancel(running.runId).catch((e) => e)
    expect(conflict).toBeInstanceOf(DurablyClientError)
    expect(conflict).toMatchObject({ status: 409, code: 'CONFLICT' })
    const unknown = await c.trigger('no-such-job', 1).catch((e) => e)
    expect(unknown).toMatchObject({ status: 400, code: 'VALIDATION_ERROR', message: expect.stringContaining('no-such-job') })
    const missing = await c.retry('01ZZZZZZZZZZZZZZZZZZZZZZZZ').catch((e) => e)
    expect(missing).toMatchObject({ status: 404, code: 'NOT_FOUND' })
    gates.get('c:0').open()
  })

  it('headers (an object or a function) reach the server; a custom fetch is used', async () => {
    const seen = []
    const auth = await startServer(durably, {
      auth: {
        authenticate: (req) => {
          seen.push(req.headers.get('authorization'))
          if (!req.headers.get('authorization')) throw new Response('{"error":"no token"}', { status: 401 })
          return {}
        },
      },
    })
    try {
      let n = 0
      const calls = []
      const c = createDurablyClient({
        baseUrl: `${auth.url('')}/`,
        headers: async () => ({ authorization: `Bearer ${++n}` }),
        fetch: (url, init) => {
          calls.push(url)
          return fetch(url, init)
        },
      })
      const { runId } = await c.trigger('echo', 1)
      await c.waitForRun(runId, { timeout: 10_000 })
      expect(seen.slice(0, 2)).toEqual(['Bearer 1', 'Bearer 2'])
      expect(calls[0]).toBe(auth.url('/trigger'))
      const denied = await createDurablyClient({ baseUrl: auth.url('') }).getRuns().catch((e) => e)
      expect(denied).toMatchObject({ status: 401, code: 'UNAUTHORIZED', message: 'no token' })
    } finally {
      await auth.close()
    }
  })

  it('refuses bad options with a clear message', () => {
    expect(() => createDurablyClient()).toThrow(/options must be an object/)
    expect(() => createDurablyClient({ baseUrl: '' })).toThrow(/baseUrl/)
    expect(() => createDurablyClient({ baseUrl: '/x', headers: 5 })).toThrow(/headers/)
    expect(() => createDurablyClient({ baseUrl: '/x' }).job('')).toThrow(/jobName/)
  })

  it('waitForRun and triggerAndWait refuse a timeout or callback they cannot use, before sending anything', async () => {
    let sent = 0
    const client = createDurablyClient({ baseUrl: srv.url(''), fetch: (...a) => (sent++, fetch(...a)) })
    for (const [opts, message] of [
      [{ timeout: -5 }, /timeout must be an integer number of ms/],
      [{ timeout: 2 ** 31 }, /timeout/],
      [{ onLog: 'x' }, /onLog must be a function/],
      [{ onProgress: 1 }, /onProgress must be a function/],
    ]) {
      await expect(client.waitForRun('01ANYRUN', opts)).rejects.toThrow(TypeError)
      await expect(client.waitForRun('01ANYRUN', opts)).rejects.toThrow(message)
      await expect(client.triggerAndWait('echo', 1, opts)).rejects.toThrow(message)
    }
    expect(sent).toBe(0)
    expect((await client.triggerAndWait('echo', 1, { timeout: 10_000, onLog: () => {} })).output).toEqual({ echoed: 1 })
  })
})

describe('subscribe: resuming after dropped connections', () => {
  /** Opens gates phase by phase, each once the client has seen the previous phase's output. */
  async function runChatty(key, { phases, n }, c, { dropAfter }) {
    for (let p = 0; p < phases; p++) hold(`${key}:${p}`)
    const { runId } = await c.trigger('chatty', { key, phases, n })
    const engine = recordEngine(runId)
    return { runId, engine }
  }

  it('three drops mid-run: every event exactly once, in sequence order, reconnecting with after=', async () => {
    // Drops after 3, 5 and 4 messages; while disconnected the job goes on (phase gates open on drop).
    let dropped = 0
    const drops = droppingFetch([3, 5, 4], () => {
      dropped++
      gates.get(`r:${dropped}`)?.open()
    })
    const c = createDurablyClient({ baseUrl: srv.url(''), fetch: drops.fetch })
    const { runId, engine } = await runChatty('r', { phases: 4, n: 3 }, c, {})
    const got = []
    const consuming = (async () => {
      for await (const e of c.subscribe(runId)) {
        got.push(e)
        // The first phase runs while connected.
        if (got.length === 1) gates.get('r:0').open()
      }
    })()
    await consuming
    engine.off()
    expect(dropped).toBe(3)
    const reconnects = drops.urls.filter((u) => u.includes('/subscribe?'))
    expect(reconnects).toHaveLength(4)
    for (const u of reconnects.slice(1)) expect(u).toMatch(/&after=[0-9a-f]{8}\.\d+$/)

    // One snapshot (at the start: every resume was served from the parked stream).
    expect(got.filter((e) => e.type === 'run:snapshot')).toHaveLength(1)
    const events = got.filter((e) => e.type !== 'run:snapshot')
    const sequences = events.map((e) => e.sequence)
    expect(sequences).toEqual([...sequences].sort((a, b) => a - b))
    expect(new Set(sequences).size).toBe(sequences.length)
    // Exactly the engine's events after the snapshot, no more, no fewer.
    const after = got[0].sequence
    expect(events.map((e) => `${e.sequence} ${e.type}`)).toEqual(
      engine.seen.filter((e) => e.sequence > after).map((e) => `${e.sequence} ${e.type}`),
    )
    expect(events.filter((e) => e.type === 'log:write')).toHaveLength(12)
    expect(events.at(-1)).toMatchObject({ type: 'run:complete', output: { lines: 12 } })
  })

  it('a drop outside the resume window gets a fresh snapshot: nothing repeated, state consistent', async () => {
    const short = await startServer(durably, { sseThrottleMs: 0, sseResumeMs: 0 })
    try {
      let dropped = 0
      const drops = droppingFetch([2], () => {
        dropped++
        gates.get('w:1').open()
      })
      const c = createDurablyClient({ baseUrl: short.url(''), fetch: drops.fetch })
      const { runId, engine } = await runChatty('w', { phases: 2, n: 2 }, c, {})
      const got = []
      for await (const e of c.subscribe(runId)) {
        got.push(e)
        if (got.length === 1) gates.get('w:0').open()
      }
      engine.off()
      expect(dropped).toBe(1)
      const snapshots = got.filter((e) => e.type === 'run:snapshot')
      expect(snapshots.length).toBe(2)
      const sequences = got.filter((e) => e.type !== 'run:snapshot').map((e) => e.sequence)
      expect(new Set(sequences).size).toBe(sequences.length)
      const last = got.at(-1)
      expect(last.type === 'run:complete' || (last.type === 'run:snapshot' && last.run.status === 'completed')).toBe(true)
    } finally {
      await short.close()
    }
  })

  it('breaking out of the loop closes the stream; an aborted signal ends it quietly', async () => {
    hold('b:0')
    const c = createDurablyClient({ baseUrl: srv.url('') })
    // The run waits at its gate before the streams open: nothing but their
    // snapshot comes on them (a run claimed later, as on a loaded machine or
    // on PostgreSQL, would stream its run:start and step:start too).
    const waiting = new Set()
    const off = durably.on('step:start', (e) => waiting.add(e.runId))
    const { runId } = await c.trigger('chatty', { key: 'b', phases: 1, n: 1 })
    await until(() => waiting.has(runId), { what: 'the run at its gate' })
    off()
    const baseline = durably._events.listenerCount()
    for await (const e of c.subscribe(runId)) {
      expect(e.type).toBe('run:snapshot')
      break
    }
    const ac = new AbortController()
    const seen = []
    const loop = (async () => {
      for await (const e of c.subscribe(runId, { signal: ac.signal })) seen.push(e.type)
    })()
    await until(() => seen.length === 1, { what: 'snapshot' })
    ac.abort()
    await loop
    expect(seen).toEqual(['run:snapshot'])
    gates.get('b:0').open()
    await durably.waitForRun(runId, { timeout: 10_000 })
    await until(() => durably._events.listenerCount() <= baseline, { what: 'listeners released' })
  })

  it('subscribing to an unknown run rejects with NOT_FOUND', async () => {
    const c = createDurablyClient({ baseUrl: srv.url('') })
    const err = await (async () => {
      for await (const _ of c.subscribe('01ZZZZZZZZZZZZZZZZZZZZZZZZ'));
    })().catch((e) => e)
    expect(err).toMatchObject({ status: 404, code: 'NOT_FOUND' })
  })
})

describe('server side of resuming', () => {
  it('events carry an increasing sequence; the snapshot the last one it reflects', async () => {
    const seqs = []
    const off = durably.on('run:trigger', (e) => seqs.push(e.sequence))
    const a = await durably.jobs.echo.trigger(1)
    const b = await durably.jobs.echo.trigger(2)
    off()
    expect(seqs).toHaveLength(2)
    expect(seqs[1]).toBeGreaterThan(seqs[0])
    await durably.waitForRun(b.id, { timeout: 10_000 })
    const reader = durably.subscribe(a.id).getReader()
    const { value } = await reader.read()
    expect(value.type).toBe('run:snapshot')
    expect(value.sequence).toBe(durably._events.sequence)
    await reader.cancel()
  })

  it('Last-Event-ID resumes like after=; a foreign epoch or an id outside history gets a snapshot; bad ids are 400', async () => {
    hold('h:0')
    hold('h:1')
    const { runId } = await call(srv.url('/trigger'), { method: 'POST', body: { jobName: 'chatty', input: { key: 'h', phases: 2, n: 2 } } }).then((r) => r.body)
    const first = await openSse(srv.url(`/subscribe?runId=${runId}`))
    await first.next((e) => e.type === 'run:snapshot')
    gates.get('h:0').open()
    await first.next((e) => e.type === 'run:progress' && e.progress.current === 2)
    const lastId = first.ids.at(-1)
    const lastSeq = first.events.at(-1).sequence
    expect(lastId).toMatch(new RegExp(`^[0-9a-f]{8}\\.${lastSeq}$`))
    await first.close()
    gates.get('h:1').open()
    await durably.waitForRun(runId, { timeout: 10_000 })

    const resumed = await openSse(srv.url(`/subscribe?runId=${runId}`), { headers: { 'last-event-id': lastId } })
    await resumed.ended
    expect(resumed.events[0].type).not.toBe('run:snapshot')
    expect(resumed.events.every((e) => e.sequence > lastSeq)).toBe(true)
    expect(resumed.events.map((e) => e.type).filter((t) => t === 'log:write')).toHaveLength(2)
    expect(resumed.events.at(-1).type).toBe('run:complete')

    const foreign = await openSse(srv.url(`/subscribe?runId=${runId}&after=00000000.${lastSeq}`))
    await foreign.ended
    expect(foreign.events.map((e) => e.type)).toEqual(['run:snapshot'])
    for (const bad of ['x', '1.2.3', '-1', 'abc.def']) {
      const r = await call(srv.url(`/subscribe?runId=${runId}&after=${bad}`))
      expect(r.status, bad).toBe(400)
      expect(r.body.error).toMatch(/after/)
    }
    const badHeader = await call(srv.url(`/subscribe?runId=${runId}`), { headers: { 'last-event-id': 'nope' } })
    expect(badHeader.status).toBe(400)
    expect(badHeader.body.error).toMatch(/Last-Event-ID/)
  })

  it('a parked stream lets go of its listener after sseResumeMs', async () => {
    hold('p:0')
    const resumable = await startServer(durably, { sseResumeMs: 300 })
    try {
      const { id: runId } = await durably.jobs.chatty.trigger({ key: 'p', phases: 1, n: 1 })
      const baseline = durably._events.listenerCount()
      const sse = await openSse(resumable.url(`/subscribe?runId=${runId}`))
      await sse.next((e) => e.type === 'run:snapshot')
      await sse.close()
      // Still listening right after the drop (parked for a resuming client) …
      await sleep(50)
      expect(durably._events.listenerCount()).toBe(baseline + 1)
      // … and released once the window passed.
      await until(() => durably._events.listenerCount() === baseline, { timeout: 5000, what: 'parked stream dropped' })
      const late = await openSse(resumable.url(`/subscribe?runId=${runId}&after=${sse.ids[0]}`))
      await late.next((e) => e.type === 'run:snapshot')
      await late.close()
    } finally {
      gates.get('p:0').open()
      await resumable.close()
    }
  })

  it('progress waiting in the throttle goes out before the next event of its run (ids stay in order)', async () => {
    const throttled = await startServer(durably, { sseThrottleMs: 10_000 })
    try {
      hold('t:0')
      const { id: runId } = await durably.jobs.chatty.trigger({ key: 't', phases: 1, n: 3 })
      const sse = await openSse(throttled.url(`/subscribe?runId=${runId}`))
      await sse.next((e) => e.type === 'run:snapshot')
      gates.get('t:0').open()
      await sse.ended
      const seqs = sse.events.map((e) => e.sequence)
      expect(seqs).toEqual([...seqs].sort((a, b) => a - b))
      // Each log line flushed the progress before it: the last progress is the final one.
      expect(sse.events.filter((e) => e.type === 'run:progress').at(-1).progress.current).toBe(3)
    } finally {
      await throttled.close()
    }
  })

  it('sseResumeMs and compat are checked', () => {
    expect(() => durablyPkg.createDurablyHandler(durably, { sseResumeMs: -1 })).toThrow(/sseResumeMs/)
    expect(() => durablyPkg.createDurablyHandler(durably, { compat: 'upstream' })).toThrow(/compat must be one of 'upstream-0.15'/)
  })
})

describe("compat: 'upstream-0.15' (what @coji/durably-react 0.15 reads)", () => {
  it('leased for running in lists, runs and events; register keys as job names; state replayed after the snapshot; no reconnect', async () => {
    const up = await startServer(durably, { compat: 'upstream-0.15', sseThrottleMs: 0 })
    try {
      hold('k:0')
      const feed = await openSse(up.url('/runs/subscribe?jobName=chatty'))
      const keyed = await call(up.url('/trigger'), { method: 'POST', body: { jobName: 'chatty', input: { key: 'k', phases: 1, n: 1 } } })
      expect(keyed.status).toBe(200)
      const runId = keyed.body.runId
      await until(async () => (await durably.getRun(runId)).status === 'running', { what: 'running' })
      const leased = await call(up.url('/runs?jobName=chatty&status=leased'))
      expect(leased.body.map((r) => [r.id, r.status])).toContainEqual([runId, 'leased'])
      expect((await call(up.url(`/run?runId=${runId}`))).body.status).toBe('leased')
      // Right after the snapshot: run:leased and the progress so far (as upstream replays).
      const live = await openSse(up.url(`/subscribe?runId=${runId}`))
      await live.next((e) => e.type === 'run:leased')
      expect(live.events.map((e) => e.type)).toEqual(['run:snapshot', 'run:leased'])
      expect(live.events[0].run.status).toBe('leased')
      gates.get('k:0').open()
      await live.ended
      expect(live.events.map((e) => e.type)).toEqual(['run:snapshot', 'run:leased', 'step:complete', 'log:write', 'run:progress', 'run:complete'])
      // The stream ends with a retry field that keeps EventSource from reconnecting.
      expect(live.frames.at(-1)).toBe('retry: 86400000')
      const ended = await openSse(up.url(`/subscribe?runId=${runId}`))
      await ended.ended
      expect(ended.events.map((e) => e.type)).toEqual(['run:snapshot', 'run:complete'])
      expect(ended.events[1].output).toEqual({ lines: 1 })
      await feed.next((e) => e.type === 'run:leased' && e.runId === runId)
      expect(feed.events.some((e) => e.type === 'run:start')).toBe(false)
      await feed.close()

      // A job registered under a key that differs from its name.
      const other = makeDurably({ jobs: { importCsv: defineJob({ name: 'import-csv', run: async () => 'ok' }) } })
      await other.init()
      const otherSrv = await startServer(other, { compat: 'upstream-0.15' })
      try {
        const byKey = await call(otherSrv.url('/trigger'), { method: 'POST', body: { jobName: 'importCsv', input: null } })
        expect(byKey.status).toBe(200)
        expect((await other.waitForRun(byKey.body.runId, { timeout: 10_000 })).jobName).toBe('import-csv')
        expect((await call(otherSrv.url('/runs?jobName=importCsv'))).body.map((r) => r.id)).toEqual([byKey.body.runId])
        // Without compat a key is not a job name.
        const plain = await startServer(other)
        try {
          expect((await call(plain.url('/trigger'), { method: 'POST', body: { jobName: 'importCsv', input: null } })).status).toBe(400)
        } finally {
          await plain.close()
        }
      } finally {
        await otherSrv.close()
      }
    } finally {
      await up.close()
    }
  })

  it('the client reads a compat (or upstream) server as it reads ours: leased → running', async () => {
    const up = await startServer(durably, { compat: 'upstream-0.15', sseThrottleMs: 0 })
    try {
      hold('m:0')
      const c = createDurablyClient({ baseUrl: up.url('') })
      const { runId } = await c.trigger('chatty', { key: 'm', phases: 1, n: 1 })
      await until(async () => (await c.getRun(runId)).status === 'running', { what: 'running through the client' })
      const seen = []
      const loop = (async () => {
        for await (const e of c.subscribe(runId)) seen.push(e)
      })()
      await until(() => seen.length >= 1, { what: 'snapshot' })
      gates.get('m:0').open()
      await loop
      expect(seen[0].run.status).toBe('running')
      // Upstream's replayed run:leased (same sequence as the snapshot) is not shown twice.
      expect(seen.map((e) => e.type)).toEqual(['run:snapshot', 'step:complete', 'log:write', 'run:progress', 'run:complete'])
    } finally {
      await up.close()
    }
  })
})
