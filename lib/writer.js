'use strict'
// Batches the executing runs' writes. Every op pushed during one turn of the
// event loop is committed by a single native call in one transaction (group
// commit across the runs in flight); each pusher gets its op's status
// (OP_RESULTS in lib/protocol.js: written, cancelled, lost, tooBig); an op
// the engine could not apply rejects with its error (the batch's other ops
// are unaffected). Ops are encoded by lib/protocol.js.
//
// The fast path commits synchronously on the JS thread, but only when the
// write lock is free at once; if this process's worker thread or another
// process holds it, the batch goes to a pool thread instead, so the event
// loop never waits for a lock. With synchronous: 'full' every batch goes to
// the pool (an fsync per commit would otherwise block the event loop).
// On PostgreSQL (`sendOnly`) every batch is a network round trip: it is sent
// with `flushSend` to the engine's runtime, which owns the connections, and
// its answer comes back through `flushed` (the engine's onFlushed), without a
// pool thread in between. Batches commit strictly in order.

const { fromNative, fromCode } = require('./errors')
const { encodeBatch, OP_RESULTS: OP } = require('./protocol')

/** Longest stretch of back-to-back flushes without an event-loop turn. */
const YIELD_MS = 4
/** Longest wait of a run event for a batch in flight to carry it (PostgreSQL). */
const EVENTS_WAIT_MS = 10

class Writer {
  constructor(engine, { alwaysAsync, sendOnly = false, onClaimed, onEventsError = () => {} }) {
    this.engine = engine
    this.onClaimed = onClaimed
    this.onEventsError = onEventsError
    this.alwaysAsync = alwaysAsync
    this.sendOnly = sendOnly
    // Run events to publish (PostgreSQL): sent with the next batch when one
    // is sent this turn or is in flight (at most EVENTS_WAIT_MS), else on
    // their own at the next turn.
    this.eventIds = []
    this.eventJsons = []
    this.eventsArmed = false // eventsDue is queued (setImmediate)
    this.eventsTimer = null // the longest wait for a batch in flight
    this.eventsDueBound = () => this.eventsDue()
    this.sendEventsBound = () => this.sendEvents()
    this.sent = null // the waiters of the batch flushSend sent, until flushed()
    this.keepAlive = null // a timer ref'd while a sent batch is in flight
    this.ops = []
    this.waiters = []
    this.scheduled = false
    this.busy = false // an async batch is in flight
    this.flushBound = () => this.flush()
    this.yieldedBound = () => this.yielded()
    this.lastYield = 0
    this.lingering = false
  }

  /** Queues one op (JSON text, from lib/protocol.js); resolves with its status (an OP_RESULTS value). */
  push(op) {
    return new Promise((resolve, reject) => {
      this.ops.push(op)
      this.waiters.push(resolve, reject)
      if (!this.scheduled && !this.busy) {
        this.scheduled = true
        this.schedule()
      }
    })
  }

  /**
   * Flushes after the current microtasks (every run in flight that is ready
   * to write by then joins the batch) rather than after an event-loop turn,
   * which would cost an epoll round per step. So that a stream of steps never
   * starves timers and I/O, at least every YIELD_MS the flush waits for the
   * next turn instead.
   */
  schedule() {
    const now = performance.now()
    if (now - this.lastYield < YIELD_MS) {
      queueMicrotask(this.flushBound)
    } else {
      setImmediate(this.yieldedBound)
    }
  }

  yielded() {
    this.lastYield = performance.now()
    this.flush()
  }

  /** The next flush waits for the next event-loop turn (a run starting now joins it). */
  linger() {
    this.lingering = true
  }

  flush() {
    if (this.lingering) {
      this.lingering = false
      if (this.ops.length !== 0 && !this.busy) {
        setImmediate(this.yieldedBound)
        return
      }
    }
    this.scheduled = false
    if (this.ops.length === 0 || this.busy) return
    const ops = this.ops
    const waiters = this.waiters
    this.ops = []
    this.waiters = []
    const text = encodeBatch(ops)
    if (this.sendOnly) return this.send(text, waiters)
    if (!this.alwaysAsync) {
      let res
      try {
        res = this.engine.flush(text)
      } catch (err) {
        return settleAll(waiters, null, fromNative(err))
      }
      if (typeof res === 'string') return this.settleText(waiters, res)
      if (res !== null) return this.settle(waiters, res, null)
    }
    this.busy = true
    this.engine.flushAsync(text).then(
      (res) => {
        this.afterAsync()
        if (typeof res === 'string') this.settleText(waiters, res)
        else this.settle(waiters, res, null)
      },
      (err) => {
        this.afterAsync()
        settleAll(waiters, null, fromNative(err))
      },
    )
  }

  /**
   * Sends a batch with `flushSend`; `flushed` settles it. The engine's
   * callback does not keep the process alive, so a timer does meanwhile.
   */
  send(text, waiters) {
    const ids = this.eventIds
    const jsons = this.eventJsons
    if (ids.length) {
      this.eventIds = []
      this.eventJsons = []
      this.clearEventsTimer()
    }
    try {
      this.engine.flushSend(text, ids, jsons)
    } catch (err) {
      return settleAll(waiters, null, fromNative(err))
    }
    this.busy = true
    this.sent = waiters
    this.keepAlive ??= setInterval(() => {}, 1 << 30)
    this.keepAlive.ref()
  }

  /**
   * Queues a run event for the other processes (PostgreSQL): it goes with
   * the next batch (in its round trip) when one is sent this turn or is in
   * flight, else on its own (`publishEvents`) at the next turn; never later
   * than EVENTS_WAIT_MS after a batch it waits for was sent. Events keep
   * their order either way.
   */
  event(runId, json) {
    this.eventIds.push(runId)
    this.eventJsons.push(json)
    this.armEvents()
  }

  armEvents() {
    if (this.eventsArmed) return
    this.eventsArmed = true
    setImmediate(this.eventsDueBound)
  }

  eventsDue() {
    this.eventsArmed = false
    if (this.eventIds.length === 0) return
    if (this.busy || this.scheduled) {
      // The batch in flight or about to be sent goes first; the next carries these.
      this.eventsTimer ??= setTimeout(this.sendEventsBound, EVENTS_WAIT_MS)
      return
    }
    this.sendEvents()
  }

  clearEventsTimer() {
    if (this.eventsTimer === null) return
    clearTimeout(this.eventsTimer)
    this.eventsTimer = null
  }

  /** Hands the queued run events to the engine on their own, in order. */
  sendEvents() {
    this.clearEventsTimer()
    if (this.eventIds.length === 0) return
    const ids = this.eventIds
    const jsons = this.eventJsons
    this.eventIds = []
    this.eventJsons = []
    try {
      this.engine.publishEvents(ids, jsons)
    } catch (err) {
      this.onEventsError(fromNative(err))
    }
  }

  /** The engine's answer to the batch `send` sent (a FlushDone). */
  flushed(done) {
    const waiters = this.sent
    this.sent = null
    this.keepAlive.unref()
    this.afterAsync()
    if (done.result) this.settle(waiters, done.result, null)
    else settleAll(waiters, null, fromCode(done.code, done.message))
  }

  /** Settles the batch's waiters from a FlushResult; hands runs claimed in the same commit to the instance. */
  settle(waiters, res, error) {
    if (error) return settleAll(waiters, null, error)
    const { statuses, claimed, errors } = res
    if (errors) {
      // An op the engine could not apply fails alone: its pusher gets the error.
      for (const { index, code, message } of errors) {
        const reject = waiters[2 * index + 1]
        waiters[2 * index] = reject === undefined ? waiters[2 * index] : () => reject(fromCode(code, message))
      }
    }
    settleAll(waiters, statuses, null)
    if (claimed) this.onClaimed(claimed)
  }

  /**
   * Settles the batch's waiters from `flush`'s answer as text (no op failed):
   * a status code per op, then a newline and the runs claimed in the same
   * commit, if any.
   */
  settleText(waiters, text) {
    for (let i = 0, j = 0; i < waiters.length; i += 2, j++) waiters[i](OP_OF_CODE[text.charCodeAt(j)])
    const nl = text.indexOf('\n', waiters.length >> 1)
    if (nl >= 0) this.onClaimed(text.slice(nl + 1))
  }

  afterAsync() {
    this.busy = false
    if (this.ops.length && !this.scheduled) {
      this.scheduled = true
      this.schedule()
    }
    // Events that waited for this batch: with the next one this turn, else alone.
    if (this.eventIds.length) this.armEvents()
  }

  /** Resolves when everything queued so far is committed (or failed). */
  async drain() {
    // (a pending microtask flush runs before the first setImmediate below)
    while (this.ops.length || this.busy || this.scheduled) {
      await new Promise((r) => setImmediate(r))
    }
    if (this.keepAlive) clearInterval(this.keepAlive)
    this.keepAlive = null
  }
}

/** The status of an op by its code in `flush`'s text answer (src/store/flush.rs `OpStatus::as_char`). */
const OP_OF_CODE = []
for (const [code, status] of [
  ['0', OP.written],
  ['c', OP.cancelled],
  ['l', OP.lost],
  ['b', OP.tooBig],
  ['e', OP.failed],
]) {
  OP_OF_CODE[code.charCodeAt(0)] = status
}

function settleAll(waiters, res, error) {
  for (let i = 0, j = 0; i < waiters.length; i += 2, j++) {
    if (error) waiters[i + 1](error)
    else waiters[i](res[j])
  }
}

module.exports = { Writer }
