// Issue 2: the engine end to end — steps, failure, crash/resume, validation,
// schema versions, process exit.
import fs from 'node:fs'
import path from 'node:path'
import { afterEach, describe, expect, it, onTestFinished } from 'vitest'
import { z } from 'zod'
import { createDurably, defineJob, ValidationError, DurablyError, NotFoundError } from '../index.js'
import helpers from './helpers.js'

const { makeDurably, closeAll, tempDb, tempDir, spawnNode, until, sql, storeSql, onPostgres } = helpers
const __dirname = import.meta.dirname

afterEach(closeAll)

const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/

describe('a job with steps', () => {
  it('completes 3 steps; output, steps and timestamps are stored', async () => {
    const calls = []
    const job = defineJob({
      name: 'three-steps',
      input: z.object({ n: z.number() }),
      output: z.object({ total: z.number() }),
      run: async (ctx, input) => {
        const a = await ctx.run('one', () => (calls.push('one'), input.n + 1))
        const b = await ctx.run('two', async () => (calls.push('two'), a * 2))
        const c = await ctx.run('three', () => (calls.push('three'), b + 3))
        expect(ctx.runId).toMatch(/^[0-9A-HJKMNP-TV-Z]{26}$/)
        expect(ctx.jobName).toBe('three-steps')
        return { total: c }
      },
    })
    const d = makeDurably({ jobs: { job } })
    await d.init()
    const res = await d.jobs.job.triggerAndWait({ n: 1 }, { timeout: 10_000 })
    expect(res.output).toEqual({ total: 7 })
    expect(calls).toEqual(['one', 'two', 'three'])

    const run = await d.getRun(res.id)
    expect(run.status).toBe('completed')
    expect(run.output).toEqual({ total: 7 })
    expect(run.input).toEqual({ n: 1 })
    expect(run.currentStepIndex).toBe(3)
    for (const k of ['createdAt', 'updatedAt', 'startedAt', 'completedAt']) expect(run[k]).toMatch(ISO)
    expect(run.startedAt >= run.createdAt).toBe(true)
    expect(run.completedAt >= run.startedAt).toBe(true)

    const steps = await d.getSteps(res.id)
    expect(steps.map((s) => [s.name, s.index, s.status, s.output])).toEqual([
      ['one', 0, 'completed', 2],
      ['two', 1, 'completed', 4],
      ['three', 2, 'completed', 7],
    ])
    for (const s of steps) {
      expect(s.startedAt).toMatch(ISO)
      expect(s.completedAt).toMatch(ISO)
    }

    await d.close()
    const [[status, output, stepIndex]] = storeSql(d, `SELECT status, output, current_step_index FROM runs`, { json: [1] })
    expect([status, output, stepIndex]).toEqual(['completed', { total: 7 }, 3])
    const rows = storeSql(d, `SELECT name, "index", status, output FROM steps ORDER BY "index"`, { json: [3] })
    expect(rows).toEqual([
      ['one', 0, 'completed', 2],
      ['two', 1, 'completed', 4],
      ['three', 2, 'completed', 7],
    ])
  })

  it('a throwing step fails the run; the error is on step and run; later steps never run', async () => {
    const calls = []
    const job = defineJob({
      name: 'fails-in-two',
      run: async (ctx) => {
        await ctx.run('one', () => calls.push('one'))
        await ctx.run('two', () => {
          calls.push('two')
          throw new Error('boom in two')
        })
        await ctx.run('three', () => calls.push('three'))
      },
    })
    const d = makeDurably({ jobs: { job } })
    const failed = new Promise((resolve) => d.on('run:fail', resolve))
    await d.init()
    const run = await d.jobs.job.trigger(undefined)
    const ev = await failed
    expect(ev.error).toBe('boom in two')
    expect(ev.failedStepName).toBe('two')
    await expect(d.waitForRun(run.id)).rejects.toMatchObject({ code: 'RUN_FAILED', message: 'boom in two' })
    expect(calls).toEqual(['one', 'two'])
    const stored = await d.getRun(run.id)
    expect(stored.status).toBe('failed')
    expect(stored.error).toBe('boom in two')
    expect(stored.errorStack).toContain('boom in two')
    const steps = await d.getSteps(run.id)
    expect(steps.map((s) => [s.name, s.status, s.error])).toEqual([
      ['one', 'completed', null],
      ['two', 'failed', 'boom in two'],
    ])
  })
})

describe('crash and resume', () => {
  // SQLite only (a child process on its own file); on PostgreSQL: __test__/fault/pg.test.mjs.
  it.skipIf(onPostgres)('a SIGKILLed run resumes in a new process without redoing finished steps', async () => {
    const dir = tempDir()
    const db = path.join(dir, 'crash.db')
    const side = path.join(dir, 'side.log')
    const script = path.join(__dirname, 'fixtures', 'crash-job.js')

    const first = spawnNode(script, [db, side], { env: { TRIGGER: '1' } })
    await until(() => first.lines.includes('in-step-3'), { timeout: 15_000, what: 'step 3 to start' })
    first.child.kill('SIGKILL')
    const { signal } = await first.exited
    expect(signal).toBe('SIGKILL')
    // (the run was inserted already claimed by its trigger: issue 19)
    expect(first.lines).toContain('inserted-claimed')
    expect(fs.readFileSync(side, 'utf8').trim().split('\n')).toEqual(['step-1', 'step-2', 'step-3'])

    // The new process recovers the stale run (staleThreshold 500 ms) and finishes it.
    const second = spawnNode(script, [db, side], { env: { EXIT_WHEN_IDLE: '1' } })
    await until(() => second.lines.some((l) => l.startsWith('complete')), { timeout: 20_000, what: 'resume' })
    const { code } = await second.exited
    expect(code).toBe(0)
    expect(second.lines.find((l) => l.startsWith('complete'))).toBe('complete {"a":2,"b":4,"c":104}')
    // steps 1 and 2 ran once; step 3 twice (the killed attempt and the resumed one)
    expect(fs.readFileSync(side, 'utf8').trim().split('\n')).toEqual(['step-1', 'step-2', 'step-3', 'step-3'])
    const rows = sql(db, `SELECT name, status FROM steps ORDER BY "index"`)
    expect(rows).toEqual([
      ['step-1', 'completed'],
      ['step-2', 'completed'],
      ['step-3', 'completed'],
    ])
    expect(sql(db, `SELECT status, lease_generation FROM runs`)).toEqual([['completed', 2]])
  })
})

// Issue 19: with the worker on and a slot free, a trigger whose run is the one
// a claim would take first inserts it already running under this worker's
// lease (src/store/trigger.rs, try_trigger_claim), and the runner executes it
// from what the trigger sent (Runner#startTriggered). SQLite only: the
// PostgreSQL trigger path claims separately.
describe('a run its trigger inserted claimed', () => {
  it.skipIf(onPostgres)('gets its input and labels as stored, after run:trigger, heartbeats, and is fenced once taken over', async () => {
    let open
    const gate = new Promise((r) => (open = r))
    const seen = []
    const job = defineJob({
      name: 'inserted',
      run: async (ctx, input) => {
        seen.push(input)
        input.mutated = true
        await ctx.run('first', () => 1)
        return ctx.run('held', async () => {
          await gate
          return 2
        })
      },
    })
    const d = makeDurably({ jobs: { job }, heartbeatInterval: 50, staleThreshold: 5_000 })
    await d.init()
    const started = []
    const startTriggered = d._runner.startTriggered.bind(d._runner)
    d._runner.startTriggered = (id, ...rest) => (started.push(id), startTriggered(id, ...rest))
    const events = []
    let startLabels = null
    d.on('run:start', (ev) => (startLabels = ev.labels))
    for (const e of ['run:trigger', 'run:start', 'run:fail', 'run:complete']) d.on(e, () => events.push(e))
    const input = { when: new Date('2024-01-02T03:04:05.000Z'), n: 7n }
    const labels = { team: 'a' }
    const run = await d.jobs.job.trigger(input, { labels })
    onTestFinished(() => open()) // (close() waits for the held step)
    expect(started, 'inserted claimed by the trigger').toEqual([run.id])
    await until(() => storeSql(d, `SELECT COUNT(*) FROM steps WHERE run_id = '${run.id}'`)[0][0] === 1, { what: 'the first step' })
    expect(events.slice(0, 2)).toEqual(['run:trigger', 'run:start'])
    // The job got the stored values back (a Date, a BigInt), not the caller's objects.
    expect(seen).toHaveLength(1)
    expect(seen[0]).not.toBe(input)
    expect(seen[0].when).toBeInstanceOf(Date)
    expect(seen[0].when.toISOString()).toBe('2024-01-02T03:04:05.000Z')
    expect(seen[0].n).toBe(7n)
    expect(input.mutated).toBeUndefined()
    expect(startLabels).toEqual({ team: 'a' })
    expect(startLabels).not.toBe(labels)
    const [[status, gen, owner, hb0, created, startedAt]] = storeSql(
      d,
      `SELECT status, lease_generation, lease_owner, heartbeat_at, created_at, started_at FROM runs WHERE id = '${run.id}'`,
    )
    expect([status, gen, startedAt]).toEqual(['running', 1, created])
    expect(owner).toMatch(new RegExp(`^${process.pid}:`))
    // Heartbeated like any claimed run.
    await until(() => storeSql(d, `SELECT heartbeat_at FROM runs WHERE id = '${run.id}'`)[0][0] > hb0, { what: 'a heartbeat' })
    // Another worker takes it over (what its stale recovery and claim write):
    // generation 1 may write nothing more.
    sql(d._options.path, `UPDATE runs SET lease_generation = 2, lease_owner = 'other' WHERE id = '${run.id}'`)
    open()
    await until(() => d._runner.activeCount === 0, { what: 'the execution to end' })
    expect(storeSql(d, `SELECT name FROM steps WHERE run_id = '${run.id}' ORDER BY "index"`)).toEqual([['first']])
    expect(storeSql(d, `SELECT status, lease_generation, lease_owner FROM runs WHERE id = '${run.id}'`)).toEqual([
      ['running', 2, 'other'],
    ])
    expect(events).not.toContain('run:complete')
  })

  it.skipIf(onPostgres)('a key held by a running run, or an older pending run, keeps the trigger from inserting it claimed', async () => {
    const gates = []
    const job = defineJob({
      name: 'keyed',
      run: async (ctx, n) => {
        await new Promise((r) => gates.push(r))
        return n
      },
    })
    const d = makeDurably({ jobs: { job }, maxConcurrentRuns: 2 })
    await d.init()
    const started = []
    const startTriggered = d._runner.startTriggered.bind(d._runner)
    d._runner.startTriggered = (id, ...rest) => (started.push(id), startTriggered(id, ...rest))
    const a = await d.jobs.job.trigger(1, { concurrencyKey: 'k' })
    const b = await d.jobs.job.trigger(2, { concurrencyKey: 'k' })
    expect(started).toEqual([a.id])
    expect(storeSql(d, `SELECT status FROM runs WHERE id = '${b.id}'`)).toEqual([['pending']])
    await until(() => gates.length === 1, { what: 'the first run' })
    gates[0]()
    // b starts once a ended (the key's creation order), through a claim.
    await until(() => gates.length === 2, { what: 'the second run' })
    expect(storeSql(d, `SELECT status, lease_generation FROM runs WHERE id = '${b.id}'`)).toEqual([['running', 1]])
    gates[1]()
    expect((await d.waitForRun(b.id, { timeout: 10_000 })).output).toBe(2)
    expect(started).toEqual([a.id])
  })
})

describe('validation and errors', () => {
  it('invalid input → ValidationError naming the field, nothing written', async () => {
    const job = defineJob({ name: 'typed', input: z.object({ email: z.string().email() }), run: async () => 1 })
    const d = makeDurably({ jobs: { job } })
    await d.migrate()
    const err = await d.jobs.job.trigger({ email: 'nope' }).catch((e) => e)
    expect(err).toBeInstanceOf(ValidationError)
    expect(err).toBeInstanceOf(DurablyError)
    expect(err.code).toBe('VALIDATION_ERROR')
    expect(err.message).toContain('email')
    expect(await d.getRuns()).toEqual([])
    expect(storeSql(d, 'SELECT COUNT(*) FROM runs')).toEqual([[0]])
  })

  it('bad options throw ValidationError naming the option', () => {
    const cases = [
      [{ nope: 1 }, 'nope'],
      [{ pollingInterval: -5 }, 'pollingInterval'],
      [{ heartbeatInterval: 0 }, 'heartbeatInterval'],
      [{ heartbeatInterval: 1000, staleThreshold: 1000 }, 'staleThreshold'],
      [{ maxConcurrentRuns: 1.5 }, 'maxConcurrentRuns'],
      [{ synchronous: 'off' }, 'synchronous'],
      [{ retainRuns: '3 weeks' }, 'retainRuns'],
      [{ path: '' }, 'path'],
    ]
    for (const [opts, name] of cases) {
      let err
      try {
        createDurably({ path: ':memory:', ...opts })
      } catch (e) {
        err = e
      }
      expect(err, JSON.stringify(opts)).toBeInstanceOf(ValidationError)
      expect(err.message).toContain(name)
    }
  })

  // SQLite only (writes its own file); on PostgreSQL: the cargo test pg::tests::a_newer_schema_is_refused_and_left_alone.
  it.skipIf(onPostgres)('a database from a newer schema is refused, and left as it was', async () => {
    const db = tempDb()
    const d = createDurably({ path: db })
    await d.migrate()
    await d.close()
    sql(db, "INSERT INTO schema_versions VALUES (99, 'future')")
    const before = sql(db, 'SELECT version FROM schema_versions ORDER BY version')
    const d2 = createDurably({ path: db })
    const err = await d2.migrate().catch((e) => e)
    expect(err).toBeInstanceOf(DurablyError)
    expect(err.code).toBe('SCHEMA_TOO_NEW')
    expect(err.message).toMatch(/newer/)
    await d2.close()
    expect(sql(db, 'SELECT version FROM schema_versions ORDER BY version')).toEqual(before)
  })

  it('error codes survive async native calls', async () => {
    const d = makeDurably()
    await d.migrate()
    const err = await d.cancel('01ARZ3NDEKTSV4RRFFQ69G5FAV').catch((e) => e)
    expect(err).toBeInstanceOf(NotFoundError)
    expect(err.code).toBe('NOT_FOUND')
  })

  it('a closed instance refuses every call with CLOSED', async () => {
    const d = makeDurably()
    await d.init()
    await d.close()
    await expect(d.getRuns()).rejects.toMatchObject({ code: 'CLOSED' })
    await expect(d.start()).rejects.toMatchObject({ code: 'CLOSED' })
  })
})

describe('process lifecycle', () => {
  it('after stop() the process exits on its own within a second', async () => {
    const p = spawnNode(path.join(__dirname, 'fixtures', 'stop-exit.js'), [tempDb()])
    const { code } = await p.exited
    const exitAt = Date.now()
    expect(code, p.stderr()).toBe(0)
    expect(p.lines[0]).toBe('output 42')
    const stoppedAt = Number(p.lines[1].split(' ')[1])
    expect(exitAt - stoppedAt).toBeLessThan(1000)
  })
})
