// The state behind durably/react's hooks, outside React: one entry per
// (client, run) with one SSE subscription shared by every hook showing that
// run. An entry lingers a moment after its last hook lets go, so StrictMode's
// mount → unmount → mount (and a component moving) keeps the connection.

const LINGER_MS = 250
// Live log lines kept per run in hook state (the oldest are dropped beyond).
const MAX_LIVE_LOGS = 1_000

const EMPTY = Object.freeze({
  run: null,
  status: null,
  progress: null,
  output: null,
  error: null,
  logs: Object.freeze([]),
  connectionError: null,
})

/** A run's hook state after `e` (the previous state when nothing changed). */
export function reduce(state, e) {
  switch (e.type) {
    case 'run:snapshot': {
      const run = e.run
      if (!run) return { ...state, run: null, status: null }
      return {
        ...state,
        run,
        status: run.status,
        progress: run.progress ?? null,
        output: run.output ?? null,
        error: run.error ?? null,
        connectionError: null,
      }
    }
    case 'run:start':
      return withRun(state, { status: 'running', error: null })
    case 'run:retry':
      return withRun(state, { status: 'pending', error: null, output: null })
    case 'run:progress':
      return withRun(state, { progress: e.progress })
    case 'run:complete':
      return withRun(state, { status: 'completed', output: e.output })
    case 'run:fail':
      return withRun(state, { status: 'failed', error: e.error })
    case 'run:cancel':
      return withRun(state, { status: 'cancelled' })
    case 'run:delete':
      return { ...state, run: null, status: null }
    case 'log:write': {
      const line = { stepName: e.stepName, level: e.level, message: e.message, data: e.data, timestamp: e.timestamp, sequence: e.sequence }
      const logs = state.logs.length >= MAX_LIVE_LOGS ? [...state.logs.slice(1), line] : [...state.logs, line]
      return { ...state, logs }
    }
    default:
      return state
  }
}

/** Applies run-field changes to the state and to its `run` record. */
function withRun(state, changes) {
  const next = { ...state, ...changes }
  if (state.run) {
    const run = { ...state.run }
    for (const k of ['status', 'progress', 'output', 'error']) if (k in changes) run[k] = changes[k]
    if ('status' in changes) {
      run.isTerminal = ['completed', 'failed', 'cancelled'].includes(changes.status)
      run.isActive = !run.isTerminal
    }
    next.run = run
  }
  return next
}

class RunEntry {
  constructor(store, runId) {
    this.store = store
    this.runId = runId
    this.state = EMPTY
    this.listeners = new Set()
    this.ac = null
    this.linger = null
  }

  set(state) {
    if (state === this.state) return
    this.state = state
    for (const fn of [...this.listeners]) fn()
  }

  /** Opens the run's event stream unless one is open. */
  start() {
    if (this.ac) return
    const ac = (this.ac = new AbortController())
    ;(async () => {
      try {
        for await (const e of this.store.client.subscribe(this.runId, { signal: ac.signal })) {
          if (ac.signal.aborted) return
          this.set(reduce(this.state, e))
        }
      } catch (err) {
        if (!ac.signal.aborted) this.set({ ...this.state, connectionError: err })
      } finally {
        if (this.ac === ac) this.ac = null
      }
    })()
  }

  stop() {
    if (this.ac) this.ac.abort()
    this.ac = null
  }
}

/** The shared run entries of one client. */
export class RunStore {
  constructor(client) {
    this.client = client
    this.entries = new Map()
  }

  entry(runId) {
    let e = this.entries.get(runId)
    if (!e) this.entries.set(runId, (e = new RunEntry(this, runId)))
    return e
  }

  /** Adds a listener of the run's state, opening its stream; returns the release function. */
  subscribe(runId, listener) {
    const e = this.entry(runId)
    clearTimeout(e.linger)
    e.listeners.add(listener)
    e.start()
    return () => {
      e.listeners.delete(listener)
      if (e.listeners.size) return
      e.linger = setTimeout(() => {
        if (e.listeners.size) return
        e.stop()
        this.entries.delete(runId)
      }, LINGER_MS)
    }
  }

  get(runId) {
    const e = runId ? this.entries.get(runId) : undefined
    return e ? e.state : EMPTY
  }

  /**
   * After an action that brings an ended run back (retry): reopen its stream,
   * starting from a fresh snapshot.
   */
  revive(runId) {
    const e = this.entries.get(runId)
    if (!e || !e.listeners.size) return
    e.stop()
    e.set({ ...e.state, status: 'pending', error: null, output: null, run: e.state.run && { ...e.state.run, status: 'pending', isTerminal: false, isActive: true } })
    e.start()
  }
}

const stores = new WeakMap()

/** The run store of `client` (one per client, shared by all hooks). */
export function storeOf(client) {
  let s = stores.get(client)
  if (!s) stores.set(client, (s = new RunStore(client)))
  return s
}

export const EMPTY_RUN_STATE = EMPTY

/**
 * Persisted log lines followed by the live ones not among them. The live
 * lines (received since subscribing) may have gaps (a reconnect, a retry
 * that replayed before the stream reopened), so each is looked up on its
 * own: a persisted line with the same level, step and message and a
 * timestamp within 5 ms, not already taken by another live line, is it.
 */
export function mergeLogs(persisted, live) {
  const keyOf = (l) => `${l.level}\u0000${l.stepName ?? ''}\u0000${l.message}`
  const byKey = new Map()
  for (const p of persisted) {
    const k = keyOf(p)
    if (!byKey.has(k)) byKey.set(k, [])
    byKey.get(k).push({ at: Date.parse(p.timestamp), taken: false })
  }
  const extra = []
  for (const l of live) {
    const at = Date.parse(l.timestamp)
    const same = (byKey.get(keyOf(l)) ?? []).find((c) => !c.taken && Math.abs(c.at - at) <= 5)
    if (same) same.taken = true
    else extra.push(l)
  }
  return extra.length ? [...persisted, ...extra] : persisted
}
