// durably/client inference: job names, trigger inputs and outputs come from
// the server's job definitions through a type-only import.
import { createDurablyClient, DurablyClientError, isTerminalEvent } from 'durably/client'
import type { DurablyClient, JobClient, RunOf, ClientRunEvent, ClientStep } from 'durably/client'
import type { Durably, Log, Progress } from 'durably'
import { defineJob } from 'durably'
import { z } from 'zod'

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false
type Expect<T extends true> = T

// What a server module would export (only its type crosses to the client).
const syncUsers = defineJob({
  name: 'sync-users',
  input: z.object({ orgId: z.string(), limit: z.number().default(10) }),
  output: z.object({ syncedCount: z.number() }),
  run: async () => ({ syncedCount: 1 }),
})
const ping = defineJob({ name: 'ping', run: async () => 'pong' as const })
const jobs = { syncUsers, ping }

const client = createDurablyClient<typeof jobs>({ baseUrl: 'http://localhost/api/durably' })

export async function usage() {
  // trigger: the name picks the input type; the schema's input type (limit optional)
  const t = await client.trigger('sync-users', { orgId: 'o1' })
  type _t = Expect<Equal<typeof t, { runId: string; disposition: 'created' | 'idempotent' | 'coalesced' }>>
  await client.trigger('sync-users', { orgId: 'o1', limit: 5 }, { idempotencyKey: 'k', labels: { team: 'a' } })
  // @ts-expect-error orgId is required
  await client.trigger('sync-users', {})
  // @ts-expect-error orgId is a string
  await client.trigger('sync-users', { orgId: 1 })
  // @ts-expect-error no job has this name
  await client.trigger('sync-user', { orgId: 'o1' })
  // A job without an input schema takes any value, or none.
  await client.trigger('ping')

  // triggerAndWait: the output type of that job
  const done = await client.triggerAndWait('sync-users', { orgId: 'o1' }, { timeout: 1000, onProgress: (p) => p.current })
  type _out = Expect<Equal<typeof done.output, { syncedCount: number }>>
  const pong = await client.triggerAndWait('ping')
  type _pong = Expect<Equal<typeof pong.output, 'pong'>>

  // getRun: a union discriminated by jobName
  const run = await client.getRun('r1')
  if (run && run.jobName === 'sync-users') {
    type _in = Expect<Equal<typeof run.input, { orgId: string; limit: number }>>
    type _o = Expect<Equal<typeof run.output, { syncedCount: number } | null>>
  }
  if (run && run.jobName === 'ping') {
    type _o = Expect<Equal<typeof run.output, 'pong' | null>>
  }
  // getRuns with one job name: that job's runs
  const runs = await client.getRuns({ jobName: 'sync-users', status: ['running', 'pending'] })
  type _runs = Expect<Equal<typeof runs, RunOf<typeof jobs, 'sync-users'>[]>>
  const out: { syncedCount: number } | null = runs[0].output
  // @ts-expect-error not a job name
  await client.getRuns({ jobName: 'nope' })
  // @ts-expect-error not a status
  await client.getRuns({ status: 'leased' })

  // a job handle
  const job = client.job('sync-users')
  type _job = Expect<Equal<typeof job, JobClient<typeof jobs, 'sync-users'>>>
  const r2 = await job.triggerAndWait({ orgId: 'x' })
  type _r2 = Expect<Equal<typeof r2.output, { syncedCount: number }>>
  // @ts-expect-error input of the job
  await job.trigger({ org: 'x' })

  const steps = await client.getSteps('r1')
  type _steps = Expect<Equal<typeof steps, ClientStep[]>>
  const logs = await client.getLogs('r1')
  type _logs = Expect<Equal<typeof logs, Log[]>>
  const again = await client.retrigger('r1')
  type _again = Expect<Equal<typeof again, { runId: string }>>
  await client.retry('r1')
  await client.cancel('r1')
  await client.deleteRun('r1')

  // subscribe: narrowing on type
  for await (const e of client.subscribe('r1', { after: 'ab12cd34.5' })) {
    type _e = Expect<Equal<typeof e, ClientRunEvent>>
    if (e.type === 'run:progress') {
      type _p = Expect<Equal<typeof e.progress, Progress>>
    }
    if (e.type === 'run:snapshot' && e.run) void e.run.isTerminal
    if (e.type === 'log:write') void e.message.toUpperCase()
    if (isTerminalEvent(e)) break
  }
  for await (const e of client.subscribeRuns({ jobName: 'ping' })) {
    if (e.type === 'reconnect') continue
    void e.runId
  }

  try {
    await client.cancel('r1')
  } catch (err) {
    if (err instanceof DurablyClientError) {
      const status: number | null = err.status
      const code: string = err.code
      void [status, code]
    }
  }
  void out
}

// A Durably instance type works as well.
declare const server: Durably<typeof jobs>
const fromInstance = createDurablyClient<typeof server>({ baseUrl: '/api' })
type _sameNames = Expect<Equal<Parameters<typeof fromInstance.job>[0], 'sync-users' | 'ping'>>

// Untyped: any job name, unknown input and output.
const untyped: DurablyClient = createDurablyClient({ baseUrl: '/api', headers: () => ({ authorization: 'Bearer t' }) })
export async function untypedUsage() {
  const r = await untyped.triggerAndWait('anything', { a: 1 })
  type _u = Expect<Equal<typeof r.output, unknown>>
}

// @ts-expect-error baseUrl is required
createDurablyClient({})
