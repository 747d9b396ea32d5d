// Reads on PostgreSQL are network round trips: they run off the JS thread, so
// the event loop keeps going while one waits (issue 16). A psql session holds
// an ACCESS EXCLUSIVE lock on the tables, so every read waits for it; a timer
// must keep ticking meanwhile. And a close waits for a call in flight as long
// as on SQLite: the busy timeout (a statement waits for a lock at most that
// long on PostgreSQL too), not a fixed 10 s.
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { createRequire } from 'node:module'
import { spawn } from 'node:child_process'

const require = createRequire(import.meta.url)
const { createDurably, defineJob } = require('..')
const { postgresBackendSkipReason, pgOptions, pgUrl, dropSchemas, psqlPath, sql } = require('./pg.js')

const why = postgresBackendSkipReason()
if (why) console.warn(`pg-reads.test: PostgreSQL skipped: ${why}`)

const echo = defineJob({
  name: 'echo',
  run: async (ctx, input) => {
    ctx.log.info('hello')
    return ctx.run('twice', () => input.n * 2)
  },
})

const lockers = []
afterEach(() => {
  for (const app of lockers.splice(0)) {
    sql(pgUrl(), `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '${app}'`)
  }
})
afterAll(() => dropSchemas())

/**
 * Another session takes ACCESS EXCLUSIVE locks on `schema`'s tables and keeps
 * them `seconds`; resolves once they are granted, with the session's end.
 */
async function lockTables(schema, seconds) {
  const app = `durably_locker_${process.pid}_${lockers.length}`
  lockers.push(app)
  const tables = ['runs', 'steps', 'logs'].map((t) => `"${schema}".${t}`).join(', ')
  const child = spawn(
    psqlPath(),
    ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', `${pgUrl()}?application_name=${app}`, '-c',
      `BEGIN; LOCK TABLE ${tables} IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(${seconds}); COMMIT;`],
    { stdio: 'ignore' },
  )
  const ended = new Promise((r) => child.once('exit', r))
  const until = Date.now() + 20_000
  for (;;) {
    const granted = Number(sql(pgUrl(),
      `SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace ` +
        `WHERE n.nspname = '${schema}' AND l.mode = 'AccessExclusiveLock' AND l.granted`))
    if (granted === 3) return { ended }
    if (Date.now() > until) throw new Error(`the locks on ${schema} were not granted (${granted} of 3)`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

describe.skipIf(why)('PostgreSQL reads', () => {
  it('getRun, getRuns, getSteps, getLogs, getStats and subscribe wait for a lock without stalling the event loop', async () => {
    const opts = pgOptions('reads')
    const d = createDurably({ ...opts, jobs: { echo }, busyTimeout: 30_000 })
    try {
      await d.init()
      const done = await d.jobs.echo.triggerAndWait({ n: 2 }, { timeout: 20_000 })
      expect(done.output).toBe(4)
      await d.stop()
      // The guard: the binding refuses a read on the JS thread here.
      expect(() => d._engine.getRun(done.id)).toThrow(/would block the JS thread on this database: use getRunAsync/)

      const { ended } = await lockTables(opts.schema, 2)
      let ticks = 0
      const timer = setInterval(() => ticks++, 10)
      const t0 = Date.now()
      const reader = d.subscribe(done.id).getReader()
      let results
      try {
        results = await Promise.all([
          d.getRun(done.id),
          d.getRuns({ jobName: 'echo' }),
          d.getSteps(done.id),
          d.getLogs(done.id),
          d.getStats(),
          reader.read(),
        ])
      } finally {
        clearInterval(timer)
      }
      const waited = Date.now() - t0
      await ended
      // The reads really waited for the lock (else this proves nothing) …
      expect(waited).toBeGreaterThanOrEqual(1000)
      // … and the timer ran meanwhile (a read on the JS thread allows at most one late tick).
      expect(ticks).toBeGreaterThanOrEqual(20)
      const [run, runs, steps, logs, stats, first] = results
      expect(run).toMatchObject({ id: done.id, status: 'completed', output: 4 })
      expect(runs.map((r) => r.id)).toEqual([done.id])
      expect(steps.map((s) => s.name)).toEqual(['twice'])
      expect(Array.isArray(logs)).toBe(true)
      expect(stats.byStatus.completed).toBe(1)
      expect(first.value).toMatchObject({ type: 'run:snapshot', runId: done.id, run: { status: 'completed' } })
      expect((await reader.read()).done).toBe(true)
    } finally {
      await d.close()
    }
  })

  it('waitForRun and retrigger read off the JS thread too', async () => {
    const opts = pgOptions('reads')
    const d = createDurably({ ...opts, jobs: { echo }, busyTimeout: 30_000 })
    try {
      await d.init()
      const done = await d.jobs.echo.triggerAndWait({ n: 3 }, { timeout: 20_000 })
      await d.stop()
      const { ended } = await lockTables(opts.schema, 1.5)
      let ticks = 0
      const timer = setInterval(() => ticks++, 10)
      const t0 = Date.now()
      let settled
      try {
        settled = await d.waitForRun(done.id, { timeout: 20_000 })
      } finally {
        clearInterval(timer)
      }
      expect(Date.now() - t0).toBeGreaterThanOrEqual(700)
      expect(ticks).toBeGreaterThanOrEqual(15)
      expect(settled.output).toBe(6)
      await ended
      const again = await d.retrigger(done.id)
      expect(again.id).not.toBe(done.id)
    } finally {
      await d.close()
    }
  })

  it('a subscribe of an unknown run and a waitForRun timeout still answer', async () => {
    const d = createDurably({ ...pgOptions('reads'), jobs: { echo } })
    try {
      await d.migrate()
      const reader = d.subscribe('01NOSUCHRUN0000000000000000').getReader()
      await expect(reader.read()).rejects.toMatchObject({ code: 'NOT_FOUND' })
      const run = await d.jobs.echo.trigger({ n: 1 })
      // Not started here: the timeout names why nothing executed it.
      await expect(d.waitForRun(run.id, { timeout: 300 })).rejects.toThrow(/no started worker for job 'echo'/)
    } finally {
      await d.close()
    }
  })

  it('the first call of a fresh instance migrates off the JS thread too', async () => {
    const opts = pgOptions('reads')
    // Another process migrating the same schema: its advisory lock (src/pg/migrate.rs) held 1.5 s.
    const app = `durably_locker_${process.pid}_${lockers.length}`
    lockers.push(app)
    const child = spawn(
      psqlPath(),
      ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', `${pgUrl()}?application_name=${app}`, '-c',
        `BEGIN; SELECT pg_advisory_xact_lock(hashtext('durably.migrate'), hashtext('${opts.schema}')); SELECT pg_sleep(1.5); COMMIT;`],
      { stdio: 'ignore' },
    )
    const ended = new Promise((r) => child.once('exit', r))
    const until = Date.now() + 20_000
    while (Number(sql(pgUrl(), `SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = '${app}'`)) !== 1) {
      if (Date.now() > until) throw new Error('the advisory lock was not taken')
      await new Promise((r) => setTimeout(r, 20))
    }
    const d = createDurably({ ...opts, jobs: { echo }, busyTimeout: 30_000 })
    try {
      let ticks = 0
      const timer = setInterval(() => ticks++, 10)
      const t0 = Date.now()
      let runs
      try {
        runs = await d.getRuns() // no migrate() or init() first
      } finally {
        clearInterval(timer)
      }
      expect(Date.now() - t0).toBeGreaterThanOrEqual(700)
      expect(ticks).toBeGreaterThanOrEqual(15)
      expect(runs).toEqual([])
      await ended
      // Concurrent first calls share one migration.
      const d2 = createDurably({ ...pgOptions('reads'), jobs: { echo } })
      try {
        const [a, b] = await Promise.all([d2.getStats(), d2.getRuns()])
        expect(a.total).toBe(0)
        expect(b).toEqual([])
        expect((await d2.jobs.echo.trigger({ n: 1 })).status).toBe('pending')
      } finally {
        await d2.close()
      }
    } finally {
      await d.close()
    }
  })

  it('close() waits for a read stuck on a lock only as long as busyTimeout allows, as on SQLite', async () => {
    const opts = pgOptions('close')
    const d = createDurably({ ...opts, jobs: { echo }, busyTimeout: 1000 })
    await d.migrate()
    await lockTables(opts.schema, 60)
    const read = d.getRun('01NOSUCHRUN0000000000000000')
    const outcome = read.then(() => 'resolved', (e) => e.code)
    const t0 = Date.now()
    await d.close() // rejected ("a native call is still using the database") after a fixed 15 s before
    const took = Date.now() - t0
    // The read gave up on the lock after busyTimeout (DB_BUSY), so close could finish.
    expect(await outcome).toBe('DB_BUSY')
    expect(took).toBeLessThan(10_000)
  }, 60_000)
})
