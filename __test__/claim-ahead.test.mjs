// Runs claimed ahead (SQLite): while runs end quickly, a flush that ends runs
// claims up to maxConcurrentRuns more; such a run waits in this worker until
// a job function ends, and its first write then shares the commit of that
// run's completion (one commit a one-step run instead of two). These cases
// check the commit count, that no more than maxConcurrentRuns execute, and
// that a run claimed ahead never stays away from other workers: handed back
// after 20 ms, at close(), and never claimed ahead for a job with a timeout.
import { afterEach, describe, expect, it } from 'vitest'
import { defineJob } from '../index.js'
import helpers from './helpers.js'

const { makeDurably, closeAll, tempDb, until, sleep } = helpers

afterEach(closeAll)

/** Counts the instance's commits of run writes (the writer's native flushes). */
function countFlushes(d) {
  const e = d._engine
  const counts = { flushes: 0 }
  const flush = e.flush.bind(e)
  const flushAsync = e.flushAsync.bind(e)
  e.flush = (text) => {
    const r = flush(text)
    if (r !== null) counts.flushes++
    return r
  }
  e.flushAsync = (text) => {
    counts.flushes++
    return flushAsync(text)
  }
  return counts
}

/** A one-step job recording which instance executed which run, and how many executed at once. */
function quickJob(seen, name = 'quick') {
  return defineJob({
    name,
    run: async (ctx, input) => {
      seen.executing++
      seen.most = Math.max(seen.most, seen.executing)
      seen.by.push([ctx.runId, input?.who ?? seen.who])
      await ctx.run('only', () => 1)
      seen.executing--
      return 1
    },
  })
}

/** Records the runs the instance's runner claimed ahead (their ids, in order); `then(n)` after each. */
function aheadOf(d, then = () => {}) {
  const ids = []
  const runner = d._runner
  const waitForSlot = runner.waitForSlot.bind(runner)
  runner.waitForSlot = (r, tags) => {
    ids.push(r.id)
    waitForSlot(r, tags)
    then(ids.length)
  }
  return ids
}

function tally() {
  return { executing: 0, most: 0, by: [], who: 'w1' }
}

describe.skipIf(helpers.onPostgres)('runs claimed ahead (SQLite)', () => {
  it('a stream of one-step runs (mc 1): each run is about one commit, one job function at a time, each run once', async () => {
    const seen = tally()
    const d = makeDurably({ jobs: { quick: quickJob(seen) }, maxConcurrentRuns: 1 })
    await d.migrate()
    await d.jobs.quick.batchTrigger(Array.from({ length: 60 }, () => ({ input: {} })))
    const counts = countFlushes(d)
    let done = 0
    d.on('run:complete', () => done++)
    await d.start()
    await until(() => done === 60, { what: '60 runs completed' })
    // Without claiming ahead: a step's commit, then the completion's (with the next claim): 120. With it ~61
    // (margin: a run slower than 20 ms on a loaded machine turns claiming ahead off until the next quick one).
    expect(counts.flushes).toBeLessThanOrEqual(90)
    expect(seen.most).toBe(1)
    expect(new Set(seen.by.map(([id]) => id)).size).toBe(60)
    expect(seen.by).toHaveLength(60)
    expect((await d.getRuns({ status: 'completed', limit: 100 })).length).toBe(60)
  })

  it('maxConcurrentRuns 4: never more than 4 job functions at once while runs are claimed ahead', async () => {
    const seen = tally()
    const d = makeDurably({ jobs: { quick: quickJob(seen) }, maxConcurrentRuns: 4 })
    await d.migrate()
    await d.jobs.quick.batchTrigger(Array.from({ length: 200 }, () => ({ input: {} })))
    const ahead = aheadOf(d)
    let done = 0
    d.on('run:complete', () => done++)
    await d.start()
    await until(() => done === 200, { what: '200 runs completed' })
    expect(seen.most).toBe(4)
    expect(ahead.length).toBeGreaterThan(50) // most runs were claimed ahead (~190 on a quiet machine)
    expect(seen.by).toHaveLength(200)
    expect(new Set(seen.by.map(([id]) => id)).size).toBe(200)
  })

  it('a run claimed ahead behind a long one goes back to pending within ~20 ms, and another worker executes it meanwhile', async () => {
    const path = tempDb()
    const seen = tally()
    let openGate
    const gate = new Promise((r) => (openGate = r))
    const long = defineJob({
      name: 'long',
      run: async (ctx) => {
        await ctx.run('wait', () => gate)
        return 'long'
      },
    })
    const w1 = makeDurably({ path, jobs: { quick: quickJob(seen), long }, maxConcurrentRuns: 1 })
    await w1.migrate()
    // Quick runs (claiming ahead turns on), the long run, then the one that will be claimed ahead.
    for (let i = 0; i < 3; i++) await w1.jobs.quick.trigger({ who: 'w1' })
    const longRun = await w1.jobs.long.trigger({})
    const behind = await w1.jobs.quick.trigger({ who: 'w2' })
    const ahead = aheadOf(w1)
    await w1.start()
    // Claimed ahead in the commit that ended the last quick run, while the long one runs:
    await until(() => ahead.includes(behind.id), { what: 'the run claimed ahead' })
    expect(seen.by.map(([id]) => id)).not.toContain(behind.id)
    // Handed back (long before staleThreshold) and not claimed ahead again, while the long run goes on.
    await until(async () => (await w1.getRun(behind.id)).status === 'pending', { timeout: 2000, what: 'the run handed back' })
    await sleep(100)
    expect((await w1.getRun(behind.id)).status).toBe('pending')
    expect(ahead.filter((id) => id === behind.id)).toHaveLength(1)
    expect((await w1.getRun(longRun.id)).status).toBe('running')
    const w2 = makeDurably({ path, jobs: { quick: quickJob(seen), long }, maxConcurrentRuns: 1 })
    await w2.start()
    await until(async () => (await w2.getRun(behind.id)).status === 'completed', { what: 'the second worker ran it' })
    expect((await w2.getRun(longRun.id)).status).toBe('running')
    openGate()
    await until(async () => (await w1.getRun(longRun.id)).status === 'completed', { what: 'the long run completed' })
    expect(seen.by.filter(([id]) => id === behind.id)).toEqual([[behind.id, 'w2']])
    expect(seen.by).toHaveLength(4)
  })

  it('close() while runs are claimed ahead: they go back to pending, none left running, each run executed once in all', async () => {
    const path = tempDb()
    const seen = tally()
    const d = makeDurably({ path, jobs: { quick: quickJob(seen) }, maxConcurrentRuns: 2 })
    await d.migrate()
    await d.jobs.quick.batchTrigger(Array.from({ length: 400 }, () => ({ input: {} })))
    let closing = null
    let queuedAtClose = 0
    aheadOf(d, (n) => {
      if (n !== 20) return
      queuedAtClose = d._runner.queue.length
      closing = d.close() // right after the 20th run claimed ahead: it waits for a slot
    })
    await d.start()
    await until(() => closing !== null, { what: '20 runs claimed ahead' })
    await closing
    expect(queuedAtClose).toBeGreaterThan(0)
    const check = makeDurably({ path, jobs: { quick: quickJob(seen) } })
    expect(await check.getRuns({ status: 'running' })).toEqual([])
    const completed = (await check.getRuns({ status: 'completed', limit: 1000 })).length
    const pending = (await check.getRuns({ status: 'pending', limit: 1000 })).length
    expect(completed + pending).toBe(400)
    expect(pending).toBeGreaterThan(0)
    expect(await check.processUntilIdle()).toBe(pending)
    expect(new Set(seen.by.map(([id]) => id)).size).toBe(400)
    expect(seen.by).toHaveLength(400)
  })

  it('no run is claimed ahead while a registered job has a timeout (it counts from the claim)', async () => {
    const seen = tally()
    const timed = defineJob({ name: 'timed', timeout: 60_000, run: async () => 1 })
    const d = makeDurably({ jobs: { quick: quickJob(seen), timed }, maxConcurrentRuns: 1 })
    await d.migrate()
    await d.jobs.quick.batchTrigger(Array.from({ length: 60 }, () => ({ input: {} })))
    const counts = countFlushes(d)
    const ahead = aheadOf(d)
    let done = 0
    d.on('run:complete', () => done++)
    await d.start()
    await until(() => done === 60, { what: '60 runs completed' })
    expect(ahead).toEqual([])
    expect(counts.flushes).toBeGreaterThanOrEqual(119) // a step's commit and a completion's, each run
  })
})
