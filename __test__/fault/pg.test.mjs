// Issue 16: the fault suites on PostgreSQL, with real processes against a
// real server. Worker processes (fixtures/fault-worker.js) open the store
// with createDurably({ url, schema }); PL/pgSQL triggers installed in the
// test schema record every step write and every terminal run status inside
// the engine's own transactions (exact, unlike anything a killed process
// logs), and each step execution is on an fsync'd side log.
//
//  1. random SIGKILLs of workers: 0 committed steps re-executed, 0 runs
//     completed twice, only steps in flight run again;
//  2. 4 worker processes × 2,000 runs with concurrency keys: each run once,
//     keyed runs never overlap and run in creation order;
//  3. a worker paused (SIGSTOP) past its lease cannot write after the reclaim;
//  4. the server restarted mid-run (a server of this test's own): workers
//     reconnect, nothing lost, nothing done twice;
//  5. every connection of a worker dropped (pg_terminate_backend) mid-step:
//     the run completes, its steps once each.
//
// They need an addon that can open PostgreSQL (postgresSupported()) and a
// server (DURABLY_TEST_PG_URL); without the first they skip with the reason
// printed; with it and without a server they fail under CI=true.
// The audit SQL itself is checked now, on the server, against the schema of
// src/pg/migrations (the "audit" describe), so it is known to work when the
// wiring lands.
import fs from 'node:fs'
import path from 'node:path'
import { spawnSync } from 'node:child_process'
import { afterAll, describe, expect, it } from 'vitest'
import helpers from '../helpers.js'
import pg from '../pg.js'
import { startProxy } from '../pg-proxy.js'
import { envInt, exitWithin, fixture, groupBy, lineWithin, rand, readSideLog } from './util.mjs'

const { tempDir, spawnNode, sleep, until, ROOT } = helpers

const children = new Set()
afterAll(() => {
  for (const w of children) w.child.kill('SIGKILL')
  pg.dropSchemas()
})

/** The rows of `query` on `url` as objects (through psql's json_agg). */
function rows(url, query) {
  return JSON.parse(pg.sql(url, `SELECT coalesce(json_agg(t), '[]'::json) FROM (${query}) t`))
}

/** Audit tables and triggers in `schema` (after its migrations). */
function auditSql(schema) {
  return `
SET search_path = ${schema};
CREATE TABLE fault_step_audit (run_id text, name text, status text, output text, at timestamptz DEFAULT clock_timestamp());
CREATE TABLE fault_run_audit (run_id text, status text, output text, lease_generation bigint);
CREATE FUNCTION fault_step_audit_fn() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO ${schema}.fault_step_audit (run_id, name, status, output) VALUES (NEW.run_id, NEW.name, NEW.status, NEW.output::text);
  RETURN NEW;
END $$;
CREATE TRIGGER fault_steps AFTER INSERT OR UPDATE ON steps FOR EACH ROW EXECUTE FUNCTION fault_step_audit_fn();
CREATE FUNCTION fault_run_audit_fn() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.status IN ('completed', 'failed', 'cancelled') AND NEW.status IS DISTINCT FROM OLD.status THEN
    INSERT INTO ${schema}.fault_run_audit VALUES (NEW.id, NEW.status, NEW.output::text, NEW.lease_generation);
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER fault_runs_end AFTER UPDATE OF status ON runs FOR EACH ROW EXECUTE FUNCTION fault_run_audit_fn();
`
}

/** Problems found by the audit: steps committed other than once, runs ended other than once as completed. */
function auditProblems(url, schema, { runs, steps }) {
  const problems = []
  const twice = rows(
    url,
    `SELECT run_id, name, count(*)::int AS n FROM ${schema}.fault_step_audit WHERE status = 'completed' GROUP BY 1, 2 HAVING count(*) <> 1`,
  )
  for (const r of twice) problems.push(`step ${r.run_id}/${r.name} committed ${r.n} times`)
  const [{ n: committed }] = rows(url, `SELECT count(DISTINCT (run_id, name))::int AS n FROM ${schema}.fault_step_audit WHERE status = 'completed'`)
  if (committed !== runs * steps) problems.push(`${committed} steps committed, expected ${runs * steps}`)
  const ends = rows(url, `SELECT run_id, string_agg(status, ',') AS s, count(*)::int AS n FROM ${schema}.fault_run_audit GROUP BY 1`)
  if (ends.length !== runs) problems.push(`${ends.length} runs reached a terminal state, expected ${runs}`)
  for (const r of ends) if (r.n !== 1 || r.s !== 'completed') problems.push(`run ${r.run_id} ended as ${r.s}`)
  return problems
}

// ---- the audit SQL, checked now on the server ------------------------------------

const serverSkip = pg.pgSkipReason() // throws under CI=true without a server

describe.skipIf(serverSkip)('audit (on the migrations of src/pg, no addon needed)', () => {
  it('records each step write and each terminal status once, inside the writing transaction', () => {
    const url = pg.pgUrl()
    const schema = pg.pgSchema('audit')
    const dir = path.join(ROOT, 'src', 'pg', 'migrations')
    const migrations = fs.readdirSync(dir).filter((f) => f.endsWith('.sql')).sort()
    pg.sql(url, `CREATE SCHEMA ${schema}; SET search_path = ${schema}; ${migrations.map((f) => fs.readFileSync(path.join(dir, f), 'utf8')).join('\n')}`)
    pg.sql(url, auditSql(schema))
    const q = (text) => pg.sql(url, `SET search_path = ${schema}; ${text}`)
    q(`INSERT INTO runs (id, job_name, input, status, created_at, updated_at) VALUES ('r1', 'j', '{}', 'running', now(), now());
       INSERT INTO steps (run_id, name, "index", status, output, started_at, completed_at)
         VALUES ('r1', 'a', 0, 'completed', '{"x":1}', now(), now())`)
    // A rolled-back write leaves no audit row (the trigger runs inside the transaction).
    pg.sql(url, `BEGIN; UPDATE ${schema}.steps SET output = '{"x":2}' WHERE run_id = 'r1'; ROLLBACK`)
    q(`UPDATE runs SET progress = '{}' WHERE id = 'r1';
       UPDATE runs SET status = 'completed', output = '1' WHERE id = 'r1';
       UPDATE runs SET updated_at = now() WHERE id = 'r1'`)
    expect(rows(url, `SELECT run_id, name, status, output FROM ${schema}.fault_step_audit`)).toEqual([
      { run_id: 'r1', name: 'a', status: 'completed', output: '{"x":1}' },
    ])
    expect(rows(url, `SELECT run_id, status, output FROM ${schema}.fault_run_audit`)).toEqual([
      { run_id: 'r1', status: 'completed', output: '1' },
    ])
    expect(auditProblems(url, schema, { runs: 1, steps: 1 })).toEqual([])
    // A second commit of the step and a second end are both caught.
    q(`UPDATE steps SET output = '{"x":3}' WHERE run_id = 'r1';
       UPDATE runs SET status = 'running' WHERE id = 'r1'; UPDATE runs SET status = 'failed' WHERE id = 'r1'`)
    expect(auditProblems(url, schema, { runs: 1, steps: 1 })).toEqual([
      'step r1/a committed 2 times',
      'run r1 ended as completed,failed',
    ])
  })
})

// ---- the fault tests proper (need createDurably({ url })) -------------------------

const wiredSkip = pg.postgresBackendSkipReason() // null, or why (throws under CI when wired without a server)
if (wiredSkip) console.warn(`fault/pg: the PostgreSQL fault tests skipped: ${wiredSkip}`)

/** `url` with the query parameter `key` set to `value`. */
function withParam(url, key, value) {
  const u = new URL(url)
  u.searchParams.set(key, value)
  return u.toString()
}

async function openDriver(url, schema) {
  const { createDurably, defineJob } = await import('../../index.js')
  const job = defineJob({
    name: 'pg-fault',
    run: async () => {
      throw new Error('the driver never executes runs')
    },
  })
  const d = createDurably({ url, schema, jobs: { job } })
  await d.migrate()
  pg.sql(url, auditSql(schema))
  return d
}

function worker(side, env) {
  const w = spawnNode(fixture('fault-worker.js'), [side], { env: { FAULT_JOB: 'pg-fault', ...env } })
  children.add(w)
  w.exited.then(() => children.delete(w))
  return w
}

const explain = async (w, what) => {
  const ex = await w.exited
  return `${what}: exit ${ex.code}/${ex.signal}\nstdout:\n${w.lines.join('\n')}\nstderr:\n${ex.stderr}`
}

/** Side-log check of a kill test: committed = last execution; earlier ones only by killed pids, one per kill and run. */
function sideProblems(side, stepsOf, killed) {
  const problems = []
  const execs = groupBy(
    readSideLog(side).filter((l) => l[0] === 'E'),
    (l) => `${l[1]} ${l[2]}`,
  )
  for (const [key, committed] of stepsOf) {
    const ex = execs.get(key) ?? []
    const last = ex[ex.length - 1]
    if (!last || Number(last[3]) !== committed.pid || Number(last[4]) !== committed.gen) {
      problems.push(`${key}: committed ${JSON.stringify(committed)}, last execution ${last}`)
    }
    for (const e of ex.slice(0, -1)) if (!killed.has(Number(e[3]))) problems.push(`${key} executed again, though pid ${e[3]} was not killed`)
  }
  const perPidRun = groupBy(
    [...execs.values()].flatMap((l) => l.slice(0, -1)),
    (e) => `${e[3]} ${e[1]}`,
  )
  for (const [key, l] of perPidRun) if (l.length > 1) problems.push(`pid/run ${key}: ${l.length} steps cut by one kill`)
  return problems
}

async function committedSteps(d, runs) {
  const m = new Map()
  for (const r of runs) for (const s of await d.getSteps(r.id)) m.set(`${r.id} ${s.name}`, s.output)
  return m
}

describe.skipIf(wiredSkip)('PostgreSQL fault tests', () => {
  const KILLS = envInt('DURABLY_PG_FAULT_KILLS', 30)
  const RUNS = envInt('DURABLY_PG_FAULT_RUNS', 60)
  const STEPS = 5

  it(`random SIGKILL of workers (${KILLS} kills): nothing lost, no committed step re-executed, no run completed twice`, async () => {
    const url = pg.pgUrl()
    const schema = pg.pgSchema('kill')
    const d = await openDriver(url, schema)
    const side = path.join(tempDir('pg-fault-kill-'), 'side.log')
    let k = 0
    const trigger = async (n) => d.jobs.job.batchTrigger(Array.from({ length: n }, () => ({ input: { k: k++ } })))
    await trigger(RUNS)
    const env = { FAULT_PG_URL: url, FAULT_PG_SCHEMA: schema, FAULT_STEPS: String(STEPS) }
    const killed = new Set()
    let kills = 0
    while (kills < KILLS) {
      if ((await d.getRuns({ status: 'pending', limit: 10 })).length < 10) await trigger(Math.max(10, RUNS >> 2))
      const w = worker(side, env)
      if (Math.random() >= 0.2 && !(await lineWithin(w, /^ready$/, 30_000))) throw new Error(await explain(w, 'worker died before ready'))
      const ex = await exitWithin(w, rand(30, 200))
      if (ex) {
        if (ex.code !== 0) throw new Error(await explain(w, 'worker failed'))
        continue
      }
      w.child.kill('SIGKILL')
      if ((await w.exited).signal === 'SIGKILL') {
        killed.add(w.child.pid)
        kills++
      }
    }
    const last = worker(side, env)
    const ex = await exitWithin(last, 120_000)
    if (!ex || ex.code !== 0) throw new Error(await explain(last, 'final worker did not finish'))
    expect(last.lines.filter((l) => l.startsWith('worker-error'))).toEqual([])

    const runs = await d.getRuns({ jobName: 'pg-fault' })
    expect(runs.length).toBe(k)
    const problems = runs.filter((r) => r.status !== 'completed').map((r) => `run ${r.id} is ${r.status}`)
    problems.push(...auditProblems(url, schema, { runs: k, steps: STEPS }))
    problems.push(...sideProblems(side, await committedSteps(d, runs), killed))
    console.log(`fault/pg kill figures ${JSON.stringify({ kills, runs: k, problems: problems.length })}`)
    await d.close()
    expect(problems.slice(0, 20)).toEqual([])
  }, 120_000 + KILLS * 3_000)

  it('4 worker processes × 2,000 runs with keys: each run once, keys never overlap, creation order per key', async () => {
    const N = envInt('DURABLY_PG_FAULT_MP_RUNS', 2000)
    const KEYS = 8
    const url = pg.pgUrl()
    const schema = pg.pgSchema('mp')
    const d = await openDriver(url, schema)
    const dir = tempDir('pg-fault-mp-')
    const side = path.join(dir, 'side.log')
    const marker = path.join(dir, 'all-triggered')
    const env = { FAULT_PG_URL: url, FAULT_PG_SCHEMA: schema, FAULT_STEPS: '1', FAULT_EXIT: marker, FAULT_CONCURRENCY: '4', FAULT_STALE: '20000', FAULT_HEARTBEAT: '200' }
    const workers = Array.from({ length: 4 }, () => worker(side, env))
    for (const w of workers) if (!(await lineWithin(w, /^ready$/, 30_000))) throw new Error(await explain(w, 'worker died'))
    const keyOf = new Map()
    for (let i = 0; i < N; ) {
      const items = []
      for (let j = 0; j < 100 && i < N; j++, i++) {
        const key = i % 4 === 1 ? `key-${(i >> 2) % KEYS}` : undefined
        items.push({ input: { k: i, key: key ?? null }, options: key ? { concurrencyKey: key } : undefined })
      }
      for (const r of await d.jobs.job.batchTrigger(items)) keyOf.set(r.id, r.concurrencyKey)
      await sleep(20)
    }
    fs.writeFileSync(marker, '')
    for (const w of workers) {
      const ex = await exitWithin(w, 180_000)
      if (!ex || ex.code !== 0) throw new Error(await explain(w, 'worker did not finish'))
    }
    const problems = auditProblems(url, schema, { runs: N, steps: 1 })
    const lines = readSideLog(side)
    const start = new Map(lines.filter((l) => l[0] === 'E').map((l) => [l[1], BigInt(l[5])]))
    const end = new Map(lines.filter((l) => l[0] === 'D').map((l) => [l[1], BigInt(l[4])]))
    const runs = await d.getRuns({ jobName: 'pg-fault' })
    expect(runs.length).toBe(N)
    const byKey = groupBy(runs.filter((r) => keyOf.get(r.id)), (r) => keyOf.get(r.id))
    for (const [key, list] of byKey) {
      list.sort((a, b) => a.input.k - b.input.k) // creation order
      for (let i = 1; i < list.length; i++) {
        const prev = list[i - 1].id
        const cur = list[i].id
        if (!(end.get(prev) < start.get(cur))) problems.push(`${key}: run ${cur} started before ${prev} (created earlier) ended`)
      }
    }
    console.log(`fault/pg mp figures ${JSON.stringify({ runs: N, keyed: [...byKey.values()].flat().length, problems: problems.length })}`)
    await d.close()
    expect(problems.slice(0, 20)).toEqual([])
  }, 300_000)

  it('a worker paused (SIGSTOP) past its lease cannot write after another worker reclaimed the run', async () => {
    const url = pg.pgUrl()
    const schema = pg.pgSchema('stop')
    const d = await openDriver(url, schema)
    const side = path.join(tempDir('pg-fault-stop-'), 'side.log')
    const env = { FAULT_PG_URL: url, FAULT_PG_SCHEMA: schema, FAULT_STEPS: '3', FAULT_HEARTBEAT: '100', FAULT_STALE: '1000', FAULT_EXIT: 'never' }
    fs.writeFileSync(`${side}.block`, '')
    const a = worker(side, env)
    const [run] = await d.jobs.job.batchTrigger([{ input: { k: 1 } }])
    if (!(await lineWithin(a, /^in-step /, 30_000))) throw new Error(await explain(a, 'A never reached the step'))
    a.child.kill('SIGSTOP')
    fs.rmSync(`${side}.block`)
    const b = worker(side, { ...env, FAULT_EXIT: 'idle' })
    const bx = await exitWithin(b, 60_000)
    if (!bx || bx.code !== 0) throw new Error(await explain(b, 'B did not finish the run'))
    const done = await d.getRun(run.id)
    expect(done.status).toBe('completed')
    expect(done.output.by.pid).toBe(b.child.pid)
    // A wakes up inside its step and tries to write it.
    fs.writeFileSync(`${side}.go`, '')
    a.child.kill('SIGCONT')
    await until(() => a.lines.some((l) => l === `lease-lost ${run.id}`), { timeout: 20_000, what: 'A to report its lease lost' })
    await sleep(500) // anything A would still write, it writes now
    a.child.kill('SIGKILL')
    expect(auditProblems(url, schema, { runs: 1, steps: 3 })).toEqual([])
    // s0 was committed by A before it paused (B replayed it); s1 and s2 are B's.
    const steps = await d.getSteps(run.id)
    expect(steps.map((s) => s.output.pid)).toEqual([a.child.pid, b.child.pid, b.child.pid])
    expect((await d.getRun(run.id)).output.by.pid).toBe(b.child.pid)
    await d.close()
  }, 120_000)

  it('the server restarted mid-run: workers reconnect, every run completes once', async () => {
    // A server of this test's own: restarting the shared one would cut other suites.
    const state = path.join(tempDir('pg-fault-restart-'), 'server.env')
    const senv = { ...process.env, DURABLY_PG_STATE: state, DURABLY_PG_PORT: '54700' }
    const script = path.join(ROOT, 'scripts', 'test-pg.sh')
    const started = spawnSync('bash', [script, 'start'], { env: senv, encoding: 'utf8' })
    const url = /DURABLY_TEST_PG_URL=(\S+)/.exec(started.stdout)?.[1]
    if (!url) throw new Error(`could not start a server: ${started.stderr}`)
    try {
      const N = 300
      const schema = pg.pgSchema('restart')
      const d = await openDriver(url, schema)
      const side = path.join(path.dirname(state), 'side.log')
      const env = { FAULT_PG_URL: url, FAULT_PG_SCHEMA: schema, FAULT_STEPS: '5', FAULT_STALE: '2000', FAULT_HEARTBEAT: '200' }
      await d.jobs.job.batchTrigger(Array.from({ length: N }, (_, k) => ({ input: { k } })))
      await d.close()
      const workers = [worker(side, env), worker(side, env)]
      // Both started (a worker still in init() when the server goes away fails
      // that call, which is not what this test is about).
      for (const w of workers) if (!(await lineWithin(w, /^ready$/, 30_000))) throw new Error(await explain(w, 'worker died before ready'))
      await until(() => readSideLog(side).filter((l) => l[0] === 'D').length >= 20, { timeout: 60_000, what: '20 runs done' })
      const r = spawnSync('bash', [script, 'restart'], { env: senv, encoding: 'utf8' })
      expect(r.status, r.stderr).toBe(0)
      for (const w of workers) {
        const ex = await exitWithin(w, 180_000)
        if (!ex || ex.code !== 0) throw new Error(await explain(w, 'worker did not finish after the restart'))
      }
      const problems = auditProblems(url, schema, { runs: N, steps: 5 })
      const { createDurably } = await import('../../index.js')
      const check = createDurably({ url, schema })
      const runs = await check.getRuns({ jobName: 'pg-fault' })
      await check.close()
      expect(runs.filter((x) => x.status !== 'completed').map((x) => `${x.id} ${x.status}`)).toEqual([])
      expect(problems.slice(0, 20)).toEqual([])
    } finally {
      spawnSync('bash', [script, 'stop'], { env: senv })
    }
  }, 300_000)

  it('every connection of a worker dropped mid-step: the run completes, each step once', async () => {
    const url = pg.pgUrl()
    const schema = pg.pgSchema('drop')
    // This test's own application_name: only its connections are cut, not
    // those of suites running beside it on the same server.
    const app = `durably_fault_drop_${process.pid}`
    const appUrl = withParam(url, 'application_name', app)
    const d = await openDriver(appUrl, schema)
    const side = path.join(tempDir('pg-fault-drop-'), 'side.log')
    const env = { FAULT_PG_URL: appUrl, FAULT_PG_SCHEMA: schema, FAULT_STEPS: '3', FAULT_STALE: '2000', FAULT_HEARTBEAT: '100' }
    fs.writeFileSync(`${side}.block`, '')
    const w = worker(side, env)
    const [run] = await d.jobs.job.batchTrigger([{ input: { k: 7 } }])
    if (!(await lineWithin(w, /^in-step /, 30_000))) throw new Error(await explain(w, 'never reached the step'))
    // Every connection of the worker (pool and listener), and the driver's
    // too (it must reconnect as well). psql is not one of them.
    const cut = rows(url, `SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE application_name = '${app}'`)
    expect(cut.length).toBeGreaterThan(1)
    fs.writeFileSync(`${side}.go`, '')
    const ex = await exitWithin(w, 60_000)
    if (!ex || ex.code !== 0) throw new Error(await explain(w, 'did not finish after its connections were cut'))
    expect((await d.getRun(run.id)).status).toBe('completed')
    expect(auditProblems(url, schema, { runs: 1, steps: 3 })).toEqual([])
    const execs = readSideLog(side).filter((l) => l[0] === 'E')
    expect(execs.map((l) => l[2]), w.lines.join('\n')).toEqual(['s0', 's1', 's2'])
    await d.close()
  }, 120_000)

  // The window of the flake above, made exact: the server has terminated the
  // worker's sessions, but the FATAL it sent is held back (a loaded machine:
  // the connection task has not read it yet), so the step's write goes out on
  // a dead connection and its first reply is that FATAL. The server never ran
  // the write; it is sent again on a fresh connection. Before the fix the
  // step failed, the run stayed running until it went stale, and recovery
  // executed s1 a second time.
  it('a step write sent on a session the server already terminated is sent again on a fresh connection: each step once', async () => {
    const url = pg.pgUrl()
    const schema = pg.pgSchema('dead')
    const app = `durably_fault_dead_${process.pid}`
    const d = await openDriver(url, schema)
    const proxy = await startProxy(withParam(url, 'application_name', app))
    try {
      const side = path.join(tempDir('pg-fault-dead-'), 'side.log')
      // No heartbeat or poll in the window (under load it lasts seconds): the
      // dead sessions stay idle in the pool for the step's write. (Before the
      // fix the run was re-executed once stale: after 30 s.)
      // The worker's exit check (a getRuns every 50 ms) waits for the release too:
      // in the window it could take the one pooled session before s1's write.
      const exitFile = `${side}.exit`
      const env = { FAULT_PG_URL: proxy.url, FAULT_PG_SCHEMA: schema, FAULT_STEPS: '3', FAULT_STALE: '30000', FAULT_HEARTBEAT: '10000', FAULT_POLLING: '10000', FAULT_EXIT: exitFile }
      fs.writeFileSync(`${side}.block`, '')
      const w = worker(side, env)
      const [run] = await d.jobs.job.batchTrigger([{ input: { k: 7 } }])
      // The worker publishes its run events (s0's, s1's start) on its pooled
      // sessions: they must be through before the hold, or the publish waits
      // on a held session and s1's write (after it) is never sent.
      const events = []
      const watching = (async () => {
        for await (const e of d.subscribe(run.id)) events.push(e)
      })()
      if (!(await lineWithin(w, /^in-step /, 30_000))) throw new Error(await explain(w, 'never reached the step'))
      await until(() => events.some((e) => e.type === 'step:start' && e.stepName === 's1'), {
        timeout: 20_000,
        what: "the worker's published start of s1",
      })
      await sleep(300) // (and their answers read by the worker)
      proxy.hold()
      const cut = rows(url, `SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE application_name = '${app}'`)
      expect(cut.length).toBeGreaterThan(1)
      await until(() => Number(pg.sql(url, `SELECT count(*) FROM pg_stat_activity WHERE application_name = '${app}'`)) === 0, {
        timeout: 20_000,
        what: "the worker's sessions to end on the server",
      })
      fs.writeFileSync(`${side}.go`, '')
      // s1's result ({ pid, gen, n: 701 }) sent on one of the dead sessions.
      // s1's write (its statement prepared, or its result { pid, gen, n: 701 }
      // bound) sent on one of the dead sessions.
      await until(() => proxy.sawHeld('INSERT INTO steps') || proxy.sawHeld('"n":701'), {
        timeout: 20_000,
        what: "s1's write on a terminated session",
      })
      proxy.release()
      fs.writeFileSync(exitFile, '')
      const ex = await exitWithin(w, 90_000)
      if (!ex || ex.code !== 0) throw new Error(await explain(w, 'did not finish after its sessions were terminated'))
      expect((await d.getRun(run.id)).status).toBe('completed')
      expect(auditProblems(url, schema, { runs: 1, steps: 3 })).toEqual([])
      const execs = readSideLog(side).filter((l) => l[0] === 'E')
      expect(execs.map((l) => l[2]), w.lines.join('\n')).toEqual(['s0', 's1', 's2'])
      // The write was not reported as failed: no step-write worker error.
      expect(w.lines.filter((l) => l.startsWith('worker-error') && l.includes(run.id))).toEqual([])
      await watching
    } finally {
      await proxy.close()
      await d.close()
    }
  }, 120_000)
})
