// durably/react: hooks over durably/client. Plain ESM, no build step, React
// >= 18 (an optional peer dependency). Every hook showing one run shares one
// SSE connection (see react-store.mjs).

import { createContext, createElement, useCallback, useContext, useEffect, useMemo, useRef, useState, useSyncExternalStore } from 'react'
import { storeOf, mergeLogs, EMPTY_RUN_STATE } from './react-store.mjs'

const ClientContext = createContext(null)

/** Makes `client` the one hooks use when they are not given a job handle or `{ client }`. */
export function DurablyProvider({ client, children }) {
  return createElement(ClientContext.Provider, { value: client }, children)
}

/** The client from the nearest `DurablyProvider`. */
export function useDurablyClient(explicit) {
  const fromContext = useContext(ClientContext)
  const client = explicit ?? fromContext
  if (!client) {
    throw new Error('durably/react: no client. Wrap the app in <DurablyProvider client={createDurablyClient(…)}>, or pass { client }')
  }
  return client
}

function derived(runId, state) {
  const status = state.status
  return {
    runId,
    run: state.run,
    status,
    progress: state.progress,
    output: state.output,
    error: state.error,
    logs: state.logs,
    connectionError: state.connectionError,
    isPending: status === 'pending',
    isRunning: status === 'pending' || status === 'running',
    isCompleted: status === 'completed',
    isFailed: status === 'failed',
    isCancelled: status === 'cancelled',
    isTerminal: status === 'completed' || status === 'failed' || status === 'cancelled',
  }
}

/** The shared live state of one run (EMPTY while `runId` is null). */
function useRunState(client, runId) {
  const store = storeOf(client)
  const subscribe = useCallback((onChange) => (runId ? store.subscribe(runId, onChange) : () => {}), [store, runId])
  const get = useCallback(() => store.get(runId), [store, runId])
  return useSyncExternalStore(subscribe, get, () => EMPTY_RUN_STATE)
}

/**
 * A run, live: `{ run, status, progress, output, error, logs, isRunning, … }`.
 * `logs` are the lines written since the hook subscribed (`useLogs` adds the
 * persisted ones). `runId` may be null (nothing to show yet).
 */
export function useRun(runId, options = {}) {
  const client = useDurablyClient(options.client)
  const state = useRunState(client, runId ?? null)
  return useMemo(() => derived(runId ?? null, state), [runId, state])
}

/**
 * One job: `trigger(input)` starts a run and the hook follows it
 * (`{ trigger, runId, run, status, progress, output, error, logs, isRunning, reset }`).
 * `job` is `client.job(name)` (typed), or a job name with a `DurablyProvider`.
 */
export function useJob(job, options = {}) {
  const contextClient = useContext(ClientContext)
  const client = typeof job === 'string' ? (options.client ?? contextClient) : job && job.client
  if (!client) throw new Error('durably/react: useJob(job) takes client.job(name), or a job name inside <DurablyProvider>')
  const handle = typeof job === 'string' ? client.job(job) : job
  const [runId, setRunId] = useState(options.initialRunId ?? null)
  const [triggering, setTriggering] = useState(false)
  const state = useRunState(client, runId)
  const latest = useRef(0)

  const trigger = useCallback(
    async (input, triggerOptions) => {
      const mine = ++latest.current
      setTriggering(true)
      try {
        const result = await handle.trigger(input, triggerOptions)
        if (mine === latest.current) setRunId(result.runId)
        return result
      } finally {
        if (mine === latest.current) setTriggering(false)
      }
    },
    // the handle is recreated per render when given by name; its name is what matters
    [client, handle.name],
  )
  const reset = useCallback(() => {
    latest.current++
    setTriggering(false)
    setRunId(null)
  }, [])

  return useMemo(() => {
    const d = derived(runId, state)
    // Between the trigger and the first event the run is pending.
    if (triggering && d.status === null) {
      d.status = 'pending'
      d.isPending = true
      d.isRunning = true
    }
    return { ...d, trigger, reset, isTriggering: triggering }
  }, [runId, state, triggering, trigger, reset])
}

/**
 * A run's log lines: the persisted ones (the server needs
 * `withLogPersistence()`) followed by live ones. Re-read when the run ends.
 */
export function useLogs(runId, options = {}) {
  const client = useDurablyClient(options.client)
  const state = useRunState(client, runId ?? null)
  const [persisted, setPersisted] = useState({ runId: null, logs: [] })
  const [error, setError] = useState(null)
  const terminal = state.status === 'completed' || state.status === 'failed' || state.status === 'cancelled'
  useEffect(() => {
    if (!runId) return
    const ac = new AbortController()
    client.getLogs(runId, { signal: ac.signal }).then(
      (logs) => {
        setPersisted({ runId, logs })
        setError(null)
      },
      (err) => {
        if (!ac.signal.aborted) setError(err)
      },
    )
    return () => ac.abort()
  }, [client, runId, terminal])
  const logs = useMemo(
    () => (persisted.runId === runId ? mergeLogs(persisted.logs, state.logs) : state.logs),
    [persisted, runId, state.logs],
  )
  return { logs, error, isLoading: !!runId && persisted.runId !== runId && !error }
}

const REFRESH_ON = new Set(['run:trigger', 'run:coalesced', 'run:start', 'run:complete', 'run:fail', 'run:cancel', 'run:delete', 'run:retry', 'reconnect'])

/**
 * Runs matching `filter` (`jobName`, `status`, `labels`, `limit`, `offset`),
 * newest first, kept live: re-read when a matching run changes state,
 * progress patched in place. `{ runs, isLoading, error, refresh }`.
 */
export function useRuns(filter = {}, options = {}) {
  const client = useDurablyClient(options.client)
  const key = JSON.stringify(filter ?? {})
  const [state, setState] = useState({ key: null, runs: [], error: null })
  const [tick, setTick] = useState(0)
  const refresh = useCallback(() => setTick((t) => t + 1), [])

  useEffect(() => {
    const ac = new AbortController()
    client.getRuns(JSON.parse(key), { signal: ac.signal }).then(
      (runs) => setState({ key, runs, error: null }),
      (error) => {
        if (!ac.signal.aborted) setState((s) => ({ ...s, key, error }))
      },
    )
    return () => ac.abort()
  }, [client, key, tick])

  useEffect(() => {
    if (options.live === false) return
    const f = JSON.parse(key)
    const ac = new AbortController()
    let timer = null
    ;(async () => {
      try {
        for await (const e of client.subscribeRuns({ jobName: f.jobName, labels: f.labels }, { signal: ac.signal })) {
          if (e.type === 'run:progress') {
            setState((s) => ({ ...s, runs: s.runs.map((r) => (r.id === e.runId ? { ...r, progress: e.progress } : r)) }))
          } else if (REFRESH_ON.has(e.type) && timer === null) {
            // A burst of changes is one re-read.
            timer = setTimeout(() => {
              timer = null
              refresh()
            }, 50)
          }
        }
      } catch (error) {
        if (!ac.signal.aborted) setState((s) => ({ ...s, error }))
      }
    })()
    return () => {
      clearTimeout(timer)
      ac.abort()
    }
  }, [client, key, options.live, refresh])

  return { runs: state.runs, error: state.error, isLoading: state.key !== key, refresh }
}

/**
 * `{ retry, retrigger, cancel, deleteRun, isPending, error }`. A retried run's
 * hooks follow it again (its stream had ended with the failure).
 */
export function useRunActions(options = {}) {
  const client = useDurablyClient(options.client)
  const [pending, setPending] = useState(0)
  const [error, setError] = useState(null)
  const wrap = useCallback(
    (fn) =>
      async (...args) => {
        setPending((n) => n + 1)
        setError(null)
        try {
          return await fn(...args)
        } catch (err) {
          setError(err)
          throw err
        } finally {
          setPending((n) => n - 1)
        }
      },
    [],
  )
  return useMemo(
    () => ({
      retry: wrap(async (runId) => {
        const r = await client.retry(runId)
        storeOf(client).revive(runId)
        return r
      }),
      retrigger: wrap((runId) => client.retrigger(runId)),
      cancel: wrap((runId) => client.cancel(runId)),
      deleteRun: wrap((runId) => client.deleteRun(runId)),
      isPending: pending > 0,
      error,
    }),
    [client, wrap, pending, error],
  )
}
