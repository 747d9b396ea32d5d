'use strict'
// Server-sent events for the HTTP handler: one `data: <json>\n\n` frame per
// event, `run:progress` throttled per run, and a channel that releases its
// listeners the moment the client goes away.

const { TERMINAL_EVENTS } = require('./events')

// A client that stops reading while events keep coming is dropped once this
// many frames wait in its queue, instead of buffering without bound.
const MAX_QUEUED_FRAMES = 10_000

const SSE_HEADERS = {
  'content-type': 'text/event-stream; charset=utf-8',
  'cache-control': 'no-cache, no-transform',
  'x-accel-buffering': 'no',
}

/**
 * JSON for clients. Revived values become plain JSON: BigInt → decimal
 * string, Map → object (or `[key, value]` pairs when a key is not a string),
 * Set → array, bytes → base64; Date, NaN and Infinity as JSON.stringify does.
 */
function stringify(value) {
  return JSON.stringify(value, replacer)
}

function replacer(key, value) {
  const raw = this[key]
  if (typeof raw === 'bigint') return raw.toString()
  if (raw instanceof Map) {
    const entries = [...raw]
    return entries.every(([k]) => typeof k === 'string') ? Object.fromEntries(entries) : entries
  }
  if (raw instanceof Set) return [...raw]
  if (ArrayBuffer.isView(raw)) return Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString('base64')
  return value
}

/**
 * Per-run throttle of `run:progress`: sent at once when the last one of that
 * run went out at least `ms` ago, otherwise the newest waits for the rest of
 * the interval. Any other event of that run (a terminal one, a snapshot, a
 * log line) flushes the waiting one first, so the last progress always
 * reaches the client, in order.
 */
class ProgressThrottle {
  constructor(ms, out) {
    this.ms = ms
    this.out = out
    this.last = new Map()
    this.pending = new Map()
  }

  push(e) {
    if (this.ms <= 0) return this.out(e)
    const id = e.runId
    if (e.type === 'run:progress') {
      const waiting = this.pending.get(id)
      if (waiting) {
        waiting.event = e
        return
      }
      const now = Date.now()
      const last = this.last.get(id)
      if (last === undefined || now - last >= this.ms) {
        this.sent(id, now)
        return this.out(e)
      }
      const timer = setTimeout(() => this.flush(id), this.ms - (now - last))
      this.pending.set(id, { event: e, timer })
      return
    }
    // Any other event of the run flushes its waiting progress first, so a
    // stream's events go out in sequence order (a resuming client's cursor is
    // then exact).
    this.flush(id)
    if (TERMINAL_EVENTS.has(e.type)) this.last.delete(id)
    this.out(e)
  }

  flush(id) {
    const waiting = this.pending.get(id)
    if (!waiting) return
    clearTimeout(waiting.timer)
    this.pending.delete(id)
    this.sent(id, Date.now())
    this.out(waiting.event)
  }

  flushAll() {
    for (const id of [...this.pending.keys()]) this.flush(id)
  }

  sent(id, now) {
    this.last.set(id, now)
    // Forget runs that could not be throttled any more anyway.
    if (this.last.size > 1000) for (const [k, t] of this.last) if (now - t >= this.ms) this.last.delete(k)
  }

  stop() {
    for (const { timer } of this.pending.values()) clearTimeout(timer)
    this.pending.clear()
    this.last.clear()
  }
}

/**
 * One SSE response. `onEnd(fn)` registers cleanup that runs exactly once:
 * when the client cancels the body, when `request.signal` aborts, when the
 * producer calls `end()`, or when the client reads too slowly (`fn` gets
 * whether the end was graceful). `idOf(event)`, when given, names each frame
 * (`id:` line) so a client can resume after it.
 */
class SseChannel {
  constructor(request, throttleMs, idOf) {
    this.idOf = idOf
    this.graceful = false
    this.closed = false
    this.cleanups = []
    this.encoder = new TextEncoder()
    this.controller = null
    this.throttle = new ProgressThrottle(throttleMs, (e) => this.write(e))
    this.stream = new ReadableStream({
      start: (controller) => {
        this.controller = controller
      },
      cancel: () => this.end(false),
    })
    const signal = request && request.signal
    if (signal) {
      if (signal.aborted) {
        queueMicrotask(() => this.end(false))
      } else {
        const onAbort = () => this.end(false)
        signal.addEventListener('abort', onAbort, { once: true })
        this.cleanups.push(() => signal.removeEventListener('abort', onAbort))
      }
    }
  }

  onEnd(fn) {
    if (this.closed) fn(this.graceful)
    else this.cleanups.push(fn)
  }

  /** Queues one event (throttled when it is `run:progress`). Never throws. */
  send(event) {
    if (this.closed) return
    try {
      this.throttle.push(event)
    } catch {
      this.end(false)
    }
  }

  write(event) {
    if (this.closed) return
    const id = this.idOf ? this.idOf(event) : null
    const frame = `${id === null || id === undefined ? '' : `id: ${id}\n`}data: ${stringify(event)}\n\n`
    this.controller.enqueue(this.encoder.encode(frame))
    if (this.controller.desiredSize < -MAX_QUEUED_FRAMES) {
      this.end(false)
      try {
        this.controller.error(new Error('SSE client too slow: dropped'))
      } catch {
        // already closed
      }
    }
  }

  /** Sends an SSE field line of its own (e.g. `retry: 86400000`). */
  field(line) {
    if (this.closed) return
    this.controller.enqueue(this.encoder.encode(`${line}\n\n`))
  }

  /** Ends the stream; `graceful` first sends throttled progress still waiting. */
  end(graceful = true) {
    if (this.closed) return
    if (graceful) this.throttle.flushAll()
    this.closed = true
    this.graceful = graceful
    this.throttle.stop()
    const fns = this.cleanups
    this.cleanups = []
    for (const fn of fns) {
      try {
        fn(graceful)
      } catch {
        // a cleanup failing must not keep the others from running
      }
    }
    try {
      this.controller.close()
    } catch {
      // cancelled or errored already
    }
  }

  response() {
    return new Response(this.stream, { status: 200, headers: SSE_HEADERS })
  }
}

module.exports = { SseChannel, ProgressThrottle, stringify, TERMINAL_EVENTS }
