// Issue 5, fault suite 1: random SIGKILLs of a worker process.
//
// A driver (this test) triggers N runs of a multi-step job on a file, then
// repeatedly starts a worker process and SIGKILLs it after a random 20–150 ms
// (mostly after its init(), sometimes counted from spawn so kills also land
// in open/migrate/recovery), until the kill budget is spent; a last worker
// then finishes everything. Every step appends `(runId, step, pid, gen)` to
// an fsync'd side log before returning; SQLite triggers record every step
// row and every terminal run status inside the engine's own transactions.
//
// Checked: every run completed exactly once with the right output; every
// step committed exactly once; no step executed after its commit (the last
// execution on record is the committed one); every other execution of a
// step was cut by a kill (its process was SIGKILLed), at most once per kill
// and per run (only the step in flight).
//
// When fewer than 10 runs are pending, the driver triggers RUNS/4 more, so that
// kills keep landing in steps whatever the machine's speed.
// DURABLY_FAULT_KILLS (default 60) and DURABLY_FAULT_RUNS (default 80) size it;
// e.g. DURABLY_FAULT_KILLS=1000 DURABLY_FAULT_RUNS=2000 npx vitest run __test__/fault/kill.test.mjs
import path from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { createDurably, defineJob } from '../../index.js'
import helpers from '../helpers.js'
import {
  AUDIT_SQL,
  envInt,
  exitWithin,
  fixture,
  groupBy,
  hasPython,
  lineWithin,
  rand,
  readSideLog,
  sql,
} from './util.mjs'

const { tempDir, spawnNode } = helpers

const KILLS = envInt('DURABLY_FAULT_KILLS', 60)
const RUNS = envInt('DURABLY_FAULT_RUNS', 80)
const STEPS = 5
// ~0.5 s per kill cycle on a loaded 2-core machine, plus the final drain.
const TIMEOUT = 60_000 + KILLS * 1_500

const children = new Set()
afterAll(() => {
  for (const w of children) w.child.kill('SIGKILL')
})

const job = defineJob({
  name: 'fault-multi',
  run: async () => {
    throw new Error('the driver never executes runs')
  },
})

describe('random SIGKILL of a worker process', () => {
  it(
    `loses nothing and re-runs only steps in flight (${KILLS} kills)`,
    async () => {
      const t0 = Date.now()
      const dir = tempDir('durably-fault-kill-')
      const db = path.join(dir, 'kill.db')
      const side = path.join(dir, 'side.log')
      // The driver only triggers and reads: it never starts a worker.
      const d = createDurably({ path: db, jobs: { job } })
      await d.migrate()
      const audited = hasPython()
      if (audited) sql(db, AUDIT_SQL, { script: true })
      else console.warn('python3 with sqlite3 not found: the trigger-based audit checks are skipped')

      let k = 0
      const trigger = async (n) => {
        const items = []
        for (let i = 0; i < n; i++) items.push({ input: { k: k++ } })
        await d.jobs.job.batchTrigger(items)
      }
      const pending = async () => (await d.getRuns({ status: 'pending', limit: 10 })).length
      await trigger(RUNS)

      const env = { FAULT_DB: db, FAULT_JOB: 'fault-multi', FAULT_STEPS: String(STEPS), FAULT_STEP_MS: 'rand:3' }
      const killed = new Set()
      const pids = []
      let kills = 0
      let startupKills = 0
      let topUps = 0
      let selfExits = 0
      const run = (w) => {
        children.add(w)
        pids.push(w.child.pid)
        w.exited.then(() => children.delete(w))
      }
      const explain = async (w, what) => {
        const ex = await w.exited
        return `${what}: exit ${ex.code}/${ex.signal}\nstdout:\n${w.lines.join('\n')}\nstderr:\n${ex.stderr}`
      }

      while (kills < KILLS) {
        if ((await pending()) < 10) {
          // The workers were faster than the kill budget: more work, so kills land in steps.
          topUps++
          await trigger(Math.max(10, Math.ceil(RUNS / 4)))
        }
        const w = spawnNode(fixture('fault-worker.js'), [side], { env })
        run(w)
        const fromSpawn = Math.random() < 0.2
        if (!fromSpawn && !(await lineWithin(w, /^ready$/, 30_000))) {
          throw new Error(await explain(w, 'worker died before ready'))
        }
        const ex = await exitWithin(w, rand(20, 150))
        if (ex) {
          // Exited on its own: only allowed as a clean 'done'.
          if (ex.code !== 0) throw new Error(await explain(w, 'worker failed'))
          selfExits++
          continue
        }
        w.child.kill('SIGKILL')
        const gone = await w.exited
        if (gone.signal !== 'SIGKILL') {
          // It exited by itself between the timeout and the kill.
          if (gone.code !== 0) throw new Error(await explain(w, 'worker failed'))
          selfExits++
          continue
        }
        killed.add(w.child.pid)
        kills++
        if (!w.lines.includes('ready')) startupKills++
      }

      // A last worker finishes everything.
      const last = spawnNode(fixture('fault-worker.js'), [side], { env })
      run(last)
      const ex = await exitWithin(last, 60_000)
      if (!ex || ex.code !== 0) {
        last.child.kill('SIGKILL')
        throw new Error(await explain(last, 'final worker did not finish'))
      }
      expect(last.lines.filter((l) => l.startsWith('worker-error') || l.startsWith('lease-lost'))).toEqual([])
      expect(new Set(pids).size).toBe(pids.length) // no pid reuse: the analysis names processes by pid

      // ---- analysis ---------------------------------------------------------
      const runs = await d.getRuns({ jobName: 'fault-multi' })
      expect(runs.length).toBe(k)
      const lines = readSideLog(side)
      const execs = groupBy(
        lines.filter((l) => l[0] === 'E'),
        (l) => `${l[1]} ${l[2]}`,
      )
      const ends = groupBy(
        lines.filter((l) => l[0] === 'D'),
        (l) => l[1],
      )
      const problems = []
      const lastPid = last.child.pid
      let byLastWorker = 0
      let reexecuted = 0 // step executions cut by a kill and executed again (allowed)
      const hitBy = new Map() // killed pid → uncommitted step executions
      for (const r of runs) {
        if (r.status !== 'completed') {
          problems.push(`run ${r.id} is ${r.status}`)
          continue
        }
        const out = r.output
        if (out.by.pid === lastPid) byLastWorker++
        if (out.k !== r.input.k || out.steps.length !== STEPS) problems.push(`run ${r.id} output wrong`)
        const steps = await d.getSteps(r.id)
        if (steps.length !== STEPS) problems.push(`run ${r.id} has ${steps.length} steps`)
        for (let i = 0; i < STEPS; i++) {
          const s = steps[i]
          const name = `s${i}`
          if (!s || s.name !== name || s.status !== 'completed' || s.index !== i) {
            problems.push(`run ${r.id} step ${i} is ${JSON.stringify(s)}`)
            continue
          }
          if (s.output.n !== r.input.k * 100 + i) problems.push(`run ${r.id} step ${name} output ${s.output.n}`)
          if (JSON.stringify(out.steps[i]) !== JSON.stringify(s.output)) {
            problems.push(`run ${r.id} output.steps[${i}] differs from the stored step`)
          }
          const ex = execs.get(`${r.id} ${name}`) ?? []
          const lastEx = ex[ex.length - 1]
          // The committed execution is the last one on record: nothing ran after the commit.
          if (!lastEx || Number(lastEx[3]) !== s.output.pid || Number(lastEx[4]) !== s.output.gen) {
            problems.push(`run ${r.id} step ${name}: committed ${JSON.stringify(s.output)}, last execution ${lastEx}`)
          }
          const earlier = ex.slice(0, -1)
          for (const e of earlier) {
            const p = Number(e[3])
            if (!killed.has(p)) problems.push(`run ${r.id} step ${name} executed again, though pid ${p} was not killed`)
            hitBy.set(p, (hitBy.get(p) ?? 0) + 1)
          }
          if (new Set(earlier.map((e) => e[3])).size !== earlier.length) {
            problems.push(`run ${r.id} step ${name} executed twice by one killed process`)
          }
          reexecuted += earlier.length
        }
        const d2 = ends.get(r.id) ?? []
        const lastD = d2[d2.length - 1]
        if (!lastD || Number(lastD[2]) !== out.by.pid || Number(lastD[3]) !== out.by.gen) {
          problems.push(`run ${r.id}: completed by ${JSON.stringify(out.by)}, last job end ${lastD}`)
        }
        for (const e of d2.slice(0, -1)) {
          if (!killed.has(Number(e[2]))) problems.push(`run ${r.id} ended twice, though pid ${e[2]} was not killed`)
        }
      }
      // Only the step in flight: a killed process cut at most one step per run it held.
      for (const [key, list] of execs) {
        const byPid = groupBy(list.slice(0, -1), (e) => e[3])
        for (const [p, l] of byPid) if (l.length > 1) problems.push(`${key}: ${l.length} cut executions by pid ${p}`)
      }
      const perPidRun = groupBy(
        [...execs.values()].flatMap((l) => l.slice(0, -1)),
        (e) => `${e[3]} ${e[1]}`,
      )
      for (const [key, l] of perPidRun) if (l.length > 1) problems.push(`pid/run ${key}: ${l.length} steps cut by one kill`)

      let committedTwice = 0
      let completedTwice = 0
      if (audited) {
        const stepAudit = sql(
          db,
          "SELECT run_id, name, COUNT(*) FROM fault_step_audit WHERE status = 'completed' GROUP BY run_id, name HAVING COUNT(*) <> 1",
        )
        committedTwice = stepAudit.length
        for (const row of stepAudit) problems.push(`step ${row[0]}/${row[1]} committed ${row[2]} times`)
        const [[stepRows]] = sql(db, 'SELECT COUNT(*) FROM fault_step_audit')
        if (stepRows !== k * STEPS) problems.push(`${stepRows} step writes for ${k * STEPS} steps`)
        const runAudit = sql(db, 'SELECT run_id, group_concat(status), COUNT(*) FROM fault_run_audit GROUP BY run_id')
        if (runAudit.length !== k) problems.push(`${runAudit.length} runs reached a terminal state, expected ${k}`)
        for (const row of runAudit) {
          if (row[2] !== 1 || row[1] !== 'completed') {
            completedTwice++
            problems.push(`run ${row[0]} ended as ${row[1]}`)
          }
        }
      }

      const figures = {
        kills,
        startupKills,
        killsInAStep: hitBy.size,
        runs: k,
        steps: k * STEPS,
        stepExecutions: [...execs.values()].reduce((n, l) => n + l.length, 0),
        reexecutedInFlightSteps: reexecuted,
        illegalDuplicates: problems.length,
        committedTwice,
        completedTwice,
        runsLeftForTheLastWorker: byLastWorker,
        cycles: pids.length,
        selfExits,
        topUps,
        seconds: (Date.now() - t0) / 1000,
      }
      console.log(`fault/kill figures ${JSON.stringify(figures)}`)
      await d.close()
      expect(problems.slice(0, 20)).toEqual([])
      expect(kills).toBeGreaterThanOrEqual(KILLS)
    },
    TIMEOUT,
  )
})
