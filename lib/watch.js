'use strict'
// Watching one run: waitForRun (a promise) and subscribe (a stream). Both
// follow the instance's events for runs executed here and poll the store
// for runs another process executes. They see the instance only through a
// narrow source: { getRunNow(id), onAny(listener) → unsubscribe,
// isClosed(), noWorkerNote(id), sequence() (the last event's sequence number),
// executesHere(id) (optional: the run is in flight in this instance) }.
// getRunNow and noWorkerNote answer at once on SQLite and with a promise on
// PostgreSQL (a read off the JS thread); both are handled here.
//
// A run in flight here is settled by its own terminal event, never by a poll:
// its final write commits before the execution emits run:progress and the
// terminal event (on PostgreSQL the poll can see the commit first), and a
// waiter must not resolve before those reach the listeners.

const { TERMINAL_EVENTS } = require('./events')
const { TERMINAL } = require('./status')
const { NotFoundError, CancelledError, TimeoutError, RunFailedError, fromNative } = require('./errors')
const { checkWaitOptions } = require('./checks')

const isPromise = (v) => v !== null && typeof v === 'object' && typeof v.then === 'function'

/** Resolves with the completed run; rejects on failure, cancellation, timeout. */
function waitForRun(source, runId, options = {}) {
  try {
    checkWaitOptions(options)
  } catch (err) {
    return Promise.reject(err)
  }
  const { timeout, onProgress, onLog } = options ?? {}
  return new Promise((resolve, reject) => {
    let done = false
    let pollTimer = null
    let timeoutTimer = null
    let pollEvery = 5
    const finish = (fn, v) => {
      if (done) return
      done = true
      unsub()
      clearTimeout(pollTimer)
      clearTimeout(timeoutTimer)
      fn(v)
    }
    const settleFrom = (run) => {
      if (!run) return finish(reject, new NotFoundError(`run ${runId} not found`))
      if (run.status === 'completed') return finish(resolve, run)
      if (run.status === 'failed') return finish(reject, new RunFailedError(run.error ?? 'run failed', runId))
      if (run.status === 'cancelled') return finish(reject, new CancelledError(`run ${runId} was cancelled`))
    }
    const fail = (err) => finish(reject, fromNative(err))
    const executesHere = () => source.executesHere !== undefined && source.executesHere(runId)
    // Settles from the run's current state; a promise when the read is async.
    // `polled`: not after a terminal event, so not while the run is in flight
    // here (also when it started meanwhile: an async read is answered later).
    const check = (polled = false) => {
      let run
      try {
        run = source.getRunNow(runId)
      } catch (err) {
        return fail(err)
      }
      if (isPromise(run)) return run.then((r) => done || (polled && executesHere()) || settleFrom(r), fail)
      settleFrom(run)
    }
    const unsub = source.onAny((e) => {
      if (e.runId !== runId) return
      if (e.type === 'run:progress' && onProgress) onProgress(e.progress)
      else if (e.type === 'log:write' && onLog) onLog(e)
      else if (TERMINAL_EVENTS.has(e.type)) queueMicrotask(check)
    })
    // Another process may execute the run: poll the store too, backing off.
    // An async read is awaited before the next is scheduled (never two at once).
    const poll = () => {
      const next = () => {
        if (done) return
        pollEvery = Math.min(pollEvery * 2, 250)
        pollTimer = setTimeout(poll, pollEvery)
      }
      const pending = executesHere() ? undefined : check(true)
      if (isPromise(pending)) pending.then(next)
      else next()
    }
    if (timeout !== undefined) {
      timeoutTimer = setTimeout(() => {
        const timedOut = (note) => finish(reject, new TimeoutError(`waitForRun: run ${runId} did not finish within ${timeout} ms${note}`))
        const note = source.noWorkerNote(runId)
        if (!isPromise(note)) return timedOut(note)
        // Settled meanwhile by an event or a poll: that outcome stands.
        note.then(timedOut, () => timedOut(''))
      }, timeout)
    }
    poll()
  })
}

/** A stream of one run's events: its current state first, closing after its terminal event. */
function subscribe(source, runId) {
  let unsub = () => {}
  let timer = null
  let stopped = false
  const stop = () => {
    stopped = true
    unsub()
    clearInterval(timer)
  }
  const snapshot = (run, now) => ({
    type: 'run:snapshot',
    runId,
    jobName: run.jobName,
    labels: run.labels,
    timestamp: new Date().toISOString(),
    // The state after every event up to this sequence: later events have a higher one.
    sequence: source.sequence(),
    run: now,
  })
  /** Streams from `run` (read at sequence `since`), then `kept` events, then live ones. */
  const follow = (controller, run, since, kept) => {
    if (stopped) return
    if (!run) {
      controller.error(new NotFoundError(`run ${runId} not found`))
      return
    }
    controller.enqueue({ ...snapshot(run, run), sequence: since })
    if (TERMINAL.has(run.status)) {
      controller.close()
      return
    }
    let closed = false
    const close = () => {
      if (closed) return
      closed = true
      stop()
      controller.close()
    }
    const onEvent = (e) => {
      if (e.runId !== runId || closed) return
      controller.enqueue(e)
      if (TERMINAL_EVENTS.has(e.type)) close()
    }
    for (const e of kept) onEvent(e)
    if (closed) return
    unsub = source.onAny(onEvent)
    // Runs executed by another process: notice the end by polling (one read at a time).
    let reading = false
    const ended = (now) => {
      if (closed) return
      if (!now || TERMINAL.has(now.status)) {
        controller.enqueue(snapshot(run, now))
        close()
      }
    }
    timer = setInterval(() => {
      if (closed || source.isClosed()) return close()
      if (reading) return
      if (source.executesHere !== undefined && source.executesHere(runId)) return // its own events end it
      let now
      try {
        now = source.getRunNow(runId)
      } catch {
        return close() // closed meanwhile
      }
      if (!isPromise(now)) return ended(now)
      reading = true
      now.then(
        (r) => {
          reading = false
          ended(r)
        },
        () => {
          reading = false
          if (source.isClosed()) close()
        },
      )
    }, 500)
    timer.unref()
  }
  return new ReadableStream({
    start: (controller) => {
      // While the run is read off the JS thread, its events are kept: the
      // snapshot is at least as new as the sequence when the read began, and
      // the kept events (higher sequences) follow it. Listening before the
      // read also makes other processes publish the run's events (PostgreSQL).
      const since = source.sequence()
      const kept = []
      unsub = source.onAny((e) => {
        if (e.runId === runId) kept.push(e)
      })
      let run
      try {
        run = source.getRunNow(runId)
      } catch (err) {
        unsub()
        controller.error(fromNative(err))
        return
      }
      if (!isPromise(run)) {
        unsub()
        return follow(controller, run, source.sequence(), [])
      }
      return run.then(
        (r) => {
          unsub()
          follow(controller, r, since, kept)
        },
        (err) => {
          unsub()
          controller.error(fromNative(err))
        },
      )
    },
    cancel: stop,
  })
}

module.exports = { waitForRun, subscribe }
