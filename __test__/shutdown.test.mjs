// Shutdown never hangs (issue 21): stop({ abort }) / stop({ timeout }) /
// close() with steps that ignore their AbortSignal, in-process and across
// processes.
import { afterEach, describe, expect, it } from 'vitest'
import fs from 'node:fs'
import path from 'node:path'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const { createDurably, defineJob } = require('..')
const { makeDurably, closeAll, testStore, storeArg, storeSql, onPostgres, spawnNode, until, sleep } = require('./helpers.js')

afterEach(closeAll)

const CHILD = path.join(import.meta.dirname, 'fixtures', 'shutdown-child.js')

/** A job whose first step ignores its signal and settles after `ms` (a plain timer). */
function ignoringJob(seen, ms) {
  return defineJob({
    name: 'ignoring',
    run: async (ctx) => {
      seen.push('job-start')
      const v = await ctx.run('slow', (signal) => {
        signal.addEventListener('abort', () => seen.push(`signal:${signal.reason.code}`))
        return new Promise((resolve) =>
          setTimeout(() => {
            seen.push('slow-settled')
            resolve('late')
          }, ms),
        )
      })
      seen.push('job-went-on')
      await ctx.run('after', () => seen.push('after-step'))
      return v
    },
  })
}

/** Records every event after `from()` is true. */
function recordEvents(d) {
  const events = []
  for (const t of ['run:complete', 'run:fail', 'step:complete', 'step:fail', 'step:cancel', 'log:write', 'worker:error']) {
    d.on(t, (e) => events.push(t === 'worker:error' ? `${t} ${e.error && e.error.message}` : `${t} ${e.stepName ?? ''}`))
  }
  return events
}

const openFds = (file) => {
  const out = []
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    try {
      const target = fs.readlinkSync(`/proc/self/fd/${fd}`)
      if (target.startsWith(file)) out.push(target)
    } catch {
      // closed while listing
    }
  }
  return out
}

describe('stop({ abort: true }) with a step that ignores its signal', () => {
  it('resolves at once, hands the run back with its lease released; the late result is dropped', async () => {
    const seen = []
    const store = testStore()
    const d = makeDurably({ ...store, jobs: { j: ignoringJob(seen, 1500) } })
    const events = recordEvents(d)
    await d.init()
    const started = new Promise((r) => d.on('step:start', (e) => e.stepName === 'slow' && r()))
    const run = await d.jobs.j.trigger(undefined)
    await started

    const t0 = performance.now()
    await d.stop({ abort: true })
    const took = performance.now() - t0
    expect(took).toBeLessThan(1000)
    expect(seen).toEqual(['job-start', 'signal:STOPPED'])
    expect(storeSql(store, `SELECT status, lease_owner FROM runs WHERE id = '${run.id}'`)).toEqual([['pending', null]])

    // The step settles later: nothing stored, the job function does not go on.
    await until(() => seen.includes('slow-settled'), { what: 'the ignored timer' })
    await sleep(100)
    expect(seen).toEqual(['job-start', 'signal:STOPPED', 'slow-settled'])
    expect(storeSql(store, `SELECT COUNT(*) FROM steps WHERE run_id = '${run.id}'`)).toEqual([[0]])
    expect((await d.getRun(run.id)).status).toBe('pending')
    expect(events).toEqual([])
  })

  it('the next start in this process resumes the run at once and completes it', async () => {
    const seen = []
    let slowMs = 2000
    const job = defineJob({
      name: 'again',
      run: async (ctx) => {
        const v = await ctx.run('slow', () => new Promise((r) => setTimeout(() => r(`took ${slowMs}`), slowMs)))
        seen.push(`went-on ${v}`)
        return v
      },
    })
    const d = makeDurably({ jobs: { job }, staleThreshold: 30_000, heartbeatInterval: 1000 })
    await d.init()
    const started = new Promise((r) => d.on('step:start', r))
    const run = await d.jobs.job.trigger(undefined)
    await started
    const s0 = performance.now()
    await d.stop({ abort: true })
    expect(performance.now() - s0).toBeLessThan(1000)
    slowMs = 10
    const t0 = performance.now()
    await d.start()
    const done = await d.waitForRun(run.id, { timeout: 10_000 })
    expect(performance.now() - t0).toBeLessThan(3000) // staleThreshold is 30 s
    expect(done.output).toBe('took 10')
    // The abandoned execution's step settles later and is dropped.
    await sleep(2200)
    expect(seen).toEqual(['went-on took 10'])
    expect((await d.getSteps(run.id)).map((s) => [s.name, s.output])).toEqual([['slow', 'took 10']])
    expect((await d.getRun(run.id)).output).toBe('took 10')
  })

  it('a later ctx.run of the abandoned job, and its logs and progress, are ignored', async () => {
    const seen = []
    let release
    const job = defineJob({
      name: 'outside-steps',
      run: async (ctx) => {
        await ctx.run('a', () => 1)
        await new Promise((r) => (release = r)) // awaits outside any step, ignoring the signal
        ctx.log.info('late log')
        ctx.progress(5, 10)
        seen.push('calling b')
        await ctx.run('b', () => seen.push('b ran'))
        seen.push('after b')
      },
    })
    const store = testStore()
    const d = makeDurably({ ...store, jobs: { job } })
    const events = recordEvents(d)
    await d.init()
    const run = await d.jobs.job.trigger(undefined)
    await until(() => release, { what: 'the job to wait' })
    const before = events.length
    await d.stop({ abort: true })
    release()
    await sleep(200)
    expect(seen).toEqual(['calling b'])
    expect(events.slice(before)).toEqual([])
    expect(storeSql(store, `SELECT status, progress FROM runs WHERE id = '${run.id}'`)).toEqual([['pending', null]])
    expect(storeSql(store, `SELECT name FROM steps WHERE run_id = '${run.id}'`)).toEqual([['a']])
  })
})

describe('stop({ timeout })', () => {
  it('lets a quick job finish, then aborts the one that ignores its signal', async () => {
    const seen = []
    const quick = defineJob({
      name: 'quick',
      run: async (ctx) => ctx.run('q', () => new Promise((r) => setTimeout(() => r('done'), 100))),
    })
    const store = testStore()
    const d = makeDurably({ ...store, jobs: { quick, slow: ignoringJob(seen, 3000) }, maxConcurrentRuns: 2 })
    await d.init()
    const both = new Promise((resolve) => {
      const names = new Set()
      d.on('step:start', (e) => {
        names.add(e.stepName)
        if (names.size === 2) resolve()
      })
    })
    const q = await d.jobs.quick.trigger(undefined)
    const s = await d.jobs.slow.trigger(undefined)
    await both
    const t0 = performance.now()
    await d.stop({ timeout: 400 })
    const took = performance.now() - t0
    expect(took).toBeGreaterThanOrEqual(390)
    expect(took).toBeLessThan(1500)
    expect((await d.getRun(q.id)).status).toBe('completed')
    expect(storeSql(store, `SELECT status, lease_owner FROM runs WHERE id = '${s.id}'`)).toEqual([['pending', null]])
    expect(seen).toContain('signal:STOPPED')
  })

  it('resolves as soon as the jobs finish when that is before the timeout', async () => {
    const job = defineJob({ name: 'short', run: async (ctx) => ctx.run('s', () => new Promise((r) => setTimeout(r, 100))) })
    const d = makeDurably({ jobs: { job } })
    await d.init()
    const started = new Promise((r) => d.on('step:start', r))
    const run = await d.jobs.job.trigger(undefined)
    await started
    const t0 = performance.now()
    await d.stop({ timeout: 20_000 })
    expect(performance.now() - t0).toBeLessThan(5000)
    expect((await d.getRun(run.id)).status).toBe('completed')
  })

  it('bad stop/close options are refused with ValidationError', async () => {
    const d = makeDurably()
    await expect(d.stop({ timeout: -1 })).rejects.toMatchObject({ code: 'VALIDATION_ERROR', message: /timeout/ })
    await expect(d.stop({ abort: 'yes' })).rejects.toMatchObject({ code: 'VALIDATION_ERROR', message: /abort/ })
    await expect(d.close({ wait: true })).rejects.toMatchObject({ code: 'VALIDATION_ERROR', message: /wait/ })
  })
})

describe('close()', () => {
  it('close({ abort: true }) with a hung step resolves at once with every file handle released', async () => {
    const seen = []
    const store = testStore()
    const d = createDurably({ ...store, jobs: { j: ignoringJob(seen, 1000) } })
    await d.init()
    const started = new Promise((r) => d.on('step:start', r))
    const run = await d.jobs.j.trigger(undefined)
    await started
    // (file handles: SQLite only; on PostgreSQL the rest of the case applies)
    if (!onPostgres) expect(openFds(store.path).length).toBeGreaterThan(0)
    const t0 = performance.now()
    await d.close({ abort: true })
    expect(performance.now() - t0).toBeLessThan(1000)
    if (!onPostgres) expect(openFds(store.path)).toEqual([])
    expect(storeSql(store, `SELECT status, lease_owner FROM runs WHERE id = '${run.id}'`)).toEqual([['pending', null]])
    await until(() => seen.includes('slow-settled'), { what: 'the ignored timer' })
    await sleep(50)
    expect(seen).toEqual(['job-start', 'signal:STOPPED', 'slow-settled'])
  })

  it('a second close({ abort: true }) shortens a graceful close waiting for a hung step; both resolve', async () => {
    const seen = []
    const d = createDurably({ ...testStore(), jobs: { j: ignoringJob(seen, 1500) } })
    await d.init()
    const started = new Promise((r) => d.on('step:start', r))
    await d.jobs.j.trigger(undefined)
    await started
    const t0 = performance.now()
    const graceful = d.close()
    await sleep(50)
    await Promise.all([graceful, d.close({ abort: true }), d.close()])
    expect(performance.now() - t0).toBeLessThan(1000)
    await until(() => seen.includes('slow-settled'), { what: 'the ignored timer' })
  })
})

describe('across processes', () => {
  it('a child stopped with abort while a step ignores its signal exits at once; the next process resumes without waiting for staleThreshold', async () => {
    const store = testStore()
    let runId = null
    const a = spawnNode(CHILD, [storeArg(store), 'hang'], {
      onLine: (l) => {
        if (l.startsWith('step ')) runId = l.slice(5)
      },
    })
    await until(() => runId, { timeout: 15_000, what: 'the step to start' })
    const t0 = performance.now()
    a.child.kill('SIGTERM')
    const exit = await a.exited
    const exitMs = performance.now() - t0
    expect(exit.code, exit.stderr).toBe(0)
    const stopped = a.lines.find((l) => l.startsWith('stopped '))
    expect(Number(stopped.split(' ')[1])).toBeLessThan(1000)
    expect(exitMs).toBeLessThan(5000)
    expect(a.lines).not.toContain('after-step')
    expect(storeSql(store, `SELECT status, lease_owner FROM runs WHERE id = '${runId}'`)).toEqual([['pending', null]])

    const b = spawnNode(CHILD, [storeArg(store), 'resume'])
    const bExit = await b.exited
    expect(bExit.code, bExit.stderr).toBe(0)
    const startedAfter = Number(b.lines.find((l) => l.startsWith('started-after ')).split(' ')[1])
    expect(startedAfter).toBeLessThan(5000) // staleThreshold is 30 000 ms
    expect(b.lines).toContain('completed resumed')
    expect(storeSql(store, `SELECT status, output FROM runs WHERE id = '${runId}'`, { json: [1] })).toEqual([['completed', 'resumed']])
  })

  it('after close({ abort: true }) nothing native keeps the process alive', async () => {
    const store = testStore()
    let started = false
    const c = spawnNode(CHILD, [storeArg(store), 'unref'], { onLine: (l) => l.startsWith('step ') && (started = true) })
    await until(() => started, { timeout: 15_000, what: 'the step to start' })
    c.child.kill('SIGTERM')
    const exit = await Promise.race([c.exited, sleep(5000).then(() => 'still alive')])
    if (exit === 'still alive') c.child.kill('SIGKILL')
    expect(exit).not.toBe('still alive')
    expect(exit.code, exit.stderr).toBe(0)
    expect(Number(c.lines.find((l) => l.startsWith('stopped ')).split(' ')[1])).toBeLessThan(1000)
    expect(storeSql(store, 'SELECT status, lease_owner FROM runs')).toEqual([['pending', null]])
  })
})
