/// <reference types="node" />
// Type definitions for durably: durable, resumable step jobs on an embedded
// SQLite file. Hand-written and type-tested (__test__/types/fixture.ts).
//
// The reference above brings Node's types (node:http, Request, Response,
// ReadableStream, AbortSignal) into any project that imports durably, without
// `types: ["node"]` in its tsconfig (TypeScript 7 no longer includes @types
// packages by default); @types/node is a dependency so it is always there.

import type { IncomingMessage, ServerResponse } from 'node:http'

// ---------------------------------------------------------------------------
// Standard Schema V1 (https://standardschema.dev), inlined: no dependency.
// Zod 4, Valibot, ArkType and any object with a `~standard` property fit.
// ---------------------------------------------------------------------------

/** A validator following the Standard Schema V1 interface. */
export interface StandardSchemaV1<Input = unknown, Output = Input> {
  readonly '~standard': StandardSchemaV1.Props<Input, Output>
}

export declare namespace StandardSchemaV1 {
  interface Props<Input = unknown, Output = Input> {
    readonly version: 1
    readonly vendor: string
    readonly validate: (value: unknown) => Result<Output> | Promise<Result<Output>>
    readonly types?: Types<Input, Output> | undefined
  }
  type Result<Output> = SuccessResult<Output> | FailureResult
  interface SuccessResult<Output> {
    readonly value: Output
    readonly issues?: undefined
  }
  interface FailureResult {
    readonly issues: ReadonlyArray<Issue>
  }
  interface Issue {
    readonly message: string
    readonly path?: ReadonlyArray<PropertyKey | PathSegment> | undefined
  }
  interface PathSegment {
    readonly key: PropertyKey
  }
  interface Types<Input = unknown, Output = Input> {
    readonly input: Input
    readonly output: Output
  }
  /** What a validator accepts (the `trigger` argument). */
  type InferInput<Schema extends StandardSchemaV1> = NonNullable<Schema['~standard']['types']>['input']
  /** What a validator produces (the `input` a job's `run` receives). */
  type InferOutput<Schema extends StandardSchemaV1> = NonNullable<Schema['~standard']['types']>['output']
}

// ---------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------

export type RunStatus = 'pending' | 'running' | 'completed' | 'failed' | 'cancelled'
export type StepStatus = 'completed' | 'failed' | 'cancelled'
export type LogLevel = 'info' | 'warn' | 'error'
/** How `trigger` answered: a new run, an existing run by idempotency key, or a coalesced pending run. */
export type Disposition = 'created' | 'idempotent' | 'coalesced'
export type Labels = Record<string, string>

/** A run's progress, as set by `ctx.progress` / `ctx.setProgress`. */
export interface Progress {
  current: number
  total?: number
  message?: string
}

/** One execution instance of a job. Times are ISO-8601 strings; ids are ULIDs. */
export interface Run<TInput = unknown, TOutput = unknown, TLabels extends Labels = Labels> {
  id: string
  jobName: string
  status: RunStatus
  /** The validated input (the input schema's output type). */
  input: TInput
  /** The job's output once `completed`, else null. */
  output: TOutput | null
  /** The failure message once `failed`, else null. */
  error: string | null
  errorStack: string | null
  /** Typed by the `labels` schema of `createDurably`, if any. */
  labels: TLabels
  progress: Progress | null
  idempotencyKey: string | null
  concurrencyKey: string | null
  /** The position after its last completed step (read from the steps: exact while the run is running). */
  currentStepIndex: number
  /** How many times the run was started: 1 on its first execution, +1 on each resume after a crash and each retry. */
  attempt: number
  /** How many of its steps are completed (stored). */
  completedStepCount: number
  createdAt: string
  /** The last change of the run's row. SQLite: while the run is running, a step's commit refreshes it at most about once a second. */
  updatedAt: string
  startedAt: string | null
  completedAt: string | null
}

/** What `trigger` / `batchTrigger` / `retrigger` return. */
export type TriggeredRun<TInput = unknown, TOutput = unknown, TLabels extends Labels = Labels> = Run<
  TInput,
  TOutput,
  TLabels
> & {
  disposition: Disposition
}

/** A step of a run, in execution order. */
export interface Step {
  id: string
  runId: string
  name: string
  index: number
  status: StepStatus
  output: unknown
  error: string | null
  errorStack: string | null
  startedAt: string
  completedAt: string | null
}

/** Counts of runs by status; `total` is their sum. */
export type StatusCounts = Record<RunStatus, number>

/** What `getStats()` and `GET /stats` return. */
export interface RunStats {
  total: number
  byStatus: StatusCounts
  byJob: Record<string, StatusCounts & { total: number }>
}

/** A persisted log line (see `withLogPersistence`). */
export interface Log {
  id: string
  runId: string
  stepName: string | null
  level: LogLevel
  message: string
  data: unknown
  timestamp: string
}

// ---------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------

export interface DurablyOptions<TJobs extends JobDefinitions = JobDefinitions, TLabels extends Labels = Labels> {
  /**
   * SQLite file, created if absent; `':memory:'` for tests. Default `'durably.db'`
   * (unless `url` or the `DURABLY_DATABASE_URL` environment variable is set). Not with `url`.
   */
  path?: string
  /**
   * A PostgreSQL database instead of a SQLite file: `'postgres://user[:password]@host[:port]/database'`.
   * When neither `path` nor `url` is given, `DURABLY_DATABASE_URL` is used if set.
   * Throws `DurablyError` code `POSTGRES_UNSUPPORTED` when the native addon was built without PostgreSQL.
   */
  url?: string
  /** With `url`: the PostgreSQL schema holding durably's tables (created if missing). Default `'durably'`. */
  schema?: string
  /** Idle polling period in ms (only a fallback for runs written by other processes). Default 1000. */
  pollingInterval?: number
  /** How often a running run's heartbeat is renewed, in ms. Default 5000. */
  heartbeatInterval?: number
  /** A running run whose heartbeat is older than this (ms) is reclaimed. Default 30000. */
  staleThreshold?: number
  /** Runs executed at once by this worker. Default 1. */
  maxConcurrentRuns?: number
  /** `'normal'` (WAL, survives process crashes) or `'full'` (also survives power loss). Default `'normal'`. */
  synchronous?: 'normal' | 'full'
  /** How long a write waits for another process's lock, in ms. Default 5000. */
  busyTimeout?: number
  /**
   * Largest encoded input, step result or output, in UTF-8 bytes. Default 64 MB (67108864).
   * A larger input is refused at trigger (`ValidationError`); a larger step result or output
   * fails the run with an error starting `VALUE_TOO_LARGE:`.
   */
  maxValueBytes?: number
  /** Purge terminal runs older than this while idle: `'30d'`, `'12h'`, `'15m'`, `'45s'`. */
  retainRuns?: `${number}${'s' | 'm' | 'h' | 'd'}`
  /**
   * A Standard Schema validator for run labels: checked at every trigger (labels omitted are
   * checked as `{}`), `ValidationError` and nothing written when invalid; types `labels` in
   * trigger options and run records.
   */
  labels?: StandardSchemaV1<any, TLabels>
  /** Job definitions to register; `durably.jobs.<key>` are typed handles. */
  jobs?: TJobs
}

export interface TriggerOptions<TLabels extends Labels = Labels> {
  /** Same job + key already exists → that run is returned (`disposition: 'idempotent'`). */
  idempotencyKey?: string
  /** Runs sharing a key never execute at the same time; they run in creation order. */
  concurrencyKey?: string
  /** With `concurrencyKey`: return the pending run of that key instead of creating one. */
  coalesce?: 'skip'
  labels?: TLabels
}

export interface WaitForRunOptions {
  /** Reject with `TimeoutError` after this many ms. */
  timeout?: number
  /**
   * Called with each progress update / log line of the run from now on. On
   * PostgreSQL, for a run another process executes: from this process's
   * registration for run events on (`triggerAndWait` registers before it
   * triggers); earlier ones are not replayed.
   */
  onProgress?: (progress: Progress) => void
  /** See `onProgress`. */
  onLog?: (event: LogWriteEvent) => void
}

export type TriggerAndWaitOptions<TLabels extends Labels = Labels> = TriggerOptions<TLabels> & WaitForRunOptions

export interface RunFilter {
  /** One or several; an empty list means no filter. */
  status?: RunStatus | RunStatus[]
  /** One or several; an empty list means no filter. */
  jobName?: string | string[]
  /** All must match. */
  labels?: Labels
  limit?: number
  offset?: number
}

export interface PurgeOptions {
  /** Terminal runs that finished before this are deleted. */
  olderThan: Date
  /** Default 1000. */
  limit?: number
}

export interface StopOptions {
  /**
   * Resolve at once: in-flight runs are handed back to `pending` (lease released), their signals
   * fire, and their executions are abandoned, even when a step ignores its signal.
   */
  abort?: boolean
  /** Wait at most this many ms for in-flight job functions to finish, then abort as above. */
  timeout?: number
}

// ---------------------------------------------------------------------------
// Jobs
// ---------------------------------------------------------------------------

/** `'strict'` (default): steps must be called in the stored order on replay. `'lenient'`: names alone decide. */
export type ReplayMode = 'strict' | 'lenient'

type MaybePromise<T> = T | Promise<T>
type AnySchema = StandardSchemaV1<any, any>
/** The trigger argument for an input schema (no schema: any JSON value). */
type TriggerOf<S> = S extends AnySchema ? StandardSchemaV1.InferInput<S> : unknown
/** What `run` receives for an input schema (no schema: unknown). */
type InputOf<S> = S extends AnySchema ? StandardSchemaV1.InferOutput<S> : unknown

/** The step context a job function receives. */
export interface JobContext {
  readonly runId: string
  readonly jobName: string
  /** Aborted on cancel, on timeout, on `stop({ abort: true })`, or when this worker loses the run. */
  readonly signal: AbortSignal
  /**
   * A step: `fn`'s result is stored before the job goes on; on resume a
   * completed step returns its stored result without calling `fn`. Names are
   * unique within a run.
   */
  run<T>(name: string, fn: (signal: AbortSignal) => T): Promise<Awaited<T>>
  /** Stores progress on the run (coalesced writes) and emits `run:progress`. */
  progress(current: number, total?: number, message?: string): void
  setProgress(progress: Progress): void
  /** Emits `log:write` with the current step name; persisted with `withLogPersistence()`. */
  readonly log: {
    info(message: string, data?: unknown): void
    warn(message: string, data?: unknown): void
    error(message: string, data?: unknown): void
  }
}

declare const jobTypes: unique symbol

/**
 * A job definition from `defineJob`. Type parameters: what `trigger` accepts,
 * what `run` receives (and runs store as `input`), what the job outputs, and
 * its name (a literal type, so `durably/client` can name jobs as the HTTP API does).
 */
export interface JobDefinition<TTrigger = unknown, TInput = unknown, TOutput = unknown, TName extends string = string> {
  readonly name: TName
  readonly input?: StandardSchemaV1<TTrigger, TInput>
  readonly output?: StandardSchemaV1<any, TOutput>
  run(ctx: JobContext, input: TInput): unknown
  readonly timeout?: number
  readonly replay: ReplayMode
  readonly description?: string
  /** Type-level only; absent at run time. */
  readonly [jobTypes]?: { trigger: TTrigger; input: TInput; output: TOutput; name: TName }
}

export type JobDefinitions = Record<string, JobDefinition<any, any, any, string>>

/** Fields shared by both forms of `defineJob`. */
export interface JobConfigBase<TInputSchema, TName extends string = string> {
  /** 1–200 characters, no quotes, backslashes or control characters. */
  name: TName
  /** Standard Schema for the input; omitted → any JSON value, typed `unknown`. */
  input?: TInputSchema
  /** Job timeout in ms: the run fails with "run timed out after N ms" and its signal aborts. */
  timeout?: number
  replay?: ReplayMode
  description?: string
}

/** `defineJob` config with an output schema: `run` must return the schema's input type. */
export interface JobConfigWithOutput<TInputSchema, TOutputSchema extends AnySchema, TName extends string = string>
  extends JobConfigBase<TInputSchema, TName> {
  output: TOutputSchema
  run: (ctx: JobContext, input: InputOf<TInputSchema>) => MaybePromise<StandardSchemaV1.InferInput<TOutputSchema>>
}

/** `defineJob` config without an output schema: the output type is what `run` returns. */
export interface JobConfigWithoutOutput<TInputSchema, TResult, TName extends string = string>
  extends JobConfigBase<TInputSchema, TName> {
  output?: undefined
  run: (ctx: JobContext, input: InputOf<TInputSchema>) => TResult
}

/** Defines a job. Register it with `createDurably({ jobs })` or `durably.register()`. */
export declare function defineJob<
  TInputSchema extends AnySchema | undefined = undefined,
  TOutputSchema extends AnySchema = AnySchema,
  TName extends string = string,
>(
  config: JobConfigWithOutput<TInputSchema, TOutputSchema, TName>,
): JobDefinition<TriggerOf<TInputSchema>, InputOf<TInputSchema>, StandardSchemaV1.InferOutput<TOutputSchema>, TName>
export declare function defineJob<
  TInputSchema extends AnySchema | undefined = undefined,
  TResult = unknown,
  TName extends string = string,
>(
  config: JobConfigWithoutOutput<TInputSchema, TResult, TName>,
): JobDefinition<TriggerOf<TInputSchema>, InputOf<TInputSchema>, Awaited<TResult>, TName>

/** `[input, options?]`, with `input` optional when the job accepts `undefined`. */
type InputArgs<TTrigger, TOptions> = undefined extends TTrigger
  ? [input?: TTrigger, options?: TOptions]
  : [input: TTrigger, options?: TOptions]

/** A registered job bound to one durably instance. */
export interface JobHandle<TTrigger = unknown, TInput = unknown, TOutput = unknown, TLabels extends Labels = Labels> {
  readonly name: string
  readonly definition: JobDefinition<TTrigger, TInput, TOutput>
  /**
   * Creates a `pending` run (validated input), committed before it resolves; this process's started worker,
   * when it has a free slot, may claim it in that same commit. The worker does not have to be running.
   * The input may be omitted when the job accepts `undefined` (no input schema).
   */
  trigger(...args: InputArgs<TTrigger, TriggerOptions<TLabels>>): Promise<TriggeredRun<TInput, TOutput, TLabels>>
  /** All items in one transaction: one invalid input and nothing is written. */
  batchTrigger(
    items: ReadonlyArray<{ input: TTrigger; options?: TriggerOptions<TLabels> }>,
  ): Promise<TriggeredRun<TInput, TOutput, TLabels>[]>
  /**
   * Triggers, then waits for completion; rejects like `waitForRun`. It listens before the run
   * can start, so `onLog`/`onProgress` miss nothing.
   */
  triggerAndWait(
    ...args: InputArgs<TTrigger, TriggerAndWaitOptions<TLabels>>
  ): Promise<{ id: string; output: TOutput; disposition: Disposition }>
  /** The run if it belongs to this job, else null. */
  getRun(id: string): Promise<Run<TInput, TOutput, TLabels> | null>
  getRuns(filter?: Omit<RunFilter, 'jobName'>): Promise<Run<TInput, TOutput, TLabels>[]>
}

/** The typed handles for an object of job definitions. */
export type JobHandles<TJobs, TLabels extends Labels = Labels> = {
  [K in keyof TJobs]: TJobs[K] extends JobDefinition<infer TTrigger, infer TInput, infer TOutput>
    ? JobHandle<TTrigger, TInput, TOutput, TLabels>
    : never
}

// ---------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------

/** Fields every event carries. */
export interface BaseEvent<TType extends string = string> {
  type: TType
  runId: string
  jobName: string
  labels: Labels
  /** ISO-8601 */
  timestamp: string
  /** Increases with every event of this instance: orders and de-duplicates streams. */
  sequence: number
}

export interface RunTriggerEvent extends BaseEvent<'run:trigger'> {
  input: unknown
}
export interface RunCoalescedEvent extends BaseEvent<'run:coalesced'> {
  /** The input and labels of the trigger that was coalesced into this run. */
  skippedInput: unknown
  skippedLabels: Labels
}
export interface RunStartEvent extends BaseEvent<'run:start'> {
  input: unknown
  /** Increases with every claim of the run (first execution, resumes, retries). */
  attempt: number
}
export interface RunCompleteEvent extends BaseEvent<'run:complete'> {
  output: unknown
  /** integer ms since the run started */
  duration: number
}
export interface RunFailEvent extends BaseEvent<'run:fail'> {
  error: string
  failedStepName: string | null
}
export interface RunCancelEvent extends BaseEvent<'run:cancel'> {}
export interface RunDeleteEvent extends BaseEvent<'run:delete'> {}
export interface RunRetryEvent extends BaseEvent<'run:retry'> {}
export interface RunProgressEvent extends BaseEvent<'run:progress'> {
  progress: Progress
}
export interface StepStartEvent extends BaseEvent<'step:start'> {
  stepName: string
  stepIndex: number
}
export interface StepCompleteEvent extends BaseEvent<'step:complete'> {
  stepName: string
  stepIndex: number
  output: unknown
  /** integer ms */
  duration: number
}
export interface StepFailEvent extends BaseEvent<'step:fail'> {
  stepName: string
  stepIndex: number
  error: string
}
export interface StepCancelEvent extends BaseEvent<'step:cancel'> {
  stepName: string
  stepIndex: number
}
export interface LogWriteEvent extends BaseEvent<'log:write'> {
  stepName: string | null
  level: LogLevel
  message: string
  data: unknown
}
/**
 * Where a `worker:error` happened: the native worker's `claim`, `recover` (stale recovery),
 * `watch` (the cross-process change check), `heartbeat`, `timeout` (enforcing a job timeout),
 * `checkpoint`; a run's `step-write`, `progress-write`, `log-write`, `lease-lost`, `execute`
 * (any other error of an execution); or `listener` (an event listener threw), `retain`
 * (`retainRuns` purge), `hand-back` (returning a run to pending at stop), `wake`, `message`.
 */
export type WorkerErrorContext =
  | 'claim'
  | 'recover'
  | 'watch'
  | 'heartbeat'
  | 'timeout'
  | 'checkpoint'
  | 'file'
  | 'step-write'
  | 'progress-write'
  | 'log-write'
  | 'lease-lost'
  | 'execute'
  | 'listener'
  | 'retain'
  | 'hand-back'
  | 'wake'
  | 'message'

/** An error outside any job (DB busy, disk full, a listener threw). */
export interface WorkerErrorEvent {
  type: 'worker:error'
  runId: string | null
  jobName: string | null
  labels: Labels
  timestamp: string
  sequence: number
  /** Usually an `Error` (a `DurablyError` for storage errors); whatever a listener threw otherwise. */
  error: unknown
  /** Where it happened. */
  context: WorkerErrorContext
}

/** Event type → event shape, for `on()`. */
export interface DurablyEventMap {
  'run:trigger': RunTriggerEvent
  'run:coalesced': RunCoalescedEvent
  'run:start': RunStartEvent
  'run:complete': RunCompleteEvent
  'run:fail': RunFailEvent
  'run:cancel': RunCancelEvent
  'run:delete': RunDeleteEvent
  'run:retry': RunRetryEvent
  'run:progress': RunProgressEvent
  'step:start': StepStartEvent
  'step:complete': StepCompleteEvent
  'step:fail': StepFailEvent
  'step:cancel': StepCancelEvent
  'log:write': LogWriteEvent
  'worker:error': WorkerErrorEvent
}

export type DurablyEventType = keyof DurablyEventMap
export type DurablyEvent = DurablyEventMap[DurablyEventType]

/** First item of `subscribe(runId)` (and a last one when another process finished the run; `run` null if it was deleted). */
export interface RunSnapshotEvent extends BaseEvent<'run:snapshot'> {
  run: Run | null
}

/** What `subscribe(runId)` yields. */
export type SubscribeEvent = RunSnapshotEvent | DurablyEvent

export type Unsubscribe = () => void

// ---------------------------------------------------------------------------
// Plugins
// ---------------------------------------------------------------------------

export interface DurablyPlugin {
  name: string
  install(durably: Durably<any>): void
}

/** Plugin: writes every `log:write` to the `logs` table (read with `getLogs`). */
export declare function withLogPersistence(): DurablyPlugin

// ---------------------------------------------------------------------------
// Durably
// ---------------------------------------------------------------------------

export declare class Durably<TJobs extends JobDefinitions = {}, TLabels extends Labels = Labels> {
  constructor(options?: DurablyOptions<TJobs, TLabels>)

  /** Typed handles of the jobs passed as `createDurably({ jobs })`. */
  readonly jobs: JobHandles<TJobs, TLabels>

  /** Creates/upgrades the schema. Idempotent; safe from several processes at once. */
  migrate(): Promise<void>
  /** Starts the worker loop. */
  start(): Promise<void>
  /** `migrate()` then `start()`. */
  init(): Promise<void>
  /** Stops claiming; resolves once in-flight runs finished their job function (or were aborted). */
  stop(options?: StopOptions): Promise<void>
  /**
   * `stop(options)`, then closes the database; resolves once every file handle is released.
   * Idempotent (concurrent calls all resolve). A closed instance throws `DurablyError` code `CLOSED`.
   */
  close(options?: StopOptions): Promise<void>

  /** Registers job definitions; returns their handles by key. */
  register<T extends JobDefinitions>(defs: T): JobHandles<T, TLabels>
  /** Seed form: defines and registers at once; returns the handle. */
  defineJob<TInputSchema extends AnySchema | undefined = undefined, TOutputSchema extends AnySchema = AnySchema>(
    config: JobConfigBase<TInputSchema> & { output: TOutputSchema },
    fn: (ctx: JobContext, input: InputOf<TInputSchema>) => MaybePromise<StandardSchemaV1.InferInput<TOutputSchema>>,
  ): JobHandle<TriggerOf<TInputSchema>, InputOf<TInputSchema>, StandardSchemaV1.InferOutput<TOutputSchema>, TLabels>
  defineJob<TInputSchema extends AnySchema | undefined = undefined, TResult = unknown>(
    config: JobConfigBase<TInputSchema> & { output?: undefined },
    fn: (ctx: JobContext, input: InputOf<TInputSchema>) => TResult,
  ): JobHandle<TriggerOf<TInputSchema>, InputOf<TInputSchema>, Awaited<TResult>, TLabels>
  /** The handle of a registered job by job name. */
  getJob(name: string): JobHandle<unknown, unknown, unknown, TLabels> | undefined

  getRun(id: string): Promise<Run<unknown, unknown, TLabels> | null>
  /** Newest first. */
  getRuns(filter?: RunFilter): Promise<Run<unknown, unknown, TLabels>[]>
  /** In execution order. */
  getSteps(runId: string): Promise<Step[]>
  /** Persisted logs (needs `withLogPersistence()`), in time order. */
  getLogs(runId: string): Promise<Log[]>
  /** Run counts per status and per job (one grouped count, no run payloads). */
  getStats(): Promise<RunStats>

  /** A `failed` or `cancelled` run goes back to `pending` as the same run (completed steps replay). */
  retry(runId: string): Promise<Run<unknown, unknown, TLabels>>
  /**
   * A new run with the same job, input and labels (input and labels re-validated) from a
   * terminal run; a `pending`/`running` run → `ConflictError`.
   */
  retrigger(runId: string): Promise<TriggeredRun<unknown, unknown, TLabels>>
  /** `pending`/`running` → `cancelled`; a running run's signal fires. Terminal → `ConflictError`. */
  cancel(runId: string): Promise<Run<unknown, unknown, TLabels>>
  /** Deletes a terminal run with its steps and logs; an active run → `ConflictError`. */
  deleteRun(runId: string): Promise<void>
  /** Deletes terminal runs that finished before `olderThan` (with their steps and logs); resolves with how many. */
  purgeRuns(options: PurgeOptions): Promise<number>

  /**
   * Resolves with the completed run; rejects with `RunFailedError`, `CancelledError`,
   * `TimeoutError` or `NotFoundError`. Works when another process executes the run.
   */
  waitForRun(runId: string, options?: WaitForRunOptions): Promise<Run<unknown, unknown, TLabels>>

  /**
   * Claims and executes one run; false when none was pending. First recovers stale runs
   * (a crashed worker's) and applies `retainRuns`, like the worker loop does.
   */
  processOne(): Promise<boolean>
  /** Like `processOne` until none is pending, or `maxRuns` ran; resolves with how many ran. */
  processUntilIdle(options?: { maxRuns?: number }): Promise<number>

  /** Listens to one event type (in-process only). Returns the unsubscribe function. A listener's return value is ignored (a rejected promise is reported as `worker:error`). */
  on<K extends DurablyEventType>(type: K, listener: (event: DurablyEventMap[K]) => unknown): Unsubscribe
  /** Shorthand for `on('worker:error', listener)`; returns the unsubscribe function. */
  onError(listener: (event: WorkerErrorEvent) => unknown): Unsubscribe
  use(plugin: DurablyPlugin): this
  /** The run's events: its current state first, closing after its terminal event. */
  subscribe(runId: string): ReadableStream<SubscribeEvent>
}

/** Creates an instance; call `init()` (or `migrate()` + `start()`) before triggering work. */
export declare function createDurably<TJobs extends JobDefinitions = {}, TLabels extends Labels = Labels>(
  options?: DurablyOptions<TJobs, TLabels>,
): Durably<TJobs, TLabels>

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/** Base class of every durably error; `code` is stable (assert on it, not on messages). */
export declare class DurablyError extends Error {
  constructor(message: string, code?: string, options?: ErrorOptions)
  /** e.g. `VALIDATION_ERROR`, `NOT_FOUND`, `CONFLICT`, `CANCELLED`, `LEASE_LOST`, `TIMEOUT`, `RUN_FAILED`,
   * `REPLAY_MISMATCH`, `CLOSED`, `DB_BUSY`, `DB_FULL`, `DB_READONLY`, `DB_CORRUPT`, `DB_CANTOPEN`, `SCHEMA_TOO_NEW`. */
  code: string
}
export declare class ValidationError extends DurablyError {
  constructor(message: string, options?: ErrorOptions)
  code: 'VALIDATION_ERROR'
  status: 400
}
export declare class NotFoundError extends DurablyError {
  constructor(message: string, options?: ErrorOptions)
  code: 'NOT_FOUND'
  status: 404
}
export declare class ConflictError extends DurablyError {
  constructor(message: string, options?: ErrorOptions)
  code: 'CONFLICT'
  status: 409
}
export declare class CancelledError extends DurablyError {
  constructor(message?: string, options?: ErrorOptions)
  code: 'CANCELLED'
}
export declare class LeaseLostError extends DurablyError {
  constructor(message?: string, options?: ErrorOptions)
  code: 'LEASE_LOST'
}
export declare class TimeoutError extends DurablyError {
  constructor(message: string, options?: ErrorOptions)
  code: 'TIMEOUT'
}
/** `waitForRun`/`triggerAndWait` on a run that failed; `message` is the run's error. */
export declare class RunFailedError extends DurablyError {
  constructor(message: string, runId: string, options?: ErrorOptions)
  code: 'RUN_FAILED'
  runId: string
}
/** A resumed run called its steps in a different order than stored (`replay: 'strict'`). */
/** A replayed run called its steps in another order (or dropped some) than the stored run. */
export declare class ReplayMismatchError extends DurablyError {
  constructor(
    message: string,
    details?: { stepName: string | null; stepIndex: number | null; storedStepName: string | null; storedIndex: number | null },
  )
  code: 'REPLAY_MISMATCH'
  /** The step the job called now (null when it returned without calling a stored step). */
  stepName?: string | null
  /** Its position. */
  stepIndex?: number | null
  /** The step stored at that position (or the one that was never reached). */
  storedStepName?: string | null
  /** Its stored position. */
  storedIndex?: number | null
}

// ---------------------------------------------------------------------------
// HTTP handler
// ---------------------------------------------------------------------------

/** A run as the HTTP handler returns it: no keys, no stack trace, plus `isTerminal`/`isActive`. */
export interface ClientRun<TInput = unknown, TOutput = unknown>
  extends Omit<Run<TInput, TOutput>, 'errorStack' | 'idempotencyKey' | 'concurrencyKey'> {
  isTerminal: boolean
  isActive: boolean
}

/** What a request wants to do with one run (`onRunAccess`). */
export type HttpOperation = 'read' | 'steps' | 'logs' | 'subscribe' | 'retry' | 'retrigger' | 'cancel' | 'delete'

/** Body of `POST /trigger`. */
export interface TriggerRequest extends TriggerOptions {
  jobName: string
  input: unknown
}

/** What `GET /runs/subscribe` matches on (`jobName=`, `label.<k>=`). */
export interface RunsSubscribeFilter {
  jobName?: string | string[]
  labels?: Labels
}

/** Auth hooks. Any hook may throw a `Response` (returned as is) to reject the request. */
export interface DurablyAuth<TCtx = unknown> {
  /** Returns the request's auth context, handed to every other hook. */
  authenticate(request: Request): TCtx | Promise<TCtx>
  /** Before a trigger; may return a replaced request (e.g. with a tenant label added). */
  onTrigger?(ctx: TCtx, request: TriggerRequest): void | TriggerRequest | Promise<void | TriggerRequest>
  /** Before any access to one run; `false` answers 404. */
  onRunAccess?(ctx: TCtx, run: Run, info: { operation: HttpOperation }): void | boolean | Promise<void | boolean>
  /** Narrows `GET /runs` (e.g. force a tenant label); also scopes single-run routes. */
  scopeRuns?(ctx: TCtx, filter: RunFilter): void | RunFilter | Promise<void | RunFilter>
  /** Narrows `GET /runs/subscribe` (falls back to `scopeRuns`). */
  scopeRunsSubscribe?(
    ctx: TCtx,
    filter: RunsSubscribeFilter,
  ): void | RunsSubscribeFilter | Promise<void | RunsSubscribeFilter>
}

export interface DurablyHandlerOptions<TCtx = unknown> {
  auth?: DurablyAuth<TCtx>
  /** Called for every request after `authenticate`; returning a `Response` answers with it. */
  onRequest?(request: Request, ctx: TCtx): void | Response | Promise<void | Response>
  /** Reports unexpected errors (answered 500). Default: `console.error`. */
  onError?(error: unknown, request: Request): void
  /** Minimum ms between progress events of one run on SSE (the last one is always sent). Default 100. */
  sseThrottleMs?: number
  /** Largest accepted request body. Default 1 MiB. */
  maxBodyBytes?: number
  /**
   * Serves the dashboard at `<basePath>/ui`. `readOnly` hides its actions and
   * makes the handler refuse every mutating route (403), also `POST /trigger`;
   * a function decides per request.
   */
  ui?: boolean | DurablyUiOptions<TCtx>
  /**
   * How long (ms) a dropped `/subscribe` stream is kept, still reading its run's events, so its client
   * can resume with `after=`/`Last-Event-ID` without losing or repeating events. Default 30000; 0: never.
   */
  sseResumeMs?: number
  /** `'upstream-0.15'`: answer as `@coji/durably-react` 0.15 expects (`leased`, replayed state, register keys). */
  compat?: 'upstream-0.15'
}

export interface DurablyUiOptions<TCtx = unknown> {
  /** Page title. Default `'durably'`. */
  title?: string
  /** Default false. */
  readOnly?: boolean | ((ctx: TCtx, request: Request) => boolean | Promise<boolean>)
}

export interface DurablyHandler {
  /** Routes `request` under `basePath` (e.g. `'/api/durably'`; `''` for none). Never rejects. */
  handle(request: Request, basePath: string): Promise<Response>
}

/** A web-standard `Request` → `Response` handler (Hono, Next.js, React Router, …). */
export declare function createDurablyHandler<TCtx = unknown>(
  durably: Durably<any>,
  options?: DurablyHandlerOptions<TCtx>,
): DurablyHandler

/** Adapts a handler to `node:http` / Express-style `(req, res, next?)`. */
export declare function toNodeHandler(
  handler: DurablyHandler,
  basePath?: string,
): (req: IncomingMessage, res: ServerResponse, next?: (error?: unknown) => void) => void
