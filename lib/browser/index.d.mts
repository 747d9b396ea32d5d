// Types of durably/browser (issue 17). Hand-written, type-tested in
// __test__/types/browser.mts. The API is the Node one (index.d.ts) without
// what a tab cannot do: no processOne/processUntilIdle, no stop options.

import type {
  Durably as NodeDurably,
  DurablyOptions as NodeDurablyOptions,
  JobDefinitions,
  Labels,
} from '../../index.js'

export type {
  DurablyEvent,
  DurablyEventMap,
  DurablyEventType,
  DurablyPlugin,
  JobContext,
  JobDefinition,
  JobHandle,
  Log,
  Progress,
  Run,
  RunFilter,
  RunStatus,
  Step,
  SubscribeEvent,
  TriggerOptions,
  Unsubscribe,
} from '../../index.js'
export {
  defineJob,
  withLogPersistence,
  DurablyError,
  ValidationError,
  NotFoundError,
  ConflictError,
  CancelledError,
  LeaseLostError,
  RunFailedError,
  TimeoutError,
} from '../../index.js'

export interface BrowserDurablyOptions<TJobs extends JobDefinitions = JobDefinitions, TLabels extends Labels = Labels>
  extends Omit<NodeDurablyOptions<TJobs, TLabels>, 'busyTimeout' | 'retainRuns' | 'synchronous'> {
  /** Database name inside the OPFS directory. Default `'durably.db'`. */
  path?: string
  /**
   * OPFS directory of the database (SQLite's sync access handle pool). One tab owns a directory at
   * a time (a Web Lock); use another directory for a database another tab keeps open. Default `'durably'`.
   */
  directory?: string
  /** How long to wait (ms) for another tab to release the directory before failing with `DB_LOCKED`. Default 3000. */
  lockTimeout?: number
  /** `'normal'` or `'full'` (SQLite's `synchronous`; with OPFS's rollback journal both flush each commit). */
  synchronous?: 'normal' | 'full'
}

/** The Node instance's API, with the engine in a dedicated Worker of this tab. */
export type Durably<TJobs extends JobDefinitions = {}, TLabels extends Labels = Labels> = Omit<
  NodeDurably<TJobs, TLabels>,
  'processOne' | 'processUntilIdle' | 'stop' | 'close'
> & {
  /** Stops claiming; resolves once the runs in flight in this tab finished their job function. */
  stop(): Promise<void>
  /** `stop()`, then closes the database and ends the worker (the tab releases the directory). */
  close(): Promise<void>
}

/**
 * Opens (creating) the database on OPFS in a dedicated Worker; call `init()` before triggering work.
 * Throws `DurablyError` code `INSECURE_CONTEXT` outside a secure context (https or localhost).
 */
export declare function createDurably<TJobs extends JobDefinitions = {}, TLabels extends Labels = Labels>(
  options?: BrowserDurablyOptions<TJobs, TLabels>,
): Durably<TJobs, TLabels>
