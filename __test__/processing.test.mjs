// Serverless processing, waiting and lifecycle mistakes (issue 12): processOne /
// processUntilIdle recover a crashed worker's run and apply retainRuns;
// triggerAndWait misses no early event; a wait with no worker says so; a
// forgotten await fails the run without crashing the process; close() is
// idempotent and releases every file handle before it resolves.
import { afterEach, describe, expect, it } from 'vitest'
import fs from 'node:fs'
import path from 'node:path'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const { createDurably, defineJob, TimeoutError, ValidationError } = require('..')
const { makeDurably, closeAll, tempDir, tempDb, testStore, onPostgres, spawnNode, until, sleep, sql } = require('./helpers.js')

afterEach(closeAll)

const FIXTURES = path.join(import.meta.dirname, 'fixtures')

/** The job of fixtures/crash-job.js, resumed here (step-3 no longer hangs). */
const crashy = defineJob({
  name: 'crashy',
  run: async (ctx, input) => {
    const a = await ctx.run('step-1', () => input.n + 1)
    const b = await ctx.run('step-2', () => a * 2)
    const c = await ctx.run('step-3', () => b + 100)
    return { a, b, c }
  },
})

/** Starts fixtures/crash-job.js, SIGKILLs it in step 3: its run stays `running` with a dying heartbeat. */
async function crashedRun() {
  const dir = tempDir()
  const db = path.join(dir, 'crash.db')
  const child = spawnNode(path.join(FIXTURES, 'crash-job.js'), [db, path.join(dir, 'side.log')], { env: { TRIGGER: '1' } })
  await until(() => child.lines.includes('in-step-3'), { timeout: 15_000, what: 'step 3 to start' })
  child.child.kill('SIGKILL')
  await child.exited
  const runId = child.lines.find((l) => l.startsWith('triggered ')).slice(10)
  expect(sql(db, 'SELECT status FROM runs')).toEqual([['running']])
  return { db, runId }
}

const openFds = (file) =>
  fs.readdirSync('/proc/self/fd').flatMap((fd) => {
    try {
      const target = fs.readlinkSync(`/proc/self/fd/${fd}`)
      return target.startsWith(file) ? [target] : []
    } catch {
      return []
    }
  })

describe('processOne / processUntilIdle without the worker loop', () => {
  // SQLite only (a child process SIGKILLed on its own file); PostgreSQL's crash recovery: __test__/fault/pg.test.mjs.
  it.skipIf(onPostgres)('processOne recovers a run left running by a SIGKILLed process and finishes it', async () => {
    const { db, runId } = await crashedRun()
    // The child's staleThreshold is 500 ms and its heartbeat every 100 ms.
    const d = makeDurably({ path: db, jobs: { crashy }, heartbeatInterval: 100, staleThreshold: 500 })
    await sleep(700)
    expect(await d.processOne()).toBe(true)
    const run = await d.getRun(runId)
    expect(run.status).toBe('completed')
    expect(run.output).toEqual({ a: 2, b: 4, c: 104 })
    expect(await d.processOne()).toBe(false)
  })

  // SQLite only, as above.
  it.skipIf(onPostgres)('processUntilIdle recovers it too, honours maxRuns, and applies retainRuns before claiming', async () => {
    const { db, runId } = await crashedRun()
    const noop = defineJob({ name: 'noop', run: async (ctx, n) => n })
    const d = makeDurably({ path: db, jobs: { crashy, noop }, heartbeatInterval: 100, staleThreshold: 500, retainRuns: '1s' })
    for (let i = 0; i < 4; i++) await d.jobs.noop.trigger(i)
    await sleep(700)
    // The recovered run is the oldest: it goes first.
    expect(await d.processUntilIdle({ maxRuns: 2 })).toBe(2)
    expect((await d.getRun(runId)).status).toBe('completed')
    expect((await d.getRuns({ status: 'pending' })).length).toBe(3)
    expect(await d.processUntilIdle()).toBe(3)
    expect((await d.getRuns()).length).toBe(5)
    // Older than retainRuns: purged by the next call before it claims.
    await sleep(1100)
    const fresh = await d.jobs.noop.trigger(99)
    expect(await d.processOne()).toBe(true)
    expect((await d.getRuns()).map((r) => r.id)).toEqual([fresh.id])
    await expect(d.processUntilIdle({ maxRuns: 0 })).rejects.toBeInstanceOf(ValidationError)
    await expect(d.processUntilIdle({ max: 1 })).rejects.toThrow(/unknown option max/)
  })
})

describe('triggerAndWait / waitForRun', () => {
  it('never misses a log or progress emitted at the very start of the job (200 tries)', async () => {
    const job = defineJob({
      name: 'early',
      run: async (ctx, i) => {
        ctx.log.info(`first ${i}`)
        ctx.progress(1, 2)
        await ctx.run('s', () => i)
        return i
      },
    })
    const d = makeDurably({ jobs: { job } })
    await d.init()
    const missed = []
    for (let i = 0; i < 200; i++) {
      const logs = []
      const progress = []
      const done = await d.jobs.job.triggerAndWait(i, {
        timeout: 10_000,
        onLog: (e) => logs.push(e.message),
        onProgress: (p) => progress.push(p.current),
      })
      expect(done.output).toBe(i)
      if (logs[0] !== `first ${i}` || progress[0] !== 1) missed.push(i)
    }
    expect(missed).toEqual([])
  })

  it('with no started worker here, the TimeoutError says so (and waiting still works for another process)', async () => {
    const job = defineJob({ name: 'elsewhere', run: async () => 'ok' })
    const store = testStore()
    const d = makeDurably({ ...store, jobs: { job } })
    await d.migrate()
    const err = await d.jobs.job.triggerAndWait(undefined, { timeout: 100 }).catch((e) => e)
    expect(err).toBeInstanceOf(TimeoutError)
    expect(err.message).toMatch(/this process has no started worker for job 'elsewhere'/)

    // Started here, but the run takes longer than the wait: no such note.
    const slow = defineJob({ name: 'slow', run: async (ctx) => ctx.run('s', () => sleep(400)) })
    const e = makeDurably({ jobs: { slow } })
    await e.init()
    const err2 = await e.jobs.slow.triggerAndWait(undefined, { timeout: 50 }).catch((x) => x)
    expect(err2).toBeInstanceOf(TimeoutError)
    expect(err2.message).not.toMatch(/no started worker/)

    // Another instance on the same store executes the pending run: the wait resolves.
    const run = (await d.getRuns({ status: 'pending' }))[0]
    const waiting = d.waitForRun(run.id, { timeout: 10_000 })
    const other = makeDurably({ ...store, jobs: { job } })
    await other.init()
    expect((await waiting).output).toBe('ok')
  })
})

describe('mistakes that must not crash the process', () => {
  // SQLite only: a child process on its own file (the JS path it checks is the same on PostgreSQL).
  it.skipIf(onPostgres)('a job returning while a step still runs (missing await) fails the run naming the step; nothing unhandled', async () => {
    const db = tempDb()
    const p = spawnNode(path.join(FIXTURES, 'forgotten-await.js'), [db])
    const { code, stderr } = await p.exited
    expect({ code, stderr }).toEqual({ code: 0, stderr: '' })
    const msg = "job returned while step 'send-email' was still running — missing await?"
    expect(p.lines).toEqual([`failed resolves ${msg} send-email`, `failed rejects ${msg} send-email`, 'closed'])
    expect(sql(db, 'SELECT job_name, status, error FROM runs ORDER BY created_at, id')).toEqual([
      ['resolves', 'failed', msg],
      ['rejects', 'failed', msg],
    ])
    // The orphaned steps' results were not stored.
    expect(sql(db, "SELECT name FROM steps WHERE name = 'send-email'")).toEqual([])
  })

  it('ctx.run with a non-function says what it got', async () => {
    const job = defineJob({ name: 'bad-step', run: async (ctx) => ctx.run('a', 42) })
    const d = makeDurably({ jobs: { job } })
    await d.init()
    const err = await d.jobs.job.triggerAndWait(undefined, { timeout: 10_000 }).catch((e) => e)
    expect(err.message).toBe("ctx.run('a'): second argument must be a function (got number)")
  })
})

describe('close()', () => {
  // SQLite only: counts the open handles of the database file.
  it.skipIf(onPostgres)('concurrent close() calls all resolve, and every file handle is released when they do', async () => {
    for (let round = 0; round < 5; round++) {
      const db = tempDb()
      const job = defineJob({ name: 'busy', run: async (ctx) => ctx.run('s', () => sleep(30)) })
      const d = createDurably({ path: db, jobs: { job }, pollingInterval: 50 })
      await d.init()
      for (let i = 0; i < 3; i++) await d.jobs.job.trigger(undefined)
      await sleep(20)
      expect(openFds(db).length).toBeGreaterThan(0)
      const results = await Promise.allSettled([d.close(), d.close(), d.close({ timeout: 5000 })])
      expect(results.map((r) => r.status)).toEqual(['fulfilled', 'fulfilled', 'fulfilled'])
      expect(openFds(db)).toEqual([])
      await expect(d.close()).resolves.toBeUndefined()
      await expect(d.getRuns()).rejects.toMatchObject({ code: 'CLOSED' })
    }
  })
})
