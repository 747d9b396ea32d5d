// Type tests for index.d.ts. Checked by `tsc --noEmit` (see types.test.js);
// never executed. `Expect<Equal<A, B>>` fails to compile when inference
// drifts; each `@ts-expect-error` line must NOT compile (tsc reports an
// unused directive otherwise).

import { z } from 'zod'
import {
  createDurably,
  createDurablyHandler,
  defineJob,
  toNodeHandler,
  withLogPersistence,
  CancelledError,
  ConflictError,
  Durably,
  DurablyError,
  LeaseLostError,
  NotFoundError,
  ReplayMismatchError,
  RunFailedError,
  TimeoutError,
  ValidationError,
} from 'durably'
import type {
  DurablyEvent,
  DurablyPlugin,
  JobContext,
  JobDefinition,
  JobHandle,
  Log,
  Progress,
  Run,
  StandardSchemaV1,
  Step,
  SubscribeEvent,
  TriggeredRun,
} from 'durably'

// ---- helpers ----------------------------------------------------------------

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false
type Expect<T extends true> = T
declare function expectType<T>(value: T): void

// ---- defineJob with Zod 4 -----------------------------------------------------

const syncUsers = defineJob({
  name: 'sync-users',
  input: z.object({ orgId: z.string(), limit: z.number().default(10) }),
  output: z.object({ syncedCount: z.number() }),
  run: async (ctx, input) => {
    type _input = Expect<Equal<typeof input, { orgId: string; limit: number }>>
    type _ctx = Expect<Equal<typeof ctx, JobContext>>
    const users = await ctx.run('fetch-users', async (signal) => {
      type _signal = Expect<Equal<typeof signal, AbortSignal>>
      return [{ id: 'u1', name: 'Ada' }]
    })
    type _users = Expect<Equal<typeof users, { id: string; name: string }[]>>
    const n = await ctx.run('sync-count', () => 42)
    type _n = Expect<Equal<typeof n, number>>
    const d = await ctx.run('when', () => Promise.resolve(new Date()))
    type _d = Expect<Equal<typeof d, Date>>
    const nothing = await ctx.run('side-effect', () => {})
    type _nothing = Expect<Equal<typeof nothing, void>>
    ctx.progress(1, users.length, 'saved')
    ctx.progress(1)
    ctx.setProgress({ current: 1, total: 2 })
    ctx.log.info('starting', { orgId: input.orgId })
    ctx.log.warn('careful')
    ctx.log.error('oops', new Error('x'))
    // @ts-expect-error progress needs a number
    ctx.progress('1')
    // @ts-expect-error a step needs a function
    void ctx.run('x')
    // @ts-expect-error log messages are strings
    ctx.log.info({ orgId: input.orgId })
    expectType<string>(ctx.runId)
    expectType<string>(ctx.jobName)
    return { syncedCount: users.length }
  },
})

type SyncDef = typeof syncUsers
type _syncDef = Expect<
  Equal<SyncDef, JobDefinition<{ orgId: string; limit?: number | undefined }, { orgId: string; limit: number }, { syncedCount: number }, 'sync-users'>>
>

// A run returning the wrong shape for its output schema does not compile.
// (One line: TypeScript 5 reports this error on the call, TypeScript 7 on the `output` property.)
// @ts-expect-error syncedCount must be a number
defineJob({ name: 'bad-output', output: z.object({ syncedCount: z.number() }), run: async () => ({ syncedCount: 'many' }) })

// Transforming schemas: trigger takes the schema's input, run gets its output.
const lengthJob = defineJob({
  name: 'length',
  input: z.string().transform((s) => s.length),
  output: z.number().transform((n) => String(n)),
  run: (_ctx, input) => {
    type _in = Expect<Equal<typeof input, number>>
    return input * 2
  },
})
type _lengthDef = Expect<Equal<typeof lengthJob, JobDefinition<string, number, string, 'length'>>>

// ---- a non-Zod validator: a hand-written Standard Schema ------------------------

/** Accepts a numeric string, produces a number. */
const numericString: StandardSchemaV1<string, number> = {
  '~standard': {
    version: 1,
    vendor: 'hand-written',
    validate: (value) =>
      typeof value === 'string' && /^\d+$/.test(value)
        ? { value: Number(value) }
        : { issues: [{ message: 'expected a numeric string', path: [] }] },
  },
}

const square = defineJob({
  name: 'square',
  input: numericString,
  run: async (ctx, n) => {
    type _n = Expect<Equal<typeof n, number>>
    return ctx.run('square', () => n * n)
  },
})
type _squareDef = Expect<Equal<typeof square, JobDefinition<string, number, number, 'square'>>>

// ---- without schemas: unknown input, output from `run`'s return ----------------------

const untyped = defineJob({
  name: 'untyped',
  run: async (_ctx, input) => {
    type _in = Expect<Equal<typeof input, unknown>>
    return { ok: true as const }
  },
})
type _untypedDef = Expect<Equal<typeof untyped, JobDefinition<unknown, unknown, { ok: true }, 'untyped'>>>

const noReturn = defineJob({ name: 'no-return', run: async () => {} })
type _noReturnDef = Expect<Equal<typeof noReturn, JobDefinition<unknown, unknown, void, 'no-return'>>>

defineJob({
  name: 'opts',
  run: () => 1,
  timeout: 60_000,
  replay: 'lenient',
  description: 'all optional fields',
})

defineJob({
  name: 'bad-replay',
  run: () => 1,
  // @ts-expect-error replay is 'strict' | 'lenient'
  replay: 'loose',
})

defineJob({
  name: 'bad-key',
  run: () => 1,
  // @ts-expect-error unknown config field
  retries: 3,
})

// @ts-expect-error run is required
defineJob({ name: 'no-run' })

// @ts-expect-error input must be a Standard Schema
defineJob({ name: 'not-a-schema', input: { orgId: 'string' }, run: () => 1 })

// ---- createDurably and typed handles ------------------------------------------------

async function handles() {
  const durably = createDurably({
    path: ':memory:',
    pollingInterval: 50,
    heartbeatInterval: 100,
    staleThreshold: 1000,
    maxConcurrentRuns: 4,
    synchronous: 'full',
    busyTimeout: 1000,
    maxValueBytes: 16 * 1024 * 1024,
    retainRuns: '30d',
    jobs: { syncUsers, square, untyped, lengthJob },
  })
  type _durably = Expect<Equal<typeof durably, Durably<{ syncUsers: SyncDef; square: typeof square; untyped: typeof untyped; lengthJob: typeof lengthJob }>>>
  durably.use(withLogPersistence())
  await durably.init()

  // trigger: the input schema's input type
  const run = await durably.jobs.syncUsers.trigger({ orgId: 'org_1' })
  type _run = Expect<Equal<typeof run, TriggeredRun<{ orgId: string; limit: number }, { syncedCount: number }>>>
  expectType<'created' | 'idempotent' | 'coalesced'>(run.disposition)
  expectType<{ syncedCount: number } | null>(run.output)
  await durably.jobs.syncUsers.trigger(
    { orgId: 'org_1', limit: 5 },
    { idempotencyKey: 'k', concurrencyKey: 'org_1', coalesce: 'skip', labels: { tenant: 'a' } },
  )
  // @ts-expect-error orgId must be a string
  await durably.jobs.syncUsers.trigger({ orgId: 1 })
  // @ts-expect-error orgId is required
  await durably.jobs.syncUsers.trigger({})
  // @ts-expect-error input is required
  await durably.jobs.syncUsers.trigger()
  // @ts-expect-error coalesce only knows 'skip'
  await durably.jobs.syncUsers.trigger({ orgId: 'o' }, { coalesce: 'merge' })
  // @ts-expect-error labels are strings
  await durably.jobs.syncUsers.trigger({ orgId: 'o' }, { labels: { n: 1 } })
  // @ts-expect-error no such job key
  await durably.jobs.nope.trigger({})

  await durably.jobs.square.trigger('12')
  // @ts-expect-error the hand-written schema takes a string
  await durably.jobs.square.trigger(12)
  await durably.jobs.lengthJob.trigger('abc')
  await durably.jobs.untyped.trigger({ anything: [1, 'two'] })
  await durably.jobs.untyped.trigger(null)
  await durably.jobs.untyped.trigger() // no input schema: the input may be omitted
  await durably.jobs.untyped.trigger(undefined, { labels: { a: 'b' } })

  // getRun(...).output
  const got = await durably.jobs.syncUsers.getRun(run.id)
  type _got = Expect<Equal<typeof got, Run<{ orgId: string; limit: number }, { syncedCount: number }> | null>>
  if (got && got.status === 'completed') {
    type _out = Expect<Equal<typeof got.output, { syncedCount: number } | null>>
    // @ts-expect-error the output has no such field
    void got.output?.count
  }
  const some = await durably.jobs.square.getRuns({ status: ['completed', 'failed'], labels: { a: 'b' }, limit: 10 })
  type _some = Expect<Equal<typeof some, Run<number, number>[]>>
  // @ts-expect-error a handle's getRuns is already scoped to its job
  await durably.jobs.square.getRuns({ jobName: 'other' })

  // triggerAndWait(...).output
  const done = await durably.jobs.syncUsers.triggerAndWait({ orgId: 'org_2' }, { timeout: 60_000, labels: { a: 'b' } })
  type _done = Expect<Equal<typeof done, { id: string; output: { syncedCount: number }; disposition: 'created' | 'idempotent' | 'coalesced' }>>
  expectType<number>(done.output.syncedCount)
  // @ts-expect-error wrong output access
  void done.output.count
  const len = await durably.jobs.lengthJob.triggerAndWait('hello', {
    onProgress: (p) => expectType<Progress>(p),
    onLog: (e) => expectType<string>(e.message),
  })
  type _len = Expect<Equal<typeof len.output, string>>
  const u = await durably.jobs.untyped.triggerAndWait(1)
  type _u = Expect<Equal<typeof u.output, { ok: true }>>

  // batchTrigger
  const batch = await durably.jobs.square.batchTrigger([{ input: '1' }, { input: '2', options: { labels: { a: 'b' } } }])
  type _batch = Expect<Equal<typeof batch, TriggeredRun<number, number>[]>>
  // @ts-expect-error batch items are { input, options? }
  await durably.jobs.square.batchTrigger(['1'])

  // register / getJob
  const registered = durably.register({ again: defineJob({ name: 'again', input: z.object({ x: z.number() }), run: () => 'y' }) })
  type _reg = Expect<Equal<typeof registered.again, JobHandle<{ x: number }, { x: number }, string>>>
  await registered.again.trigger({ x: 1 })
  // @ts-expect-error x is a number
  await registered.again.trigger({ x: '1' })
  const byName = durably.getJob('again')
  type _byName = Expect<Equal<typeof byName, JobHandle | undefined>>

  // seed form: durably.defineJob(config, fn)
  const seed = durably.defineJob({ name: 'seed', input: z.object({ n: z.number() }) }, async (ctx, input) => {
    type _in = Expect<Equal<typeof input, { n: number }>>
    return ctx.run('double', () => input.n * 2)
  })
  type _seed = Expect<Equal<typeof seed, JobHandle<{ n: number }, { n: number }, number>>>
  // @ts-expect-error ok must be a boolean
  durably.defineJob({ name: 'seed-out', output: z.object({ ok: z.boolean() }) }, async () => ({ ok: 'yes' }))

  // untyped queries
  const any = await durably.getRun(run.id)
  type _any = Expect<Equal<typeof any, Run<unknown, unknown> | null>>
  const runs = await durably.getRuns({ status: 'failed', jobName: ['a', 'b'], offset: 5 })
  type _runs = Expect<Equal<typeof runs, Run[]>>
  // @ts-expect-error unknown status
  await durably.getRuns({ status: 'done' })
  const steps = await durably.getSteps(run.id)
  type _steps = Expect<Equal<typeof steps, Step[]>>
  expectType<'completed' | 'failed' | 'cancelled'>(steps[0]!.status)
  const logs = await durably.getLogs(run.id)
  type _logs = Expect<Equal<typeof logs, Log[]>>

  // management
  expectType<Run>(await durably.retry(run.id))
  expectType<TriggeredRun>(await durably.retrigger(run.id))
  expectType<Run>(await durably.cancel(run.id))
  expectType<void>(await durably.deleteRun(run.id))
  expectType<number>(await durably.purgeRuns({ olderThan: new Date(), limit: 10 }))
  // @ts-expect-error olderThan is a Date
  await durably.purgeRuns({ olderThan: '2024-01-01' })
  expectType<Run>(await durably.waitForRun(run.id, { timeout: 1000 }))
  expectType<boolean>(await durably.processOne())
  expectType<number>(await durably.processUntilIdle())
  await durably.stop({ abort: true })
  await durably.start()
  await durably.migrate()
  await durably.close()
}

// ---- options ---------------------------------------------------------------

createDurably()
createDurably({ path: 'app.db' })
// @ts-expect-error unknown option
createDurably({ pollingIntervalMs: 10 })
// @ts-expect-error synchronous is 'normal' | 'full'
createDurably({ synchronous: 'off' })
// @ts-expect-error retainRuns looks like '30d'
createDurably({ retainRuns: 'forever' })
// @ts-expect-error jobs are job definitions
createDurably({ jobs: { x: () => 1 } })
new Durably({ path: ':memory:' })

// ---- events --------------------------------------------------------------------

function events(durably: Durably) {
  const off = durably.on('run:complete', (e) => {
    type _e = Expect<Equal<typeof e.type, 'run:complete'>>
    expectType<unknown>(e.output)
    expectType<number>(e.duration)
    expectType<string>(e.runId)
    expectType<string>(e.jobName)
    expectType<Record<string, string>>(e.labels)
    expectType<string>(e.timestamp)
  })
  type _off = Expect<Equal<typeof off, () => void>>
  durably.on('run:trigger', (e) => expectType<unknown>(e.input))
  durably.on('run:coalesced', (e) => expectType<unknown>(e.skippedInput))
  durably.on('run:start', (e) => expectType<number>(e.attempt))
  durably.on('run:fail', (e) => {
    expectType<string>(e.error)
    expectType<string | null>(e.failedStepName)
    // @ts-expect-error run:fail has no output
    void e.output
  })
  durably.on('run:cancel', (e) => expectType<string>(e.runId))
  durably.on('run:delete', (e) => expectType<string>(e.runId))
  durably.on('run:retry', (e) => expectType<string>(e.runId))
  durably.on('run:progress', (e) => expectType<Progress>(e.progress))
  durably.on('step:start', (e) => expectType<[string, number]>([e.stepName, e.stepIndex]))
  durably.on('step:complete', (e) => expectType<[unknown, number]>([e.output, e.duration]))
  durably.on('step:fail', (e) => expectType<string>(e.error))
  durably.on('step:cancel', (e) => expectType<string>(e.stepName))
  durably.on('log:write', (e) => {
    expectType<'info' | 'warn' | 'error'>(e.level)
    expectType<string | null>(e.stepName)
    expectType<unknown>(e.data)
  })
  durably.on('worker:error', (e) => {
    expectType<string | null>(e.runId)
    expectType<unknown>(e.error)
  })
  durably.on('run:complete', async () => {})
  // A listener's return value is ignored, whatever it is (issue 12: `(e) => e.failedStepName` must compile).
  durably.on('run:fail', (e) => e.failedStepName)
  durably.on('run:complete', async (e) => e.output)
  durably.on('log:write', (e) => [e.level, e.message])
  // @ts-expect-error unknown event name
  durably.on('run:finished', () => {})
  // @ts-expect-error run:snapshot comes from subscribe() only
  durably.on('run:snapshot', () => {})

  const all = (e: DurablyEvent) => {
    if (e.type === 'step:complete') expectType<number>(e.stepIndex)
  }
  void all
}

async function subscribe(durably: Durably, runId: string) {
  const stream = durably.subscribe(runId)
  type _stream = Expect<Equal<typeof stream, ReadableStream<SubscribeEvent>>>
  const reader = stream.getReader()
  for (;;) {
    const { value, done } = await reader.read()
    if (done) break
    if (value.type === 'run:snapshot') expectType<Run | null>(value.run)
    else if (value.type === 'run:progress') expectType<Progress>(value.progress)
  }
  for await (const e of durably.subscribe(runId)) {
    if (e.type === 'run:complete') expectType<unknown>(e.output)
    // @ts-expect-error a snapshot has no output
    else if (e.type === 'run:snapshot') void e.output
  }
}

// ---- plugins -------------------------------------------------------------------

const plugin: DurablyPlugin = {
  name: 'count-completions',
  install(durably) {
    durably.on('run:complete', () => {})
  },
}
expectType<DurablyPlugin>(withLogPersistence())
function plugins(durably: Durably) {
  expectType<Durably>(durably.use(plugin).use(withLogPersistence()))
  // @ts-expect-error a plugin has install()
  durably.use({ name: 'x' })
}

// ---- errors: values and types ----------------------------------------------------------

function errors(err: unknown) {
  if (err instanceof NotFoundError) {
    expectType<404>(err.status)
    expectType<'NOT_FOUND'>(err.code)
  }
  if (err instanceof ValidationError) expectType<400>(err.status)
  if (err instanceof ConflictError) expectType<409>(err.status)
  if (err instanceof RunFailedError) expectType<string>(err.runId)
  if (err instanceof DurablyError) expectType<string>(err.code)
  const all: DurablyError[] = [
    new DurablyError('x', 'DB_BUSY'),
    new ValidationError('x'),
    new NotFoundError('x'),
    new ConflictError('x'),
    new CancelledError(),
    new LeaseLostError(),
    new TimeoutError('x'),
    new RunFailedError('x', 'run-id'),
    new ReplayMismatchError('x'),
  ]
  const asError: Error = all[0]!
  void asError
}

// ---- HTTP handler --------------------------------------------------------------------------

async function http(durably: Durably) {
  const handler = createDurablyHandler(durably, {
    sseThrottleMs: 50,
    onRequest: (request) => void request.url,
    auth: {
      authenticate: async (request) => {
        const tenant = request.headers.get('x-tenant')
        if (!tenant) throw new Response('unauthorized', { status: 401 })
        return { tenant }
      },
      onTrigger: (ctx, req) => {
        expectType<string>(ctx.tenant)
        expectType<string>(req.jobName)
      },
      onRunAccess: (ctx, run, { operation }) => {
        if (run.labels.tenant !== ctx.tenant) throw new Response('forbidden', { status: 403 })
        void operation
      },
      scopeRuns: (ctx, filter) => ({ ...filter, labels: { ...filter.labels, tenant: ctx.tenant } }),
      scopeRunsSubscribe: (ctx, filter) => ({ ...filter, labels: { tenant: ctx.tenant } }),
    },
  })
  const res = await handler.handle(new Request('http://localhost/api/durably/runs'), '/api/durably')
  expectType<Response>(res)
  // @ts-expect-error handle needs the base path
  await handler.handle(new Request('http://localhost/runs'))
  const { createServer } = await import('node:http')
  createServer(toNodeHandler(handler, '/api/durably'))

  // The dashboard: read-only decided from the auth context.
  createDurablyHandler(durably, {
    auth: { authenticate: () => ({ role: 'viewer' as string }) },
    ui: { title: 'Jobs', readOnly: (ctx) => ctx.role !== 'admin' },
  })
  createDurablyHandler(durably, { ui: true })
  // @ts-expect-error ui.readOnly is a boolean or a function
  createDurablyHandler(durably, { ui: { readOnly: 'yes' } })
  const stats = await durably.getStats()
  expectType<number>(stats.byStatus.failed)
  expectType<number | undefined>(stats.byJob['sync-users']?.total)
  const run = await durably.getRun('x')
  if (run) expectType<number>(run.attempt)
}

void [handles, events, subscribe, plugins, errors, http]
