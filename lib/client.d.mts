// Types of durably/client. Hand-written, type-tested in __test__/types/client.mts.
// Only types come from the server package: a bundle of the client holds no server code.

import type {
  Durably,
  JobDefinition,
  ClientRun,
  Disposition,
  Labels,
  Log,
  LogLevel,
  Progress,
  RunStatus,
  StepStatus,
  TriggerOptions,
  DurablyEventMap,
} from '../index.js'

export type { ClientRun, Disposition, Labels, Log, Progress, RunStatus, TriggerOptions }

// ---- inference from the server's job definitions ------------------------------------

type AnyJobDefinition = JobDefinition<any, any, any, string>

/**
 * The job definitions of what `createDurablyClient<T>` was given: an object
 * of definitions (`typeof jobs`), a `Durably` instance type, one definition,
 * or a tuple of them.
 */
export type JobDefinitionsOf<T> = [T] extends [never]
  ? never
  : T extends Durably<infer J>
    ? J[keyof J]
    : T extends AnyJobDefinition
      ? T
      : T extends readonly unknown[]
        ? Extract<T[number], AnyJobDefinition>
        : Extract<T[keyof T], AnyJobDefinition>

/** The job names a client may trigger (`string` for an untyped client). */
export type JobName<T> = [T] extends [never] ? string : JobDefinitionsOf<T>['name']

type DefOf<T, N> = [T] extends [never] ? never : Extract<JobDefinitionsOf<T>, { readonly name: N }>
type Phantom<D> = D extends JobDefinition<infer TTrigger, infer TInput, infer TOutput, any>
  ? { trigger: TTrigger; input: TInput; output: TOutput }
  : never

/** What `trigger(name, …)` accepts for that job. */
export type JobTrigger<T, N> = [T] extends [never] ? unknown : Phantom<DefOf<T, N>>['trigger']
/** The input runs of that job store (the input schema's output). */
export type JobInput<T, N> = [T] extends [never] ? unknown : Phantom<DefOf<T, N>>['input']
/** What that job outputs. */
export type JobOutput<T, N> = [T] extends [never] ? unknown : Phantom<DefOf<T, N>>['output']

/** A run of job `N`: `jobName` is the literal name, `input`/`output` typed. */
export type RunOf<T, N> = Omit<ClientRun<JobInput<T, N>, JobOutput<T, N>>, 'jobName'> & { jobName: N }

/** Any run of the client's jobs: a union discriminated by `jobName`. */
export type AnyRunOf<T> = [T] extends [never]
  ? ClientRun
  : { [N in JobName<T>]: RunOf<T, N> }[JobName<T>]

// ---- records and events -----------------------------------------------------------

/** A step as `GET /steps` returns it. */
export interface ClientStep {
  id: string
  runId: string
  name: string
  index: number
  status: StepStatus
  output: unknown
  error: string | null
  startedAt: string
  completedAt: string | null
}

/** First item of `subscribe()` (and after a resume the server could not serve): the run now; null once deleted. */
export interface ClientSnapshotEvent {
  type: 'run:snapshot'
  runId: string
  jobName: string
  labels: Labels
  timestamp: string
  sequence: number
  run: ClientRun | null
}

type WithoutStack<E> = E extends unknown ? Omit<E, 'errorStack'> : never

/** What `subscribe(runId)` yields: the snapshot, then the run's events (`worker:error` excluded). */
export type ClientRunEvent =
  | ClientSnapshotEvent
  | WithoutStack<DurablyEventMap[Exclude<keyof DurablyEventMap, 'worker:error'>]>

/** What `subscribeRuns()` yields: slim events (no inputs or outputs), and `reconnect` after a dropped connection. */
export type ClientRunsEvent =
  | { type: 'reconnect' }
  | {
      type: Exclude<keyof DurablyEventMap, 'worker:error'>
      runId: string
      jobName: string
      labels: Labels
      timestamp: string
      sequence?: number
      progress?: Progress
      error?: string
      stepName?: string | null
      stepIndex?: number
      level?: LogLevel
      message?: string
    }

// ---- options ---------------------------------------------------------------------

export type HeadersInit = Headers | Record<string, string> | [string, string][]

export interface DurablyClientOptions {
  /** Where the handler is mounted: `'/api/durably'` in a browser, an absolute URL elsewhere. */
  baseUrl: string
  /** Sent with every request; a function is called per request (fresh tokens). */
  headers?: HeadersInit | (() => HeadersInit | Promise<HeadersInit>)
  /** A fetch implementation (default: the global one). */
  fetch?: (input: string, init?: RequestInit) => Promise<Response>
}

export interface RequestOptions {
  signal?: AbortSignal
}

export interface ClientTriggerOptions extends TriggerOptions, RequestOptions {}

export interface WaitOptions extends RequestOptions {
  /** Reject with code `TIMEOUT` after this many ms. */
  timeout?: number
  onProgress?(progress: Progress): void
  onLog?(event: DurablyEventMap['log:write']): void
}

export interface ClientTriggerAndWaitOptions extends ClientTriggerOptions, WaitOptions {}

export interface ClientRunFilter<TName extends string = string> {
  jobName?: TName | TName[]
  status?: RunStatus | RunStatus[]
  /** All must match. */
  labels?: Labels
  /** Default 100 (the server's), at most 1000. */
  limit?: number
  offset?: number
}

export interface SubscribeOptions extends RequestOptions {
  /** Resume after this event id (`epoch.sequence` from an earlier stream, or a bare sequence). */
  after?: string | number
}

export interface TriggerResult {
  runId: string
  disposition: Disposition
}

/** `[input, options?]`, with `input` optional when the job accepts `undefined`. */
type InputArgs<TTrigger, TOptions> = undefined extends TTrigger
  ? [input?: TTrigger, options?: TOptions]
  : [input: TTrigger, options?: TOptions]

// ---- the client ------------------------------------------------------------------

/** A client bound to one job (from `client.job(name)`); `durably/react`'s `useJob` takes one. */
export interface JobClient<T = never, N extends string = JobName<T>> {
  readonly name: N
  readonly client: DurablyClient<T>
  trigger(...args: InputArgs<JobTrigger<T, N>, ClientTriggerOptions>): Promise<TriggerResult>
  triggerAndWait(
    ...args: InputArgs<JobTrigger<T, N>, ClientTriggerAndWaitOptions>
  ): Promise<{ runId: string; output: JobOutput<T, N>; disposition: Disposition }>
  getRuns(filter?: Omit<ClientRunFilter, 'jobName'>, options?: RequestOptions): Promise<RunOf<T, N>[]>
}

export interface DurablyClient<T = never> {
  /** `baseUrl` without trailing slashes. */
  readonly baseUrl: string
  /** Creates a run (`POST /trigger`). */
  trigger<N extends JobName<T>>(
    jobName: N,
    ...args: InputArgs<JobTrigger<T, N>, ClientTriggerOptions>
  ): Promise<TriggerResult>
  /** Triggers, then waits; rejects with code `RUN_FAILED`, `CANCELLED`, `NOT_FOUND` (deleted) or `TIMEOUT`. */
  triggerAndWait<N extends JobName<T>>(
    jobName: N,
    ...args: InputArgs<JobTrigger<T, N>, ClientTriggerAndWaitOptions>
  ): Promise<{ runId: string; output: JobOutput<T, N>; disposition: Disposition }>
  /** Waits for an existing run to end (rejects like `triggerAndWait`). */
  waitForRun(runId: string, options?: WaitOptions): Promise<{ runId: string; output: unknown }>
  /** The run, or null when there is none (or it is outside your scope). */
  getRun(runId: string, options?: RequestOptions): Promise<AnyRunOf<T> | null>
  /** Newest first. With one `jobName`, the runs are typed as that job's. */
  getRuns<N extends JobName<T>>(
    filter: ClientRunFilter<N> & { jobName: N },
    options?: RequestOptions,
  ): Promise<RunOf<T, N>[]>
  getRuns(filter?: ClientRunFilter<JobName<T>>, options?: RequestOptions): Promise<AnyRunOf<T>[]>
  /** In execution order. */
  getSteps(runId: string, options?: RequestOptions): Promise<ClientStep[]>
  /** Persisted logs (the server needs `withLogPersistence()`), in time order. */
  getLogs(runId: string, options?: RequestOptions): Promise<Log[]>
  /** A failed or cancelled run back to pending, as the same run. */
  retry(runId: string): Promise<{ runId: string }>
  /** A new run with the same job, input and labels. */
  retrigger(runId: string): Promise<{ runId: string }>
  cancel(runId: string): Promise<void>
  /** Deletes a terminal run. */
  deleteRun(runId: string): Promise<void>
  /**
   * The run's events: the snapshot first, then each event, ending after the
   * terminal one. Reconnects by itself, resuming after the last event seen.
   * Stop early with `break` or `signal`.
   */
  subscribe(runId: string, options?: SubscribeOptions): AsyncIterable<ClientRunEvent>
  /** Slim events of the runs matching `filter`, reconnecting by itself. */
  subscribeRuns(
    filter?: { jobName?: JobName<T> | JobName<T>[]; labels?: Labels },
    options?: RequestOptions,
  ): AsyncIterable<ClientRunsEvent>
  /** A handle bound to one job. */
  job<N extends JobName<T>>(jobName: N): JobClient<T, N>
}

/** An HTTP error answer (`status`), a failed or cancelled run, or a timeout. */
export declare class DurablyClientError extends Error {
  /** `VALIDATION_ERROR` (400), `NOT_FOUND` (404), `CONFLICT` (409), `UNAUTHORIZED`, `FORBIDDEN`, `HTTP_ERROR`; `RUN_FAILED`, `CANCELLED`, `TIMEOUT`, `ABORTED`. */
  code: string
  /** The HTTP status, or null when the error is not an HTTP answer. */
  status: number | null
  runId: string | null
  /** The answer's body (parsed JSON when it was JSON). */
  body?: unknown
}

/** Whether `event` is the last of its run's stream. */
export declare function isTerminalEvent(event: ClientRunEvent): boolean

/**
 * A client for a durably HTTP handler. Type it with the server's jobs —
 * `createDurablyClient<typeof jobs>({ baseUrl: '/api/durably' })` — using a
 * type-only import, so no server code reaches the bundle.
 */
export declare function createDurablyClient<T = never>(options: DurablyClientOptions): DurablyClient<T>
