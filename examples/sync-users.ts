// A typed job with Zod schemas, steps, progress and logs; a flaky step fails
// the run, and `retry()` finishes it without repeating the completed steps.
//
//   npx tsx examples/sync-users.ts          (DURABLY_DB=path to choose the file)

import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { z } from 'zod'
import { createDurably, defineJob, withLogPersistence, RunFailedError } from 'durably'

const dbPath = process.env.DURABLY_DB ?? path.join(os.tmpdir(), `durably-sync-users-${process.pid}.db`)
if (!process.env.DURABLY_DB) {
  process.on('exit', () => ['', '-wal', '-shm'].forEach((s) => fs.rmSync(dbPath + s, { force: true })))
}

// A pretend remote API; counts calls so we can see what replay skipped.
const calls = { fetchUsers: 0, save: 0 }
let saveFailuresLeft = 1
const api = {
  async fetchUsers(orgId: string, { signal }: { signal: AbortSignal }) {
    calls.fetchUsers++
    signal.throwIfAborted()
    return [1, 2, 3, 4].map((n) => ({ id: `${orgId}-u${n}`, name: `User ${n}`, joinedAt: new Date(Date.UTC(2024, 0, n)) }))
  },
  async save(user: { id: string }) {
    calls.save++
    if (user.id.endsWith('u3') && saveFailuresLeft-- > 0) throw new Error(`upstream 503 while saving ${user.id}`)
  },
}

const syncUsers = defineJob({
  name: 'sync-users',
  input: z.object({ orgId: z.string().min(1) }),
  output: z.object({ syncedCount: z.number(), newest: z.date() }),
  run: async (ctx, input) => {
    ctx.log.info('starting', { orgId: input.orgId })
    // The step's result (with real Date objects) is stored before we go on.
    const users = await ctx.run('fetch-users', (signal) => api.fetchUsers(input.orgId, { signal }))
    for (const [i, user] of users.entries()) {
      await ctx.run(`save-${user.id}`, () => api.save(user))
      ctx.progress(i + 1, users.length, `saved ${user.id}`)
    }
    const newest = users.reduce((a, b) => (a.joinedAt > b.joinedAt ? a : b)).joinedAt
    return { syncedCount: users.length, newest }
  },
})

async function main() {
  const durably = createDurably({ path: dbPath, jobs: { syncUsers } })
  // Shutdown: in-flight job functions get up to 10 s, then their runs go back to `pending`.
  process.on('SIGTERM', () => durably.close({ timeout: 10_000 }))
  durably.use(withLogPersistence())
  durably.on('run:fail', (e) => console.log(`run:fail     step ${e.failedStepName}: ${e.error}`))
  durably.on('run:progress', (e) => console.log(`run:progress ${e.progress.current}/${e.progress.total} ${e.progress.message}`))
  await durably.init()

  // First attempt: saving the third user fails, so the run fails.
  const run = await durably.jobs.syncUsers.trigger({ orgId: 'acme' }, { labels: { tenant: 'acme' } })
  console.log(`triggered    ${run.id} (${run.disposition})`)
  try {
    await durably.waitForRun(run.id, { timeout: 30_000 })
  } catch (err) {
    if (!(err instanceof RunFailedError)) throw err
    console.log(`failed       ${err.message}`)
  }

  // retry(): the same run goes back to pending; completed steps are replayed
  // from the database, the failed step runs again.
  await durably.retry(run.id)
  await durably.waitForRun(run.id, { timeout: 30_000 })
  const done = await durably.jobs.syncUsers.getRun(run.id)
  if (!done || !done.output) throw new Error('the run should be completed')
  console.log(`completed    synced ${done.output.syncedCount} users, newest joined ${done.output.newest.toISOString()}`)
  console.log(`api calls    fetchUsers=${calls.fetchUsers} save=${calls.save}`)

  const steps = await durably.getSteps(run.id)
  console.log(`steps        ${steps.map((s) => `${s.name}:${s.status}`).join(' ')}`)
  const logs = await durably.getLogs(run.id)
  console.log(`logs         ${logs.map((l) => `${l.level} ${l.message}`).join(', ')}`)

  // triggerAndWait: the typed output in one call.
  const again = await durably.jobs.syncUsers.triggerAndWait({ orgId: 'globex' }, { timeout: 30_000 })
  console.log(`second run   synced ${again.output.syncedCount} users`)

  await durably.close()
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
