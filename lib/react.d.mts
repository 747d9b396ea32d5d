// Types of durably/react. Hand-written; type-tested in __test__/types/react.mts.

import type { ReactNode, ReactElement } from 'react'
import type {
  DurablyClient,
  JobClient,
  JobTrigger,
  JobOutput,
  ClientRunFilter,
  ClientTriggerOptions,
  TriggerResult,
  AnyRunOf,
  RunOf,
  ClientRun,
  JobName,
} from './client.mjs'
import type { Log, LogLevel, Progress, RunStatus } from '../index.js'

/** A log line received live (`log:write`). */
export interface LiveLog {
  stepName: string | null
  level: LogLevel
  message: string
  data: unknown
  timestamp: string
  sequence: number
}

/** A run as the hooks show it. */
export interface RunState<TOutput = unknown, TRun = ClientRun> {
  /** null until there is a run to show (or after `reset()`). */
  runId: string | null
  /** The run record from the last snapshot, kept current by events; null before the first. */
  run: TRun | null
  status: RunStatus | null
  progress: Progress | null
  output: TOutput | null
  error: string | null
  /** Lines written since the hook subscribed (the newest 1000). */
  logs: LiveLog[]
  /** Why the event stream could not be opened (e.g. 404, 403); it reconnects by itself otherwise. */
  connectionError: Error | null
  isPending: boolean
  /** pending or running */
  isRunning: boolean
  isCompleted: boolean
  isFailed: boolean
  isCancelled: boolean
  isTerminal: boolean
}

/** `[input, options?]`, with `input` optional when the job accepts `undefined`. */
type InputArgs<TTrigger, TOptions> = undefined extends TTrigger
  ? [input?: TTrigger, options?: TOptions]
  : [input: TTrigger, options?: TOptions]

export interface UseJobResult<TTrigger = unknown, TOutput = unknown, TRun = ClientRun> extends RunState<TOutput, TRun> {
  /** Starts a run; the hook follows it from then on. */
  trigger(...args: InputArgs<TTrigger, ClientTriggerOptions>): Promise<TriggerResult>
  /** Forget the current run. */
  reset(): void
  /** A trigger request is under way. */
  isTriggering: boolean
}

export interface ClientOption<T = never> {
  /** The client to use instead of the `DurablyProvider`'s. */
  client?: DurablyClient<T>
}

export interface UseJobOptions {
  /** Follow this run from the start (e.g. one whose id is in the URL). */
  initialRunId?: string | null
}

export declare function DurablyProvider(props: { client: DurablyClient<any>; children?: ReactNode }): ReactElement

/** The client from the nearest `DurablyProvider` (or `explicit`); throws when there is none. */
export declare function useDurablyClient<T = never>(explicit?: DurablyClient<T>): DurablyClient<T>

/** One job, typed by its handle: `useJob(client.job('sync-users'))`. */
export declare function useJob<T, N extends string>(
  job: JobClient<T, N>,
  options?: UseJobOptions,
): UseJobResult<JobTrigger<T, N>, JobOutput<T, N>, RunOf<T, N>>
/** One job by name, with the client from `DurablyProvider` (untyped). */
export declare function useJob(jobName: string, options?: UseJobOptions & ClientOption<any>): UseJobResult

/** One run, live. `runId` may be null. */
export declare function useRun<TOutput = unknown>(runId: string | null | undefined, options?: ClientOption<any>): RunState<TOutput>

/** A run's persisted log lines followed by live ones. */
export declare function useLogs(
  runId: string | null | undefined,
  options?: ClientOption<any>,
): { logs: Array<Log | LiveLog>; error: Error | null; isLoading: boolean }

/** Runs matching `filter`, newest first, kept live. */
export declare function useRuns<T = never>(
  filter?: ClientRunFilter<JobName<T>>,
  options?: ClientOption<T> & {
    /** false: no live updates (read once; `refresh()` re-reads). Default true. */
    live?: boolean
  },
): { runs: AnyRunOf<T>[]; error: Error | null; isLoading: boolean; refresh(): void }

export interface RunActions {
  /** A failed or cancelled run back to pending (hooks showing it follow it again). */
  retry(runId: string): Promise<{ runId: string }>
  /** A new run with the same job, input and labels. */
  retrigger(runId: string): Promise<{ runId: string }>
  cancel(runId: string): Promise<void>
  deleteRun(runId: string): Promise<void>
  /** An action is under way. */
  isPending: boolean
  /** The last action's error (cleared by the next action). */
  error: Error | null
}

export declare function useRunActions(options?: ClientOption<any>): RunActions
