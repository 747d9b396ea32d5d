// Run events across processes on PostgreSQL (issue 16): every process
// publishes its run events, but another process's events reach the JS of an
// instance only while something there listens to every event (waitForRun,
// subscribe, /runs/subscribe). With P worker processes each would otherwise
// decode the events of all P (about a fifth of a worker's CPU at P = 4).
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { createRequire } from 'node:module'
import { spawn } from 'node:child_process'

const require = createRequire(import.meta.url)
const { createDurably, defineJob } = require('..')
const { postgresBackendSkipReason, pgOptions, dropSchemas } = require('./pg.js')
const { until, sleep } = require('./helpers.js')
const { psqlPath, sql } = require('../scripts/psql.js')

const why = postgresBackendSkipReason()
if (why) console.warn(`pg-events.test: PostgreSQL skipped: ${why}`)

const open = []
afterEach(async () => {
  for (const d of open.splice(0)) await d.close()
})
afterAll(() => dropSchemas())

let gate = null
const job = defineJob({
  name: 'job',
  run: async (ctx, input) => {
    if (input.wait) await gate.promise
    await ctx.run('one', () => input.n)
    await ctx.run('two', () => input.n + 1)
    return input.n
  },
})

function newGate() {
  let open
  const promise = new Promise((resolve) => (open = resolve))
  return { promise, open }
}

describe.skipIf(why)('other processes\' run events on PostgreSQL', () => {
  it('reach JS only while something listens to every event, and all of them then', async () => {
    const opts = { ...pgOptions('remoteev'), pollingInterval: 50 }
    const worker = createDurably({ ...opts, jobs: { job } })
    const watcher = createDurably({ ...opts, jobs: { job } }) // never started: a second machine
    open.push(worker, watcher)
    await watcher.migrate()
    const remote = [] // [runId, type] of every run event of the worker that reached the watcher's JS
    const emitRemote = watcher._events.emitRemote.bind(watcher._events)
    watcher._events.emitRemote = (e) => {
      remote.push([e.runId, e.type])
      return emitRemote(e)
    }
    await worker.start()

    // Runs of the worker while nothing listens on the watcher (each run's
    // events are published within ~10 ms of its end; 500 ms is ample for
    // them to arrive: without the guard they do).
    const quietRuns = async (from) => {
      const ids = []
      for (let n = from; n < from + 3; n++) ids.push((await worker.jobs.job.triggerAndWait({ n }, { timeout: 20_000 })).id)
      await new Promise((r) => setTimeout(r, 500))
      return ids
    }
    expect(await quietRuns(0)).toHaveLength(3)
    expect(remote).toEqual([])

    // A subscribe on the watcher gets the steps of a run the worker executes.
    const watched = async () => {
      gate = newGate()
      const run = await watcher.jobs.job.trigger({ n: 10, wait: true })
      await until(async () => (await watcher.getRun(run.id)).status === 'running', { what: 'the worker to start it' })
      const types = []
      const stream = (async () => {
        for await (const e of watcher.subscribe(run.id)) types.push(e.type)
      })()
      await until(() => types.length > 0, { what: 'the snapshot' })
      gate.open()
      await stream
      return { id: run.id, types }
    }
    const first = await watched()
    expect(first.types[0]).toBe('run:snapshot')
    expect(first.types).toContain('step:complete')
    expect(first.types.at(-1)).toBe('run:complete')
    expect(remote.filter(([id, type]) => id === first.id && type === 'step:complete')).toHaveLength(2)

    // The stream ended: off again (a microtask later) …
    await new Promise((r) => setTimeout(r, 10))
    const seen = remote.length
    const later = await quietRuns(3)
    expect(remote.slice(seen).filter(([id]) => later.includes(id))).toEqual([])
    // … and on again for the next listener.
    const second = await watched()
    expect(second.types).toContain('step:complete')
  }, 60_000)

  it('a subscribe reads its snapshot only once this process is registered for run events', async () => {
    // Registered, other processes publish the run's events; an event they did
    // not publish was committed before, so the snapshot read after it shows it.
    const opts = { ...pgOptions('regfirst'), pollingInterval: 50 }
    const d = createDurably({ ...opts, jobs: { job } })
    open.push(d)
    const run = await d.jobs.job.trigger({ n: 1 })
    expect(sql(opts.url, `SELECT count(*) FROM "${opts.schema}".listeners`)).toBe('0')
    // A publish in flight (it read the registrations; not committed yet)
    // holds the registration back, and so the snapshot.
    const psql = spawn(psqlPath(), ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', opts.url], { stdio: ['pipe', 'ignore', 'inherit'] })
    const exited = new Promise((r) => psql.on('exit', r))
    psql.stdin.write(`BEGIN; SELECT 1 FROM "${opts.schema}".listeners; SELECT pg_sleep(0.01);\n`)
    await until(() => sql(opts.url, `SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = 'listeners' AND l.mode = 'AccessShareLock'`) !== '0', { what: 'the publish to hold its lock' })
    const got = []
    const stream = (async () => {
      for await (const e of d.subscribe(run.id)) {
        got.push(e.type)
        break
      }
    })()
    await sleep(500)
    expect(got).toEqual([])
    psql.stdin.end('COMMIT;\n')
    await exited
    await stream
    expect(got).toEqual(['run:snapshot'])
    expect(sql(opts.url, `SELECT count(*) FROM "${opts.schema}".listeners`)).toBe('1')
  }, 30_000)

  it('triggerAndWait with onLog or onProgress registers before it triggers', async () => {
    // Registered after the trigger, a run another process executes at once
    // could emit its first progress and logs before anyone is registered
    // for them: they would never be published.
    const opts = { ...pgOptions('regtaw'), pollingInterval: 50 }
    const d = createDurably({ ...opts, jobs: { logs } })
    open.push(d)
    await d.migrate()
    await d.start()
    const psql = spawn(psqlPath(), ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', opts.url], { stdio: ['pipe', 'ignore', 'inherit'] })
    const exited = new Promise((r) => psql.on('exit', r))
    psql.stdin.write(`BEGIN; SELECT 1 FROM "${opts.schema}".listeners; SELECT pg_sleep(0.01);\n`)
    await until(() => sql(opts.url, `SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = 'listeners' AND l.mode = 'AccessShareLock'`) !== '0', { what: 'the hold on listeners' })
    const lines = []
    const progress = []
    const waiting = d.jobs.logs.triggerAndWait(undefined, { timeout: 20_000, onLog: (e) => lines.push(e.message), onProgress: (p) => progress.push(p.current) })
    await sleep(500)
    // The registration waits for the hold, and the trigger for the registration.
    expect(sql(opts.url, `SELECT count(*) FROM "${opts.schema}".runs`)).toBe('0')
    psql.stdin.end('COMMIT;\n')
    await exited
    const done = await waiting
    expect(done.output).toBe('ok')
    expect(lines).toEqual(['logged'])
    expect(progress).toEqual([1])
    expect(sql(opts.url, `SELECT count(*) FROM "${opts.schema}".listeners`)).toBe('1')
    // Without onLog/onProgress nothing waits for a registration.
    expect((await d.jobs.logs.triggerAndWait(undefined, { timeout: 20_000 })).output).toBe('ok')
  }, 30_000)
})

const logs = defineJob({
  name: 'logs',
  run: async (ctx) => {
    ctx.progress(1)
    ctx.log.info('logged')
    return 'ok'
  },
})
