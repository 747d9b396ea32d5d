// LISTEN/NOTIFY across processes on PostgreSQL (issue 16): process A (this
// test) and worker B (fixtures/pg-listen-worker.js) on one schema, both
// with a 30 s polling interval (B also a 20 s heartbeat), so only a
// notification can start a run, abort it, or carry its events within the
// bounds asserted here. Under CI=true a missing server fails (pg.js).
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { createRequire } from 'node:module'
import { fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'

const require = createRequire(import.meta.url)
const { createDurably, defineJob, CancelledError } = require('..')
const { postgresBackendSkipReason, pgOptions, dropSchemas } = require('./pg.js')

const WORKER = fileURLToPath(new URL('./fixtures/pg-listen-worker.js', import.meta.url))
const why = postgresBackendSkipReason()
if (why) console.warn(`listen.test: PostgreSQL skipped: ${why}`)

// A's copies of B's jobs: A triggers them and never executes them (not started).
const quick = defineJob({ name: 'quick', run: async () => ({}) })
const hold = defineJob({ name: 'hold', run: async () => ({}) })

const open = []
afterEach(async () => {
  for (const { d, child } of open.splice(0)) {
    if (child && child.exitCode === null) {
      child.send('exit')
      await new Promise((r) => {
        const t = setTimeout(() => (child.kill('SIGKILL'), r()), 10_000)
        child.once('exit', () => (clearTimeout(t), r()))
      })
    }
    if (d) await d.close()
  }
})
afterAll(() => dropSchemas())

/** Starts worker B on `opts`; resolves with it once it is started, and a `line(prefix)` waiter. */
async function startB(opts) {
  const child = fork(WORKER, [opts.url, opts.schema], { stdio: ['ignore', 'pipe', 'inherit', 'ipc'] })
  open.push({ child })
  const lines = []
  const waiters = []
  let buf = ''
  child.stdout.on('data', (chunk) => {
    buf += chunk
    let i
    while ((i = buf.indexOf('\n')) >= 0) {
      const l = buf.slice(0, i)
      buf = buf.slice(i + 1)
      lines.push(l)
      for (const w of [...waiters]) if (l.startsWith(w.prefix)) (waiters.splice(waiters.indexOf(w), 1), w.resolve(l))
    }
  })
  const line = (prefix, ms = 20_000) =>
    new Promise((resolve, reject) => {
      const have = lines.find((l) => l.startsWith(prefix))
      if (have) return resolve(have)
      const w = { prefix, resolve }
      waiters.push(w)
      setTimeout(() => reject(new Error(`B printed no "${prefix}" within ${ms} ms; got ${JSON.stringify(lines)}`)), ms)
    })
  await line('ready')
  // B's first claim (at start) found nothing: it is idle, only a notification wakes it.
  await new Promise((r) => setTimeout(r, 500))
  return { child, line }
}

function makeA(opts) {
  const d = createDurably({ ...opts, jobs: { quick, hold }, pollingInterval: 30_000, heartbeatInterval: 20_000, staleThreshold: 60_000 })
  open.push({ d })
  return d
}

describe.skipIf(why !== null)('PostgreSQL LISTEN/NOTIFY across processes', () => {
  it('a trigger in A starts the run in idle worker B well under a second (polling is 30 s)', async () => {
    const opts = pgOptions('listen')
    const a = makeA(opts)
    await a.migrate()
    const b = await startB(opts)
    for (let i = 0; i < 3; i++) {
      const t0 = Date.now()
      const run = await a.jobs.quick.trigger({ x: i })
      const [, id, at] = (await b.line(`start ${run.id}`)).split(' ')
      const latency = Number(at) - t0
      console.log(`listen.test: trigger in A → start in B: ${latency} ms`)
      expect(id).toBe(run.id)
      expect(latency).toBeLessThan(1000)
      expect((await a.waitForRun(run.id, { timeout: 10_000 })).output.b).toBe((i + 1) * 2)
    }
  }, 60_000)

  it('a cancel in A fires the AbortSignal of the run executing in B at once (heartbeat is 20 s)', async () => {
    const opts = pgOptions('listen')
    const a = makeA(opts)
    await a.migrate()
    const b = await startB(opts)
    const run = await a.jobs.hold.trigger(undefined)
    await b.line(`start ${run.id}`)
    const t0 = Date.now()
    await a.cancel(run.id)
    const at = Number((await b.line(`aborted ${run.id}`, 10_000)).split(' ')[2])
    console.log(`listen.test: cancel in A → abort in B: ${at - t0} ms`)
    expect(at - t0).toBeLessThan(1000)
    await expect(a.waitForRun(run.id, { timeout: 5000 })).rejects.toBeInstanceOf(CancelledError)
  }, 60_000)

  it("waitForRun and subscribe in A see the step, progress, log and completion events of B's run", async () => {
    const opts = pgOptions('listen')
    const a = makeA(opts)
    await a.migrate()
    const b = await startB(opts)
    // The run waits in B until A listens: events B publishes before A's registration are not A's to see (README).
    const run = await a.jobs.quick.trigger({ x: 4, gate: true })
    const events = []
    let snapshot
    const snapshotSeen = new Promise((r) => (snapshot = r))
    const reader = (async () => {
      for await (const e of a.subscribe(run.id)) (events.push(e), snapshot())
    })()
    const progress = []
    const logs = []
    const waiting = a.waitForRun(run.id, {
      timeout: 10_000,
      onProgress: (p) => progress.push(p),
      onLog: (e) => logs.push(e.message),
    })
    // subscribe's snapshot is read once A is registered (both share the registration).
    await b.line(`start ${run.id}`)
    await snapshotSeen
    b.child.send(`go ${run.id}`)
    const done = await waiting
    await reader
    expect(done.output).toEqual({ b: 10, when: new Date(0) })
    expect(progress).toEqual([{ current: 1, total: 2, message: 'half' }])
    expect(logs).toEqual(['from B'])
    const seen = events.map((e) => (e.stepName ? `${e.type}:${e.stepName}` : e.type))
    expect(seen[0]).toBe('run:snapshot')
    // Events, not the closing snapshot of the poll: B's steps in order, then its end.
    const ended = seen.indexOf('run:complete')
    expect(ended).toBeGreaterThan(0)
    expect(seen.slice(1, ended + 1).filter((t) => t !== 'run:start' && t !== 'run:progress' && t !== 'log:write')).toEqual([
      'step:start:a',
      'step:complete:a',
      'step:start:b',
      'step:complete:b',
      'run:complete',
    ])
    const complete = events[ended]
    expect(complete.runId).toBe(run.id)
    expect(complete.output).toEqual({ b: 10, when: new Date(0) })
    const steps = events.filter((e) => e.type === 'step:complete')
    expect(steps.map((e) => e.output)).toEqual([5, 10])
    // Sequences increase (the stream's order) and each event came once.
    const seqs = events.slice(1).map((e) => e.sequence)
    expect([...seqs].sort((x, y) => x - y)).toEqual(seqs)
    expect(new Set(seqs).size).toBe(seqs.length)
  }, 60_000)

  it('a run executed here is not seen twice (its own events are not echoed back)', async () => {
    const opts = pgOptions('listen')
    const job = defineJob({
      name: 'local',
      run: async (ctx) => {
        await ctx.run('a', () => 1)
        // An echo of step:complete would arrive meanwhile, before the end closes the streams.
        await new Promise((r) => setTimeout(r, 300))
        return 2
      },
    })
    const d = createDurably({ ...opts, jobs: { job }, pollingInterval: 30_000 })
    open.push({ d })
    await d.migrate()
    const observer = makeA(opts) // same schema, another instance: hears d's events by NOTIFY only
    await observer.migrate()
    const run = await d.jobs.job.trigger(undefined)
    // Both snapshots are read (off the JS thread) before the run starts, so
    // the streams follow the whole run.
    const s1 = d.subscribe(run.id).getReader()
    const s2 = observer.subscribe(run.id).getReader()
    const mine = [(await s1.read()).value.type]
    const theirs = [(await s2.read()).value.type]
    const rest = async (reader, into) => {
      for (let e = await reader.read(); !e.done; e = await reader.read()) into.push(e.value.type)
    }
    const r1 = rest(s1, mine)
    const r2 = rest(s2, theirs)
    await d.start()
    await Promise.all([r1, r2])
    expect(mine.filter((t) => t === 'step:complete')).toHaveLength(1)
    expect(mine.at(-1)).toBe('run:complete')
    expect(theirs.filter((t) => t === 'step:complete')).toHaveLength(1)
    expect(theirs.at(-1)).toBe('run:complete')
  }, 60_000)
})
