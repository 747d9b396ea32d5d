// Issue 5, fault suite 2: 4 worker processes on one file.
//
// 2,000 runs (a quarter with one of 8 concurrency keys) are triggered in
// batches while 4 worker processes execute them. Every execution records its
// start and end (pid, lease generation, system-wide monotonic time) in a side
// log; SQLite triggers record each step write and terminal status.
// Checked: each run completed exactly once; no run executed by two processes
// (nor twice), and a run claimed more than once (a run claimed ahead, handed
// back) executed only under its last lease; runs sharing a key never
// overlapped and ran in creation order.
// One of the workers does not take the side lock (`<db>-durably-lock`, issue 13).
import fs from 'node:fs'
import path from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { createDurably, defineJob } from '../../index.js'
import helpers from '../helpers.js'
import { AUDIT_SQL, envInt, exitWithin, fixture, groupBy, hasPython, lineWithin, readSideLog, sql } from './util.mjs'

const { tempDir, spawnNode, sleep } = helpers

const WORKERS = 4
const RUNS = envInt('DURABLY_FAULT_MP_RUNS', 2000)
const KEYS = 8

const children = new Set()
afterAll(() => {
  for (const w of children) w.child.kill('SIGKILL')
})

const job = defineJob({
  name: 'fault-mp',
  run: async () => {
    throw new Error('the driver never executes runs')
  },
})

describe('several worker processes on one file', () => {
  it(`${WORKERS} processes execute ${RUNS} runs, each exactly once, keyed runs never overlapping`, async () => {
    const t0 = Date.now()
    const dir = tempDir('durably-fault-mp-')
    const db = path.join(dir, 'mp.db')
    const side = path.join(dir, 'side.log')
    const marker = path.join(dir, 'all-triggered')
    const d = createDurably({ path: db, jobs: { job } })
    await d.migrate()
    const audited = hasPython()
    if (audited) sql(db, AUDIT_SQL, { script: true })

    const workerEnv = {
        FAULT_DB: db,
        FAULT_JOB: 'fault-mp',
        FAULT_STEPS: '1',
        FAULT_FSYNC: '0',
        FAULT_EXIT: marker,
        FAULT_CONCURRENCY: '4',
        FAULT_POLLING: '100',
        FAULT_HEARTBEAT: '200',
        // Generous: a reclaim here would be a false alarm caused by a starved
        // machine, not the claim protocol under test.
        FAULT_STALE: '20000',
        FAULT_BUSY_TIMEOUT: '5000',
      }
    const workers = []
    for (let i = 0; i < WORKERS; i++) {
      // Worker 0 runs without the side lock of waiting writers, as an older
      // durably (or another program) would: SQLite's lock alone keeps it safe.
      const env = i === 0 ? { ...workerEnv, DURABLY_TEST_NO_SIDE_LOCK: '1' } : workerEnv
      const w = spawnNode(fixture('fault-worker.js'), [side], { env })
      children.add(w)
      workers.push(w)
    }
    for (const w of workers) {
      if (!(await lineWithin(w, /^ready$/, 30_000))) {
        throw new Error(`worker died: ${w.lines.join('\n')} ${w.stderr()}`)
      }
    }

    // Trigger while the workers run: 20 batches, a quarter of the runs keyed.
    const keyOf = new Map()
    const BATCH = 100
    for (let i = 0; i < RUNS; ) {
      const items = []
      for (let j = 0; j < BATCH && i < RUNS; j++, i++) {
        const key = i % 4 === 1 ? `key-${(i >> 2) % KEYS}` : undefined
        items.push({ input: { i, key: key ?? null }, options: key ? { concurrencyKey: key } : undefined })
      }
      const created = await d.jobs.job.batchTrigger(items)
      for (const r of created) keyOf.set(r.id, r.concurrencyKey)
      await sleep(20)
    }
    fs.writeFileSync(marker, '')
    const tTriggered = Date.now()

    const exits = await Promise.all(workers.map((w) => exitWithin(w, 50_000)))
    exits.forEach((ex, i) => {
      const w = workers[i]
      if (!ex || ex.code !== 0) {
        w.child.kill('SIGKILL')
        throw new Error(`worker ${i} did not finish: ${JSON.stringify(ex)}\n${w.lines.join('\n')}\n${w.stderr()}`)
      }
    })
    for (const w of workers) expect(w.lines.filter((l) => !/^(ready|done)$/.test(l))).toEqual([])
    const tDone = Date.now()

    // ---- analysis -----------------------------------------------------------
    const runs = await d.getRuns({ jobName: 'fault-mp' })
    expect(runs.length).toBe(RUNS)
    const lines = readSideLog(side)
    const starts = groupBy(
      lines.filter((l) => l[0] === 'S'),
      (l) => l[1],
    )
    const finishes = groupBy(
      lines.filter((l) => l[0] === 'D'),
      (l) => l[1],
    )
    const problems = []
    const perPid = new Map()
    const spans = new Map() // runId → { pid, start, end }
    for (const r of runs) {
      if (r.status !== 'completed' || r.output.i !== r.input.i) {
        problems.push(`run ${r.id}: ${r.status} ${JSON.stringify(r.output)}`)
        continue
      }
      const s = starts.get(r.id) ?? []
      const f = finishes.get(r.id) ?? []
      if (s.length !== 1 || f.length !== 1) {
        problems.push(`run ${r.id} executed ${s.length} times (${s.map((x) => x[2]).join(',')})`)
        // Whatever happened, two executions must never overlap in time.
        const ex = s
          .map((x) => ({ id: `${x[2]}/${x[3]}`, start: BigInt(x[4]) }))
          .map((e) => ({ ...e, end: BigInt((f.find((y) => `${y[2]}/${y[3]}` === e.id) ?? [0, 0, 0, 0, 2n ** 62n])[4]) }))
          .sort((a, b) => (a.start < b.start ? -1 : 1))
        for (let i = 1; i < ex.length; i++) {
          if (ex[i].start < ex[i - 1].end) problems.push(`run ${r.id}: executions ${ex[i - 1].id} and ${ex[i].id} overlap`)
        }
        continue
      }
      if (s[0][2] !== f[0][2] || s[0][3] !== f[0][3] || Number(s[0][2]) !== r.output.by.pid) {
        problems.push(`run ${r.id}: started by ${s[0][2]}/${s[0][3]}, ended by ${f[0][2]}/${f[0][3]}, output by ${r.output.by.pid}`)
      }
      perPid.set(s[0][2], (perPid.get(s[0][2]) ?? 0) + 1)
      spans.set(r.id, { pid: s[0][2], start: BigInt(s[0][4]), end: BigInt(f[0][4]) })
    }

    // Keyed runs: never overlapping, in creation order (ids are monotonic ULIDs from one process).
    const byKey = groupBy(
      runs.filter((r) => r.concurrencyKey !== null),
      (r) => r.concurrencyKey,
    )
    let keyedRuns = 0
    let keyHandoffsAcrossProcesses = 0
    for (const [key, list] of byKey) {
      keyedRuns += list.length
      const ordered = list.map((r) => ({ id: r.id, ...spans.get(r.id) })).sort((a, b) => (a.start < b.start ? -1 : 1))
      for (let i = 1; i < ordered.length; i++) {
        const a = ordered[i - 1]
        const b = ordered[i]
        if (b.start < a.end) problems.push(`key ${key}: runs ${a.id} (pid ${a.pid}) and ${b.id} (pid ${b.pid}) overlap`)
        if (b.id < a.id) problems.push(`key ${key}: run ${b.id} ran after ${a.id} though created before it`)
        if (a.pid !== b.pid) keyHandoffsAcrossProcesses++
      }
    }
    expect(keyedRuns).toBe(RUNS / 4)
    expect(byKey.size).toBe(KEYS)

    let claimedAgain = null
    if (audited) {
      const runAudit = sql(db, 'SELECT run_id, group_concat(status), COUNT(*) FROM fault_run_audit GROUP BY run_id')
      if (runAudit.length !== RUNS) problems.push(`${runAudit.length} runs reached a terminal state`)
      for (const row of runAudit) if (row[2] !== 1 || row[1] !== 'completed') problems.push(`run ${row[0]} ended as ${row[1]}`)
      const stepAudit = sql(db, 'SELECT run_id, COUNT(*) FROM fault_step_audit GROUP BY run_id HAVING COUNT(*) <> 1')
      for (const row of stepAudit) problems.push(`run ${row[0]}: its step was written ${row[1]} times`)
      // A run claimed ahead that waited 20 ms for a slot was handed back and claimed again (lib/runner.js):
      // it may have a later lease, but it must have been executed once, under that last lease.
      const reclaimed = sql(db, "SELECT id, lease_generation FROM runs WHERE job_name = 'fault-mp' AND lease_generation <> 1")
      for (const [id, gen] of reclaimed) {
        const s = starts.get(id) ?? []
        if (s.length === 1 && Number(s[0][3]) !== gen) problems.push(`run ${id}: executed under lease ${s[0][3]}, its last is ${gen}`)
      }
      claimedAgain = reclaimed.length
    }

    const figures = {
      workers: WORKERS,
      runs: RUNS,
      keyedRuns,
      keyHandoffsAcrossProcesses,
      claimedAgain,
      runsPerProcess: [...perPid.values()],
      problems: problems.length,
      triggerSeconds: (tTriggered - t0) / 1000,
      seconds: (tDone - t0) / 1000,
    }
    console.log(`fault/multiprocess figures ${JSON.stringify(figures)}`)
    await d.close()
    expect(problems.slice(0, 20)).toEqual([])
    // The work was really shared.
    expect(perPid.size).toBeGreaterThanOrEqual(2)
  }, 90_000)
})
