// Issue 5, fault suite 5: SQLITE_BUSY.
//
// While a worker process executes multi-step runs, another process (Python's
// sqlite3) takes the write lock with BEGIN EXCLUSIVE and keeps it for much
// longer than the worker's busyTimeout. Checked: the worker reports
// worker:error DB_BUSY (or a step rejects with DB_BUSY), a trigger in another
// process rejects with DB_BUSY and writes nothing, reads keep working (WAL),
// no process crashes, no run is left half-written; once the lock is released
// every run completes with the right output, each step committed once.
import path from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { createDurably, defineJob, DurablyError } from '../../index.js'
import helpers from '../helpers.js'
import { AUDIT_SQL, exitWithin, fixture, hasPython, holdWriteLock, lineWithin, sql } from './util.mjs'

const { tempDir, spawnNode, until, sleep } = helpers

const RUNS = 40
const STEPS = 6
const BUSY_TIMEOUT = 200

const children = new Set()
afterAll(() => {
  for (const c of children) c.kill('SIGKILL')
})

const job = defineJob({
  name: 'fault-busy',
  run: async () => {
    throw new Error('the driver never executes runs')
  },
})

describe('SQLITE_BUSY: another process holds the write lock', () => {
  for (const [label, lockMs, stale] of [
    ['shorter than staleThreshold', 1500, 2000],
    ['longer than staleThreshold', 1500, 600],
    ['just longer than busyTimeout', 380, 2000],
  ]) {
    it(`for ${lockMs} ms (busyTimeout ${BUSY_TIMEOUT} ms, ${label}): DB_BUSY reported, nothing lost or half-written`, async (ctx) => {
      if (!hasPython()) {
        console.log('fault/busy SKIP: python3 with sqlite3 is needed to hold the lock from another process')
        ctx.skip('python3 missing')
        return
      }
      const dir = tempDir('durably-fault-busy-')
      const db = path.join(dir, 'busy.db')
      const d = createDurably({ path: db, jobs: { job }, busyTimeout: BUSY_TIMEOUT })
      await d.migrate()
      sql(db, AUDIT_SQL, { script: true })
      await d.jobs.job.batchTrigger(Array.from({ length: RUNS }, (_, k) => ({ input: { k } })))

      const w = spawnNode(fixture('fault-worker.js'), [path.join(dir, 'side.log')], {
        env: {
          FAULT_DB: db,
          FAULT_JOB: 'fault-busy',
          FAULT_STEPS: String(STEPS),
          FAULT_STEP_MS: '15',
          FAULT_FSYNC: '0',
          FAULT_PRINT_RUNS: '1',
          FAULT_CONCURRENCY: '2',
          FAULT_HEARTBEAT: '100',
          FAULT_STALE: String(stale),
          FAULT_BUSY_TIMEOUT: String(BUSY_TIMEOUT),
        },
      })
      children.add(w.child)
      const completes = () => w.lines.filter((l) => l.startsWith('complete ')).length
      await until(() => completes() >= 2 || w.child.exitCode !== null, { timeout: 30_000, what: 'two runs done' })
      expect(w.child.exitCode, w.lines.join('\n')).toBe(null)

      // Lock episodes until the worker was caught writing (it nearly always is at the
      // first; on a starved machine a short lock may pass between its writes).
      const episodes = []
      for (let e = 0; e < 6 && w.child.exitCode === null; e++) {
        const from = w.lines.length
        const holder = holdWriteLock(db, lockMs)
        children.add(holder.child)
        const lockedAt = await holder.locked
        if (e === 0 && lockMs >= 1000) {
          // Another process's trigger: waits busyTimeout, then DB_BUSY; nothing written.
          const t = Date.now()
          const err = await d.jobs.job.trigger({ k: 999 }).then(
            () => null,
            (x) => x,
          )
          expect(err).toBeInstanceOf(DurablyError)
          expect(err.code).toBe('DB_BUSY')
          expect(Date.now() - t).toBeGreaterThanOrEqual(BUSY_TIMEOUT - 20)
          const batchErr = await d.jobs.job.batchTrigger([{ input: { k: 1000 } }, { input: { k: 1001 } }]).then(
            () => null,
            (x) => x,
          )
          expect(batchErr && batchErr.code).toBe('DB_BUSY')
          // Reads go on (WAL).
          expect((await d.getRuns({ jobName: 'fault-busy' })).length).toBe(RUNS)
        }
        const releasedAt = await holder.released
        expect(releasedAt - lockedAt).toBeGreaterThanOrEqual(lockMs - 50)
        await sleep(BUSY_TIMEOUT + 150) // the reports of this episode
        const caught = w.lines.slice(from).some((l) => / DB_BUSY( |$)/.test(l))
        episodes.push(caught)
        if (caught) break
      }
      expect(episodes.includes(true), `episodes ${episodes}; ${w.lines.join('\n')}`).toBe(true)

      const ex = await exitWithin(w, 40_000)
      if (!ex || ex.code !== 0) {
        w.child.kill('SIGKILL')
        throw new Error(`worker did not finish: ${JSON.stringify(ex)}\n${w.lines.join('\n')}\n${w.stderr()}`)
      }
      if (process.env.FAULT_DEBUG) console.log(w.lines.join('\n'))
      expect(w.lines).toContain('done')
      expect(w.lines.filter((l) => l.startsWith('fatal') || l.startsWith('fail '))).toEqual([])
      const busy = w.lines.filter((l) => / DB_BUSY( |$)/.test(l))
      expect(busy.length, w.lines.join('\n')).toBeGreaterThan(0)
      // Only busy errors were reported: no other failure mode, and no lease lost (a
      // single live worker never loses a run to itself, however late its heartbeat).
      const errors = w.lines.filter((l) => l.startsWith('worker-error') || l.startsWith('step-rejected') || l.startsWith('lease-lost'))
      for (const l of errors) expect(l).toMatch(/ DB_BUSY( |$)/)

      // Every run completed, right output, all steps committed exactly once.
      const runs = await d.getRuns({ jobName: 'fault-busy' })
      expect(runs.length).toBe(RUNS)
      for (const r of runs) {
        expect(r.status).toBe('completed')
        expect(r.output.k).toBe(r.input.k)
        const steps = await d.getSteps(r.id)
        expect(steps.map((s) => [s.name, s.status, s.output.n])).toEqual(
          Array.from({ length: STEPS }, (_, i) => [`s${i}`, 'completed', r.input.k * 100 + i]),
        )
        expect(r.output.steps).toEqual(steps.map((s) => s.output))
      }
      expect(
        sql(db, "SELECT COUNT(*) FROM (SELECT 1 FROM fault_step_audit WHERE status = 'completed' GROUP BY run_id, name HAVING COUNT(*) > 1)"),
      ).toEqual([[0]])
      expect(sql(db, "SELECT status, COUNT(*) FROM fault_run_audit GROUP BY status")).toEqual([['completed', RUNS]])
      console.log(
        `fault/busy (${label}) figures ${JSON.stringify({
          runs: RUNS,
          lockEpisodes: episodes.length,
          busyReports: busy.length,
          stepRejections: w.lines.filter((l) => l.startsWith('step-rejected')).length,
        })}`,
      )
      await d.close()
    }, 60_000)
  }

  it('a step outlasting a lock held longer than staleThreshold is not reclaimed by its own live worker', async (ctx) => {
    if (!hasPython()) {
      ctx.skip('python3 missing')
      return
    }
    const db = path.join(tempDir('durably-fault-busy-'), 'own.db')
    const executions = []
    const long = defineJob({
      name: 'fault-busy-long',
      run: async (c) => {
        executions.push(Date.now())
        return c.run('long', async () => {
          await new Promise((r) => setTimeout(r, 2500))
          return 'ok'
        })
      },
    })
    const d = createDurably({
      path: db,
      jobs: { long },
      pollingInterval: 50,
      heartbeatInterval: 100,
      staleThreshold: 600,
      busyTimeout: BUSY_TIMEOUT,
    })
    const errors = []
    d.on('worker:error', (e) => errors.push(e.error.code))
    await d.init()
    const run = await d.jobs.long.trigger({})
    await until(() => executions.length === 1, { what: 'the run to start' })
    const holder = holdWriteLock(db, 1500) // its heartbeats fail for 1.5 s > 600 ms
    children.add(holder.child)
    await holder.released
    const done = await d.waitForRun(run.id, { timeout: 10_000 })
    expect(done.output).toBe('ok')
    expect(executions.length).toBe(1) // not reclaimed and executed again by this very worker
    expect(errors.length).toBeGreaterThan(0)
    expect(errors.filter((c) => c !== 'DB_BUSY')).toEqual([]) // no LEASE_LOST
    expect(sql(db, `SELECT lease_generation FROM runs WHERE id = '${run.id}'`)).toEqual([[1]])
    await d.close()
  }, 30_000)
})
