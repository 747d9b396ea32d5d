'use strict'
// In-process events. Listeners never affect a run: a throwing (or rejecting)
// listener is reported as `worker:error`; a throwing `worker:error` listener
// is ignored rather than reported again (no recursion).

const EVENT_TYPES = [
  'run:trigger',
  'run:coalesced',
  'run:start',
  'run:complete',
  'run:fail',
  'run:cancel',
  'run:delete',
  'run:retry',
  'run:progress',
  'step:start',
  'step:complete',
  'step:fail',
  'step:cancel',
  'log:write',
  'worker:error',
]

class Events {
  constructor() {
    /** @type {Map<string, Set<Function>>} */
    this.listeners = new Map()
    /** listeners of every event (subscribe, waiters) */
    this.any = new Set()
    /** the last event's `sequence`: increasing per instance, to order and de-duplicate streams */
    this.sequence = 0
    /**
     * Told when the first listener of every event comes and after the last
     * one went (PostgreSQL: other processes' run events are wanted only
     * then). Off is told a microtask later, and only if none came back
     * meanwhile: a stream swapping its listener in one go stays on.
     * @type {((on: boolean) => void) | null}
     */
    this.onInterest = null
    this.interested = false
  }

  on(type, listener) {
    let set = this.listeners.get(type)
    if (!set) this.listeners.set(type, (set = new Set()))
    // Wrap so the same function can be added twice and removed once each.
    const entry = (e) => listener(e)
    set.add(entry)
    return () => set.delete(entry)
  }

  onAny(listener) {
    const entry = (e) => listener(e)
    this.any.add(entry)
    if (!this.interested && this.onInterest !== null) {
      this.interested = true
      this.onInterest(true)
    }
    return () => {
      if (this.any.delete(entry) && this.any.size === 0 && this.onInterest !== null) {
        queueMicrotask(() => {
          if (this.any.size > 0 || !this.interested) return
          this.interested = false
          this.onInterest(false)
        })
      }
    }
  }

  listenerCount(type) {
    const set = type ? this.listeners.get(type) : null
    if (type) return set ? set.size : 0
    let n = this.any.size
    for (const s of this.listeners.values()) n += s.size
    return n
  }

  has(type) {
    const set = this.listeners.get(type)
    return (set !== undefined && set.size > 0) || this.any.size > 0
  }

  emit(event) {
    event.sequence = ++this.sequence
    const set = this.listeners.get(event.type)
    if (set) for (const fn of set) this.call(fn, event)
    if (this.any.size) for (const fn of this.any) this.call(fn, event)
  }

  /**
   * An event of a run executed by another process (PostgreSQL): to the
   * listeners of every event (waitForRun, subscribe, /runs/subscribe) only;
   * `on(type)` listeners keep hearing this process's own events.
   */
  emitRemote(event) {
    event.sequence = ++this.sequence
    if (this.any.size) for (const fn of this.any) this.call(fn, event)
  }

  call(fn, event) {
    try {
      const r = fn(event)
      if (r && typeof r.then === 'function') r.then(undefined, (err) => this.listenerFailed(err, event))
    } catch (err) {
      this.listenerFailed(err, event)
    }
  }

  listenerFailed(err, event) {
    if (event.type === 'worker:error') return
    this.emit({
      type: 'worker:error',
      runId: event.runId ?? null,
      jobName: event.jobName ?? null,
      labels: event.labels ?? {},
      timestamp: new Date().toISOString(),
      error: err,
      context: 'listener',
    })
  }
}

/** Events after which a run changes no more (until a retry). */
const TERMINAL_EVENTS = new Set(['run:complete', 'run:fail', 'run:cancel', 'run:delete'])

module.exports = { Events, EVENT_TYPES, TERMINAL_EVENTS }
