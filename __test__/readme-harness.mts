// What README code blocks assume. __test__/readme.test.js imports from here,
// into each block, the free names the block uses and does not declare itself
// (`api`, `db`, `durably`, `syncUsers`, `failedRunId`, …). Everything here is a
// stub or a small real setup; nothing pretends a block passed.
//
// Importing this module opens `harness.db` in the block's temp directory with
// a started worker and leaves runs in each state the README's examples act on.
// `teardown()` (appended to every run block) closes the instances and fails the
// block if the harness's instance reported a `worker:error`.

import { createDurably, createDurablyHandler, defineJob, RunFailedError } from 'durably'
import type { Durably } from 'durably'
import { z } from 'zod'

export {
  createDurably,
  createDurablyHandler,
  defineJob,
  toNodeHandler,
  withLogPersistence,
  CancelledError,
  ConflictError,
  DurablyError,
  NotFoundError,
  RunFailedError,
  TimeoutError,
  ValidationError,
} from 'durably'
export { z } from 'zod'

// ---- stubs for the outside world the examples talk to ------------------------

export interface User {
  id: string
  name: string
}
/** The quick start's API client: two users per organisation. */
export const api = {
  fetchUsers: async (orgId: string, _options: { signal: AbortSignal }): Promise<User[]> => {
    if (orgId === 'org_fail') throw new Error('upstream 503')
    return [
      { id: `${orgId}-u1`, name: 'Ada' },
      { id: `${orgId}-u2`, name: 'Grace' },
    ]
  },
}
/** The quick start's database: records what was upserted. */
export const db = {
  upserted: [] as User[],
  upsert: async (user: User): Promise<void> => {
    db.upserted.push(user)
  },
}
export const download = async (url: string, _options: { signal: AbortSignal }) => new TextEncoder().encode(url)
export const resizeTo = (bytes: Uint8Array, width: number) => bytes.subarray(0, width)
export const upload = async (bytes: Uint8Array) => `thumbs/${bytes.length}`
export const deleteOlderThan = async (days: number) => days
export const loadA = async (_signal: AbortSignal) => ['a1', 'a2']
export const loadB = async (_signal: AbortSignal) => ['b1']
export const importItem = async (item: string, _options: { signal: AbortSignal }) => item.toUpperCase()
export const urls = ['https://example.com/a.png', 'https://example.com/b.png']
export const url = urls[0]!
export const metrics = {
  counts: new Map<string, number>(),
  increment: (name: string) => void metrics.counts.set(name, (metrics.counts.get(name) ?? 0) + 1),
}
/** A session store for the auth example: every request belongs to org_1. */
export const sessions = {
  fromRequest: async (_request: Request) => ({ orgId: 'org_1', role: 'member' }),
  get: async (_sessionId: string): Promise<{ orgId: string; role: string } | undefined> => ({ orgId: 'org_1', role: 'admin' }),
}

// ---- jobs and an instance with runs in every state ---------------------------

export const syncUsers = defineJob({
  name: 'sync-users',
  input: z.object({ orgId: z.string() }),
  output: z.object({ syncedCount: z.number() }),
  run: async (ctx, input) => {
    const users = await ctx.run('fetch-users', (signal) => api.fetchUsers(input.orgId, { signal }))
    return { syncedCount: users.length }
  },
})
export const resize = defineJob({
  name: 'resize-image',
  input: z.object({ url: z.string().url(), width: z.number().int() }),
  output: z.object({ key: z.string() }),
  run: async (ctx, { url, width }) => ({ key: await ctx.run('upload', () => `thumbs/${width}/${url.length}`) }),
})
export const reportJob = defineJob({
  name: 'monthly-report',
  input: z.object({ month: z.string() }),
  run: async (ctx, { month }) => ctx.run('render', () => `report ${month}`),
})

const workerErrors: unknown[] = []
export const durably = createDurably({
  path: 'harness.db',
  pollingInterval: 50,
  heartbeatInterval: 100,
  staleThreshold: 1000,
  jobs: { syncUsers, resize, report: reportJob },
})
durably.on('worker:error', (e) => workerErrors.push(e.error))
await durably.init()

/** A completed run of sync-users. */
export const completedRunId = (await durably.jobs.syncUsers.triggerAndWait({ orgId: 'org_1' }, { timeout: 20_000 })).id
export const id = completedRunId
export const runId = completedRunId

/** A failed run of sync-users (its fetch step threw). */
export const failedRunId = await durably.jobs.syncUsers
  .triggerAndWait({ orgId: 'org_fail' }, { timeout: 20_000 })
  .then(
    () => {
      throw new Error('harness: the org_fail run should have failed')
    },
    (err: unknown) => {
      if (err instanceof RunFailedError) return err.runId
      throw err
    },
  )

/** A pending run: of a job this process does not register, so its worker never claims it. */
export const pendingRunId = await (async () => {
  const other = createDurably({ path: 'harness.db', jobs: { parked: defineJob({ name: 'parked', run: () => null }) } })
  const run = await other.jobs.parked.trigger()
  await other.close()
  return run.id
})()

/** A handler over the harness's instance, for the mounting examples. */
export const handler = createDurablyHandler(durably)
/** What the HTTP handler example passes: no auth, no hooks, a GET /runs request. */
export const auth = { authenticate: (_request: Request) => ({}) }
export const onRequest = () => undefined
export const onError = (err: unknown) => workerErrors.push(err)
export const request = new Request('http://localhost/api/durably/runs')

/** Closes the block's instances and the harness's; throws if anything reported an error. */
export async function teardown(instances: Durably<any>[] = []): Promise<void> {
  for (const d of [...instances, durably]) await d.close() // a second close() is a no-op
  if (workerErrors.length) throw new Error(`harness: worker:error or onError: ${workerErrors.map(String).join('; ')}`)
}
