// Crash and resume: a worker process is killed with SIGKILL in the middle of
// a step; a new process opening the same file resumes the run. Completed
// steps are not executed again; the interrupted step runs again (steps are
// at-least-once, so make them idempotent).
//
//   npx tsx examples/crash-resume.ts        (DURABLY_DB=path to choose the file)

import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { spawnSync } from 'node:child_process'
import { z } from 'zod'
import { createDurably, defineJob } from 'durably'

const dbPath = process.env.DURABLY_DB ?? path.join(os.tmpdir(), `durably-crash-resume-${process.pid}.db`)
const ledger = `${dbPath}.ledger` // every real execution of a step appends a line here
const role = process.argv[2] === 'worker' ? 'worker' : 'main'

/** Records that a step's function really ran (in which process). */
function record(what: string) {
  fs.appendFileSync(ledger, `${what} (${role} pid ${process.pid})\n`)
}

const importOrders = defineJob({
  name: 'import-orders',
  input: z.object({ day: z.string() }),
  output: z.object({ charged: z.number() }),
  run: async (ctx, { day }) => {
    const orders = await ctx.run('download', () => {
      record('download')
      return ['o1', 'o2', 'o3'].map((id) => ({ id, amount: id.length * 10 }))
    })
    for (const order of orders) {
      await ctx.run(`charge-${order.id}`, () => {
        record(`charge-${order.id}`)
        if (order.id === 'o2' && process.env.CRASH_IN_STEP === 'charge-o2') {
          console.log('[worker] killed with SIGKILL in the middle of step charge-o2')
          process.kill(process.pid, 'SIGKILL')
        }
        return { chargedAt: new Date() }
      })
    }
    await ctx.run('send-report', () => record('send-report'))
    return { charged: orders.length }
  },
})

// Fast timings so the example takes seconds: a run whose heartbeat is older
// than staleThreshold is considered abandoned and is resumed by any worker.
const timings = { pollingInterval: 100, heartbeatInterval: 200, staleThreshold: 1000 }

async function worker() {
  const durably = createDurably({ path: dbPath, jobs: { importOrders }, ...timings })
  await durably.init()
  const run = await durably.jobs.importOrders.trigger({ day: '2024-06-01' }, { idempotencyKey: 'orders-2024-06-01' })
  console.log(`[worker] triggered ${run.id}`)
  await durably.waitForRun(run.id) // never returns: the process dies in charge-o2
}

async function main() {
  for (const f of [dbPath, `${dbPath}-wal`, `${dbPath}-shm`, ledger]) fs.rmSync(f, { force: true })

  // 1. A child process starts the run and dies in the middle of step charge-o2.
  const child = spawnSync(process.execPath, [...process.execArgv, process.argv[1]!, 'worker'], {
    env: { ...process.env, DURABLY_DB: dbPath, CRASH_IN_STEP: 'charge-o2' },
    stdio: 'inherit',
  })
  console.log(`[main] worker exited with signal ${child.signal}`)

  // 2. This process opens the same file. The run is still `running` with a
  //    stale heartbeat; the worker reclaims it and replays it.
  const durably = createDurably({ path: dbPath, jobs: { importOrders }, ...timings })
  // Shutdown: in-flight job functions get up to 10 s, then their runs go back to `pending`.
  process.on('SIGTERM', () => durably.close({ timeout: 10_000 }))
  durably.on('step:start', (e) => console.log(`[main] executing step ${e.stepName}`))
  await durably.init()
  // Same idempotency key: we get the existing run back instead of a new one.
  const run = await durably.jobs.importOrders.trigger({ day: '2024-06-01' }, { idempotencyKey: 'orders-2024-06-01' })
  console.log(`[main] found run ${run.id} (${run.disposition}, status ${run.status})`)
  const done = await durably.jobs.importOrders.triggerAndWait(
    { day: '2024-06-01' },
    { idempotencyKey: 'orders-2024-06-01', timeout: 30_000 },
  )
  console.log(`[main] run completed: charged ${done.output.charged} orders`)

  const steps = await durably.getSteps(run.id)
  console.log(`[main] steps: ${steps.map((s) => s.name).join(', ')}`)
  console.log('[main] what really executed:')
  for (const line of fs.readFileSync(ledger, 'utf8').trim().split('\n')) console.log(`  ${line}`)
  await durably.close()
  if (!process.env.DURABLY_DB) {
    for (const f of [dbPath, `${dbPath}-wal`, `${dbPath}-shm`, ledger]) fs.rmSync(f, { force: true })
  }
}

;(role === 'worker' ? worker() : main()).catch((err) => {
  console.error(err)
  process.exit(1)
})
