// Step writes on PostgreSQL (issue 16, speed): the JS writer sends each batch
// with `flushSend` to the engine's runtime, which owns the connections, and
// gets its answer through the constructor's `onFlushed` callback, with no
// libuv pool thread in between (`flushAsync` is the SQLite path). What that
// must keep: every op's status and error, an error that fails the batch whole,
// and a process whose only pending work is a batch in flight stays alive.
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { createRequire } from 'node:module'
import { spawnSync } from 'node:child_process'
import path from 'node:path'

const require = createRequire(import.meta.url)
const { createDurably, defineJob } = require('..')
const protocol = require('../lib/protocol.js')
const { Engine } = require('../binding.js')
const { postgresBackendSkipReason, pgOptions, dropSchemas } = require('./pg.js')

const why = postgresBackendSkipReason()
if (why) console.warn(`pg-flush.test: PostgreSQL skipped: ${why}`)

const ROOT = path.join(import.meta.dirname, '..')
const COUNTED = ['flush', 'flushAsync', 'flushSend', 'publishEvent', 'publishEvents']
const originals = Object.fromEntries(COUNTED.map((k) => [k, Engine.prototype[k]]))
let calls
function countCalls() {
  calls = Object.fromEntries(COUNTED.map((k) => [k, 0]))
  for (const k of COUNTED) {
    Engine.prototype[k] = function (...args) {
      calls[k]++
      return originals[k].apply(this, args)
    }
  }
}
const open = []
afterEach(async () => {
  for (const k of COUNTED) Engine.prototype[k] = originals[k]
  for (const d of open.splice(0)) await d.close()
})
afterAll(() => dropSchemas())

const steps = defineJob({
  name: 'steps',
  run: async (ctx, input) => {
    let sum = 0
    for (let i = 0; i < input.n; i++) sum += await ctx.run(`s${i}`, () => i)
    return sum
  },
})

/** A native engine on a fresh schema whose onFlushed answers are collected in order. */
function rawEngine(tag) {
  const { url, schema } = pgOptions(tag)
  const answers = []
  let wake = () => {}
  const engine = new Engine(
    {
      path: '',
      url,
      schema,
      synchronous: 'normal',
      busyTimeout: 5000,
      pollingInterval: 1000,
      heartbeatInterval: 1000,
      staleThreshold: 30_000,
      maxConcurrentRuns: 1,
    },
    () => {},
    (done) => {
      answers.push(done)
      wake()
    },
  )
  const next = (n) =>
    new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`${answers.length} of ${n} flushSend answers`)), 20_000)
      wake = () => {
        if (answers.length >= n) {
          clearTimeout(t)
          resolve(answers.slice(0, n))
        }
      }
      wake()
    })
  return { engine, next }
}

describe.skipIf(why)('PostgreSQL step writes go through flushSend', () => {
  it('a run of 12 steps on 4 runs at once: every batch is one flushSend, none goes through a pool thread', async () => {
    countCalls()
    const d = createDurably({ ...pgOptions('flush'), maxConcurrentRuns: 4, jobs: { steps } })
    open.push(d)
    await d.migrate()
    const runs = await d.jobs.steps.batchTrigger(Array.from({ length: 4 }, () => ({ input: { n: 12 } })))
    let done = 0
    d.on('run:complete', () => done++)
    await d.start()
    const until = Date.now() + 30_000
    while (done < 4 && Date.now() < until) await new Promise((r) => setTimeout(r, 20))
    expect(done).toBe(4)
    for (const r of runs) {
      expect(await d.getRun(r.id)).toMatchObject({ status: 'completed', output: 66 })
      expect((await d.getSteps(r.id)).map((s) => s.name)).toEqual(Array.from({ length: 12 }, (_, i) => `s${i}`))
    }
    expect(calls.flushAsync).toBe(0)
    expect(calls.flush).toBe(0)
    // 4 × (12 steps + a completion) ops, several runs' ops per batch.
    expect(calls.flushSend).toBeGreaterThanOrEqual(13)
    expect(calls.flushSend).toBeLessThanOrEqual(52)
  })

  it('onFlushed gets a status per op and the ops that failed, as flushAsync resolves them', async () => {
    const { engine, next } = rawEngine('flushraw')
    await engine.migrateAsync()
    const ghost = '01JB0000000000000000000000'
    const ops = protocol.encodeBatch([protocol.progressOp(ghost, 1, '1'), '{"log":{"run":"x"}}'])
    const viaPool = await engine.flushAsync(ops)
    expect(engine.flushSend(ops)).toBeUndefined()
    // (two batches in flight at once may answer in either order: the writer waits for each)
    await next(1)
    engine.flushSend(protocol.encodeBatch([protocol.releaseOp(ghost, 1)]))
    const [first, second] = await next(2)
    expect(first.code).toBeUndefined()
    expect(first.result).toEqual(viaPool)
    expect(first.result.statuses).toEqual(['lost', 'failed'])
    expect(first.result.errors[0]).toMatchObject({ index: 1, code: 'INTERNAL' })
    expect(first.result.errors[0].message).toMatch(/flush op 1 is malformed/)
    expect(second).toEqual({ result: { statuses: ['lost'] } })
    await engine.close()
  })

  it('a batch that fails whole answers with its code and message; a closed engine refuses the send at once', async () => {
    const { engine, next } = rawEngine('flushbad')
    await engine.migrateAsync()
    engine.flushSend('{"not":"a batch"}')
    const [done] = await next(1)
    expect(done.result).toBeUndefined()
    expect(done.code).toBe('INTERNAL')
    expect(done.message).toMatch(/batch|array|flush/i)
    await engine.close()
    expect(() => engine.flushSend('[]')).toThrow(expect.objectContaining({ code: 'CLOSED' }))
  })

  it('a pusher whose batch fails whole rejects with that error (the writer)', async () => {
    const d = createDurably({ ...pgOptions('flushw'), jobs: { steps } })
    open.push(d)
    await d.migrate()
    // Not an op of lib/protocol.js: the batch cannot be parsed, so it fails whole.
    await expect(d._writer.push('{"bogus":')).rejects.toMatchObject({ code: 'INTERNAL' })
    // The writer goes on: the next batch commits.
    const ghost = '01JB0000000000000000000000'
    await expect(d._writer.push(protocol.releaseOp(ghost, 1))).resolves.toBe('lost')
  })

  it('a process whose only pending work is a batch in flight stays alive until it is answered (processOne)', () => {
    const { url, schema } = pgOptions('flushalive')
    const script = `
      const { createDurably, defineJob } = require(${JSON.stringify(ROOT)})
      const job = defineJob({ name: 'k', run: async (ctx) => (await ctx.run('a', () => 1)) + (await ctx.run('b', () => 2)) })
      const d = createDurably({ url: ${JSON.stringify(url)}, schema: ${JSON.stringify(schema)}, jobs: { job } })
      ;(async () => {
        await d.migrate()
        const run = await d.jobs.job.trigger({})
        await d.processOne()
        const after = await d.getRun(run.id)
        console.log(JSON.stringify({ status: after.status, output: after.output, steps: (await d.getSteps(run.id)).length }))
        await d.close()
      })()
    `
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60_000 })
    expect(r.stderr).toBe('')
    expect(r.status).toBe(0)
    expect(JSON.parse(r.stdout.trim())).toEqual({ status: 'completed', output: 3, steps: 2 })
  })
})

describe.skipIf(why)('PostgreSQL run events go with the step writes', () => {
  it("a turn's events ride its batch (flushSend); another instance still sees every event of the run, in order", async () => {
    const opts = pgOptions('pubgroups')
    const here = createDurably({ ...opts, jobs: { steps } })
    const there = createDurably({ ...opts, jobs: {} })
    open.push(here, there)
    await here.migrate()
    await there.migrate()
    const run = await here.jobs.steps.trigger({ n: 10 })
    const seen = []
    const reader = (async () => {
      for await (const e of there.subscribe(run.id)) seen.push(e)
    })()
    // The subscription is live before the run starts.
    const until = Date.now() + 10_000
    while (seen.length === 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 10))
    let published = 0
    const local = []
    for (const type of ['run:start', 'step:start', 'step:complete', 'run:complete']) {
      here.on(type, (e) => local.push(e.stepName ? `${e.type}:${e.stepName}` : e.type))
    }
    countCalls()
    let withBatch = 0
    let alone = 0
    const send = Engine.prototype.flushSend
    Engine.prototype.flushSend = function (ops, ids, jsons) {
      withBatch += ids ? ids.length : 0
      return send.call(this, ops, ids, jsons)
    }
    const pub = Engine.prototype.publishEvents
    Engine.prototype.publishEvents = function (ids, jsons) {
      alone += ids.length
      return pub.call(this, ids, jsons)
    }
    const encode = here._publish
    here._publish = (e) => {
      published++
      encode(e)
    }
    await here.start()
    await here.waitForRun(run.id, { timeout: 20_000 })
    await reader
    expect(calls.publishEvent).toBe(0)
    // 10 steps: at least a start, 10 step starts and completions, the end.
    expect(published).toBeGreaterThanOrEqual(22)
    // Every event was handed over once; the step events went with the writes.
    expect(withBatch + alone).toBe(published)
    expect(withBatch).toBeGreaterThanOrEqual(10)
    const remote = seen
      .slice(1)
      .filter((e) => ['run:start', 'step:start', 'step:complete', 'run:complete'].includes(e.type))
      .map((e) => (e.stepName ? `${e.type}:${e.stepName}` : e.type))
    expect(remote).toEqual(local)
    expect(remote.at(-1)).toBe('run:complete')
    expect(remote.filter((t) => t.startsWith('step:complete'))).toEqual(Array.from({ length: 10 }, (_, i) => `step:complete:s${i}`))
  })

  it('events handed over with a batch that fails whole are still published, in order', async () => {
    const opts = pgOptions('pubfail')
    const here = createDurably({ ...opts, jobs: { steps } })
    const there = createDurably({ ...opts, jobs: {} })
    open.push(here, there)
    await here.migrate()
    await there.migrate()
    const run = await here.jobs.steps.trigger({ n: 1 })
    const seen = []
    const reader = (async () => {
      for await (const e of there.subscribe(run.id)) seen.push(e)
    })()
    const until = Date.now() + 10_000
    while (seen.length === 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 10))
    // A log event with a bad batch (it cannot be parsed), then the run itself.
    const line = (message) => ({ type: 'log:write', runId: run.id, jobName: 'steps', labels: {}, timestamp: new Date().toISOString(), level: 'info', message, data: null, stepName: null })
    here._writer.event(run.id, require('../lib/values.js').encode(line('first'), 'event'))
    await expect(here._writer.push('{"bogus":')).rejects.toMatchObject({ code: 'INTERNAL' })
    // Nothing else is written meanwhile: the publisher sends it.
    const until2 = Date.now() + 10_000
    while (!seen.some((e) => e.type === 'log:write') && Date.now() < until2) await new Promise((r) => setTimeout(r, 10))
    expect(seen.filter((e) => e.type === 'log:write').map((e) => e.message)).toEqual(['first'])
    await here.start()
    await here.waitForRun(run.id, { timeout: 20_000 })
    await reader
    const types = seen.slice(1).map((e) => e.type)
    const at = types.indexOf('log:write')
    expect(at).toBeGreaterThanOrEqual(0)
    expect(seen[1 + at].message).toBe('first')
    // In order: before the run's own events, published after it.
    expect(at).toBeLessThan(types.indexOf('run:start'))
    expect(types.at(-1)).toBe('run:complete')
  })

  it('publishEvents refuses run ids and events of different lengths', async () => {
    const d = createDurably({ ...pgOptions('pubbad'), jobs: {} })
    open.push(d)
    await d.migrate()
    expect(() => d._engine.publishEvents(['a', 'b'], ['{}'])).toThrow(
      expect.objectContaining({ code: 'VALIDATION_ERROR', message: 'publishEvents: 2 run ids for 1 events' }),
    )
  })
})

describe('flushSend on SQLite', () => {
  it('is refused (INTERNAL): a SQLite batch must not wait for a lock on the runtime; the writer uses flush/flushAsync there', async () => {
    const d = createDurably({ path: ':memory:', jobs: { steps } })
    open.push(d)
    await d.migrate()
    expect(() => d._engine.flushSend('[]')).toThrow(expect.objectContaining({ code: 'INTERNAL', message: expect.stringMatching(/use flushAsync/) }))
    expect(d._writer.sendOnly).toBe(false)
  })
})
