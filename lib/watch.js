'use strict'
// Watching one run: waitForRun (a promise) and subscribe (a stream). Both
// follow the instance's events for runs executed here and poll the store
// for runs another process executes. They see the instance only through a
// narrow source: { getRunNow(id), onAny(listener) → unsubscribe,
// isClosed(), noWorkerNote(id), sequence() (the last event's sequence number) }.

const { TERMINAL_EVENTS } = require('./events')
const { TERMINAL } = require('./status')
const { NotFoundError, CancelledError, TimeoutError, RunFailedError, fromNative } = require('./errors')
const { checkWaitTimeout } = require('./checks')

/** Resolves with the completed run; rejects on failure, cancellation, timeout. */
function waitForRun(source, runId, options = {}) {
  const { timeout, onProgress, onLog } = options ?? {}
  try {
    checkWaitTimeout(timeout)
  } catch (err) {
    return Promise.reject(err)
  }
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
    const check = () => {
      try {
        settleFrom(source.getRunNow(runId))
      } catch (err) {
        finish(reject, fromNative(err))
      }
    }
    const unsub = source.onAny((e) => {
      if (e.runId !== runId) return
      if (e.type === 'run:progress' && onProgress) onProgress(e.progress)
      else if (e.type === 'log:write' && onLog) onLog(e)
      else if (TERMINAL_EVENTS.has(e.type)) queueMicrotask(check)
    })
    // Another process may execute the run: poll the store too, backing off.
    const poll = () => {
      check()
      if (done) return
      pollEvery = Math.min(pollEvery * 2, 250)
      pollTimer = setTimeout(poll, pollEvery)
    }
    if (timeout !== undefined) {
      timeoutTimer = setTimeout(
        () => finish(reject, new TimeoutError(`waitForRun: run ${runId} did not finish within ${timeout} ms${source.noWorkerNote(runId)}`)),
        timeout,
      )
    }
    poll()
  })
}

/** A stream of one run's events: its current state first, closing after its terminal event. */
function subscribe(source, runId) {
  let unsub = () => {}
  let timer = null
  const stop = () => {
    unsub()
    clearInterval(timer)
  }
  return new ReadableStream({
    start: (controller) => {
      const run = source.getRunNow(runId)
      if (!run) {
        controller.error(new NotFoundError(`run ${runId} not found`))
        return
      }
      controller.enqueue({
        type: 'run:snapshot',
        runId,
        jobName: run.jobName,
        labels: run.labels,
        timestamp: new Date().toISOString(),
        // The state after every event up to this sequence: later events have a higher one.
        sequence: source.sequence(),
        run,
      })
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
      unsub = source.onAny((e) => {
        if (e.runId !== runId || closed) return
        controller.enqueue(e)
        if (TERMINAL_EVENTS.has(e.type)) close()
      })
      // Runs executed by another process: notice the end by polling.
      timer = setInterval(() => {
        if (closed || source.isClosed()) return close()
        const now = source.getRunNow(runId)
        if (!now || TERMINAL.has(now.status)) {
          controller.enqueue({
            type: 'run:snapshot',
            runId,
            jobName: run.jobName,
            labels: run.labels,
            timestamp: new Date().toISOString(),
            sequence: source.sequence(),
            run: now,
          })
          close()
        }
      }, 500)
      timer.unref()
    },
    cancel: stop,
  })
}

module.exports = { waitForRun, subscribe }
