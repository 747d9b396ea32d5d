// The public API's semantics on every store (issue 16): each case runs once
// per backend from __test__/pg.js backends() — SQLite always, PostgreSQL as
// soon as the addon can open it and a server is configured (each instance on
// a fresh schema, dropped after). Same assertions, nothing backend-specific.
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const { createDurably, defineJob, ConflictError, RunFailedError } = require('..')
const { backends, dropSchemas } = require('./pg.js')
const { until } = require('./helpers.js')

const open = new Set()
afterEach(async () => {
  const list = [...open]
  open.clear()
  await Promise.allSettled(list.map((d) => d.close()))
})
afterAll(() => dropSchemas())

const FAST = { pollingInterval: 50, heartbeatInterval: 100, staleThreshold: 1000 }

describe.each(backends())('$name', ({ name, options }) => {
  const make = (extra = {}) => {
    const d = createDurably({ ...options(name), ...FAST, ...extra })
    open.add(d)
    return d
  }

  it('steps run once each and a completed run carries its output and steps', async () => {
    const calls = []
    const job = defineJob({
      name: 'add',
      run: async (ctx, input) => {
        const a = await ctx.run('a', () => (calls.push('a'), input.x + 1))
        const b = await ctx.run('b', () => (calls.push('b'), a * 2))
        return { b }
      },
    })
    const d = make({ jobs: { job } })
    await d.start()
    const run = await d.jobs.job.triggerAndWait({ x: 1 }, { timeout: 20_000 })
    expect(run.output).toEqual({ b: 4 })
    expect(calls).toEqual(['a', 'b'])
    const steps = await d.getSteps(run.id)
    expect(steps.map((s) => [s.name, s.status, s.output])).toEqual([
      ['a', 'completed', 2],
      ['b', 'completed', 4],
    ])
  })

  it('an idempotency key gives one run; a failed run is retried to completion', async () => {
    let fail = true
    const job = defineJob({
      name: 'flaky',
      run: async (ctx) => {
        await ctx.run('s', () => {
          if (fail) throw new Error('boom')
          return 1
        })
        return 'ok'
      },
    })
    const d = make({ jobs: { job } })
    const a = await d.jobs.job.trigger(undefined, { idempotencyKey: 'k' })
    const b = await d.jobs.job.trigger(undefined, { idempotencyKey: 'k' })
    expect(b.id).toBe(a.id)
    await d.start()
    await expect(d.waitForRun(a.id, { timeout: 20_000 })).rejects.toBeInstanceOf(RunFailedError)
    await expect(d.retrigger(a.id).then((r) => r.id)).resolves.not.toBe(a.id)
    fail = false
    await d.retry(a.id)
    const done = await d.waitForRun(a.id, { timeout: 20_000 })
    expect(done.status).toBe('completed')
    expect(done.output).toBe('ok')
  })

  it('runs sharing a concurrency key never overlap and run in creation order', async () => {
    const log = []
    let inside = 0
    let overlap = 0
    const job = defineJob({
      name: 'keyed',
      run: async (ctx, input) => {
        inside++
        if (inside > 1) overlap++
        log.push(input.i)
        await ctx.run('wait', () => new Promise((r) => setTimeout(r, 5)))
        inside--
      },
    })
    const d = make({ jobs: { job }, maxConcurrentRuns: 4 })
    const runs = []
    for (let i = 0; i < 8; i++) runs.push(await d.jobs.job.trigger({ i }, { concurrencyKey: 'one' }))
    await d.start()
    for (const r of runs) await d.waitForRun(r.id, { timeout: 20_000 })
    expect(overlap).toBe(0)
    expect(log).toEqual([0, 1, 2, 3, 4, 5, 6, 7])
  })

  it('cancel aborts a running run; cancel of a terminal run is a ConflictError; deleteRun removes it', async () => {
    let started
    const startedP = new Promise((r) => (started = r))
    const job = defineJob({
      name: 'long',
      run: async (ctx) => {
        await ctx.run('forever', () => {
          started()
          return new Promise((_, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason)))
        })
      },
    })
    const d = make({ jobs: { job } })
    await d.start()
    const run = await d.jobs.job.trigger(undefined)
    await startedP
    await d.cancel(run.id)
    await until(async () => (await d.getRun(run.id)).status === 'cancelled', { timeout: 20_000, what: 'the run cancelled' })
    await expect(d.cancel(run.id)).rejects.toBeInstanceOf(ConflictError)
    await d.deleteRun(run.id)
    expect(await d.getRun(run.id)).toBeNull()
  })

  it('a run executed by another instance on the same store: waitForRun resolves, subscribe ends with its end', async () => {
    const job = defineJob({
      name: 'elsewhere',
      run: async (ctx, input) => {
        await ctx.run('one', () => input.n)
        return input.n * 2
      },
    })
    const store = options(name) // one store, two instances (two "machines")
    const worker = make({ ...store, jobs: { job } })
    const watcher = make({ ...store, jobs: { job } }) // never started
    const run = await watcher.jobs.job.trigger({ n: 21 })
    const types = []
    const seen = (async () => {
      for await (const e of watcher.subscribe(run.id)) types.push(e.type)
    })()
    await worker.start()
    const done = await watcher.waitForRun(run.id, { timeout: 20_000 })
    expect(done.status).toBe('completed')
    expect(done.output).toBe(42)
    await seen
    expect(types[0]).toBe('run:snapshot')
    expect(types.at(-1)).toMatch(/^run:(snapshot|complete)$/)
  })

  it('getRuns filters by status, job and labels', async () => {
    const a = defineJob({ name: 'a', run: async () => 1 })
    const b = defineJob({ name: 'b', run: async () => 2 })
    const d = make({ jobs: { a, b } })
    await d.jobs.a.trigger(undefined, { labels: { team: 'x' } })
    await d.jobs.b.trigger(undefined, { labels: { team: 'y' } })
    await d.jobs.b.trigger(undefined, { labels: { team: 'x' } })
    expect((await d.getRuns({ jobName: 'b' })).length).toBe(2)
    expect((await d.getRuns({ labels: { team: 'x' } })).map((r) => r.jobName).sort()).toEqual(['a', 'b'])
    expect((await d.getRuns({ status: 'pending' })).length).toBe(3)
    expect((await d.getRuns({ status: 'completed' })).length).toBe(0)
  })
})
