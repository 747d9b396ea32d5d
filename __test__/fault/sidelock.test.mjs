// Issue 13: the side lock that queues durably's waiting writers
// (`<db>-durably-lock`, src/store/side_lock.rs) must never hold anyone up.
//
// Another process (Python) takes the side lock and is then stopped with
// SIGSTOP, so it holds it for as long as the test wants: two worker processes
// still execute every run (a writer waits for the side lock a bounded time,
// then polls SQLite's lock itself), with no worker:error. The holder is then
// SIGKILLed and the lock is free again (the kernel drops it with the process).
// A mixed fleet (a worker without the side lock, as an older durably) is
// covered by fault/multiprocess.test.mjs; a process that holds SQLite's own
// lock (DB_BUSY after busyTimeout) by fault/busy.test.mjs.
import path from 'node:path'
import { spawn, spawnSync } from 'node:child_process'
import { afterAll, describe, expect, it } from 'vitest'
import { createDurably, defineJob } from '../../index.js'
import helpers from '../helpers.js'
import { exitWithin, fixture, hasPython, lineWithin } from './util.mjs'

const { tempDir, spawnNode, until } = helpers

const RUNS = 200
const children = new Set()
afterAll(() => {
  for (const c of children) c.kill('SIGKILL')
})

const job = defineJob({
  name: 'fault-side',
  run: async () => {
    throw new Error('the driver never executes runs')
  },
})

/** Python takes the side lock of `db` and keeps it until killed. */
function holdSideLock(db) {
  const child = spawn(
    'python3',
    [
      '-c',
      'import fcntl,sys,time\n' +
        'f=open(sys.argv[1] + "-durably-lock", "a+")\n' +
        'fcntl.flock(f, fcntl.LOCK_EX)\n' +
        'print("locked", flush=True)\n' +
        'time.sleep(600)',
      db,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  )
  children.add(child)
  const locked = new Promise((resolve, reject) => {
    child.stdout.on('data', (c) => String(c).includes('locked') && resolve())
    child.on('exit', (code) => reject(new Error(`side lock holder exited (${code})`)))
  })
  return { child, locked }
}

/** Whether the side lock of `db` is free (Python tries it without waiting). */
function sideLockFree(db) {
  const r = spawnSync('python3', [
    '-c',
    'import fcntl,sys\n' +
      'f=open(sys.argv[1] + "-durably-lock", "a+")\n' +
      'try:\n  fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept OSError:\n  sys.exit(3)',
    db,
  ])
  if (r.status !== 0 && r.status !== 3) throw new Error(`probe failed: ${r.stderr}`)
  return r.status === 0
}

describe('the side lock of waiting writers', () => {
  it('a stopped process holding it does not hold up the workers; killed, it leaves the lock free', async (ctx) => {
    if (!hasPython()) {
      console.log('fault/sidelock SKIP: python3 is needed to hold the side lock from another process')
      ctx.skip('python3 missing')
      return
    }
    const dir = tempDir('durably-fault-side-')
    const db = path.join(dir, 'side.db')
    const d = createDurably({ path: db, jobs: { job } })
    await d.migrate()
    await d.jobs.job.batchTrigger(
      Array.from({ length: RUNS }, (_, i) => ({ input: { i }, options: { concurrencyKey: `k${i % 8}` } })),
    )
    // Durably made the side file and does not hold it while idle.
    expect(sideLockFree(db)).toBe(true)

    const holder = holdSideLock(db)
    await holder.locked
    expect(sideLockFree(db)).toBe(false)
    holder.child.kill('SIGSTOP')

    const t0 = Date.now()
    const workers = []
    for (let i = 0; i < 2; i++) {
      const w = spawnNode(fixture('fault-worker.js'), [path.join(dir, 'side.log')], {
        env: {
          FAULT_DB: db,
          FAULT_JOB: 'fault-side',
          FAULT_STEPS: '2',
          FAULT_FSYNC: '0',
          FAULT_CONCURRENCY: '4',
          FAULT_POLLING: '50',
          FAULT_HEARTBEAT: '100',
          FAULT_STALE: '20000',
          FAULT_BUSY_TIMEOUT: '5000',
        },
      })
      children.add(w.child)
      workers.push(w)
    }
    for (const w of workers) {
      expect(await lineWithin(w, /^ready$/, 30_000), w.stderr()).toBeTruthy()
    }
    // Every run done and both workers gone idle, though the side lock never came free.
    const exits = await Promise.all(workers.map((w) => exitWithin(w, 60_000)))
    for (const [i, ex] of exits.entries()) {
      expect(ex && ex.code, `worker ${i}: ${workers[i].lines.join('\n')}\n${workers[i].stderr()}`).toBe(0)
      expect(workers[i].lines.filter((l) => !/^(ready|done)$/.test(l))).toEqual([])
    }
    const took = Date.now() - t0
    const runs = await d.getRuns({ jobName: 'fault-side' })
    expect(runs.length).toBe(RUNS)
    expect(runs.filter((r) => r.status !== 'completed')).toEqual([])
    expect(sideLockFree(db)).toBe(false) // still held by the stopped process

    holder.child.kill('SIGKILL')
    await until(() => sideLockFree(db), { timeout: 10_000, what: 'side lock free once its holder is killed' })
    await d.close()
    console.log(`fault/sidelock: ${RUNS} runs by 2 workers in ${took} ms with the side lock held by a stopped process`)
  }, 120_000)
})
