// durably/client: a typed HTTP client for createDurablyHandler. Plain ESM,
// no dependencies, nothing from the server side: only `fetch`, web streams
// and TextDecoder, so it runs in browsers, Node >= 20, Deno and Bun.

import { sseMessages, pause } from './client-sse.mjs'

const TERMINAL_STATUSES = new Set(['completed', 'failed', 'cancelled'])
const TERMINAL_EVENTS = new Set(['run:complete', 'run:fail', 'run:cancel', 'run:delete'])
const CODE_BY_STATUS = { 400: 'VALIDATION_ERROR', 401: 'UNAUTHORIZED', 403: 'FORBIDDEN', 404: 'NOT_FOUND', 409: 'CONFLICT' }
// Reconnect delays of a dropped stream: doubling from the first to the last.
const RECONNECT_MIN_MS = 250
const RECONNECT_MAX_MS = 5_000

/** An HTTP error answer (`status`), a failed or cancelled run, or a timeout; `code` says which. */
export class DurablyClientError extends Error {
  constructor(message, { code, status = null, runId = null, body } = {}) {
    super(message)
    this.name = 'DurablyClientError'
    this.code = code
    this.status = status
    this.runId = runId
    if (body !== undefined) this.body = body
  }
}

/** `leased` is what an upstream (@coji/durably) server calls `running`. */
function normalizeRun(run) {
  if (!run || run.status !== 'leased') return run
  return { ...run, status: 'running' }
}

function normalizeEvent(e) {
  if (e.type === 'run:leased') {
    const { leaseOwner, leaseExpiresAt, ...rest } = e
    return { ...rest, type: 'run:start' }
  }
  if (e.type === 'run:snapshot' && e.run) return { ...e, run: normalizeRun(e.run) }
  return e
}

/** Whether `e` is the last event of its run's stream. */
export function isTerminalEvent(e) {
  if (TERMINAL_EVENTS.has(e.type)) return true
  return e.type === 'run:snapshot' && (e.run === null || TERMINAL_STATUSES.has(e.run.status))
}

/** `epoch.sequence` (an `id:` line) → its parts; a bare number has no epoch. */
function parseId(id) {
  if (typeof id !== 'string') return null
  const m = /^(?:([0-9a-z]+)\.)?(\d+)$/.exec(id)
  return m ? { epoch: m[1] ?? null, sequence: Number(m[2]) } : null
}

function checkOptions(options) {
  if (options === null || typeof options !== 'object') {
    throw new TypeError('createDurablyClient(options): options must be an object with baseUrl')
  }
  const { baseUrl, headers, fetch: fetchFn } = options
  if (typeof baseUrl !== 'string' || baseUrl === '') {
    throw new TypeError('createDurablyClient: baseUrl must be a non-empty string, e.g. "/api/durably"')
  }
  if (headers !== undefined && (headers === null || (typeof headers !== 'object' && typeof headers !== 'function'))) {
    throw new TypeError('createDurablyClient: headers must be an object, a Headers, or a function returning one')
  }
  const f = fetchFn ?? globalThis.fetch
  if (typeof f !== 'function') throw new TypeError('createDurablyClient: no fetch available; pass options.fetch')
  return { base: baseUrl.replace(/\/+$/, ''), headers, fetch: fetchFn ? fetchFn : (...a) => globalThis.fetch(...a) }
}

function query(params) {
  const q = new URLSearchParams()
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null) continue
    if (k === 'labels') for (const [lk, lv] of Object.entries(v)) q.append(`label.${lk}`, lv)
    else if (Array.isArray(v)) for (const x of v) q.append(k, String(x))
    else q.append(k, String(v))
  }
  const s = q.toString()
  return s ? `?${s}` : ''
}

/**
 * Creates a client for a durably HTTP handler mounted at `baseUrl`.
 * Type it with the server's jobs: `createDurablyClient<typeof jobs>(…)`.
 */
export function createDurablyClient(options) {
  const { base, headers, fetch: doFetch } = checkOptions(options)

  async function headersFor(extra) {
    const h = new Headers(typeof headers === 'function' ? await headers() : headers)
    if (extra) for (const [k, v] of Object.entries(extra)) h.set(k, v)
    return h
  }

  async function request(method, path, { body, signal, allow404 = false } = {}) {
    const init = { method, signal, headers: await headersFor(body === undefined ? undefined : { 'content-type': 'application/json' }) }
    if (body !== undefined) init.body = JSON.stringify(body)
    const res = await doFetch(`${base}${path}`, init)
    if (allow404 && res.status === 404) {
      await res.body?.cancel().catch(() => {})
      return null
    }
    if (!res.ok) throw await httpError(res, `${method} ${path.split('?')[0]}`)
    return res.json()
  }

  async function httpError(res, what) {
    let body
    let message = `${what} answered ${res.status}`
    try {
      const text = await res.text()
      body = text
      const parsed = JSON.parse(text)
      body = parsed
      if (parsed && typeof parsed.error === 'string') message = parsed.error
    } catch {
      // not JSON: keep the status line
    }
    return new DurablyClientError(message, { code: CODE_BY_STATUS[res.status] ?? 'HTTP_ERROR', status: res.status, body })
  }

  const enc = encodeURIComponent

  /**
   * The run's events as an async iterable: its current state first
   * (`run:snapshot`), then every event, ending after the terminal one. A
   * dropped connection is reopened after the last event received; within the
   * server's resume window nothing is lost or repeated (otherwise a fresh
   * snapshot arrives first).
   */
  function subscribe(runId, { signal, after } = {}) {
    if (typeof runId !== 'string' || runId === '') throw new TypeError('subscribe(runId): runId must be a non-empty string')
    return {
      [Symbol.asyncIterator]() {
        return runEvents(runId, signal, after)
      },
    }
  }

  async function* runEvents(runId, outerSignal, after) {
    const ac = new AbortController()
    const abort = () => ac.abort()
    if (outerSignal) {
      if (outerSignal.aborted) return
      outerSignal.addEventListener('abort', abort, { once: true })
    }
    let cursor = after === undefined || after === null ? null : parseId(String(after))
    let delay = RECONNECT_MIN_MS
    try {
      for (;;) {
        let res
        try {
          const resume = cursor ? `&after=${cursor.epoch ? `${cursor.epoch}.` : ''}${cursor.sequence}` : ''
          res = await doFetch(`${base}/subscribe?runId=${enc(runId)}${resume}`, {
            headers: await headersFor({ accept: 'text/event-stream' }),
            signal: ac.signal,
            cache: 'no-store',
          })
        } catch (err) {
          if (ac.signal.aborted) return
          await pause(delay, ac.signal)
          delay = Math.min(delay * 2, RECONNECT_MAX_MS)
          continue
        }
        if (!res.ok || !res.body) {
          // Server trouble is waited out; a client error (404, 403, 400) is final.
          if (res.status >= 500 || res.status === 429 || res.status === 408) {
            await res.body?.cancel().catch(() => {})
            await pause(delay, ac.signal)
            delay = Math.min(delay * 2, RECONNECT_MAX_MS)
            if (ac.signal.aborted) return
            continue
          }
          throw await httpError(res, 'GET /subscribe')
        }
        try {
          for await (const msg of sseMessages(res.body, ac.signal)) {
            let e
            try {
              e = normalizeEvent(JSON.parse(msg.data))
            } catch {
              continue
            }
            if (!e || typeof e.type !== 'string' || e.runId !== runId) continue
            const id = parseId(msg.id) ?? (typeof e.sequence === 'number' ? { epoch: null, sequence: e.sequence } : null)
            if (id && cursor && e.type !== 'run:snapshot' && (id.epoch === cursor.epoch || id.epoch === null)) {
              // Already seen (a server replaying from before our cursor): skip it.
              if (id.sequence <= cursor.sequence) continue
            }
            if (id) cursor = id
            delay = RECONNECT_MIN_MS
            yield e
            if (isTerminalEvent(e)) return
          }
        } catch (err) {
          if (ac.signal.aborted) return
          // the connection broke mid-stream: reconnect below
        }
        if (ac.signal.aborted) return
        await pause(delay, ac.signal)
        delay = Math.min(delay * 2, RECONNECT_MAX_MS)
      }
    } finally {
      if (outerSignal) outerSignal.removeEventListener('abort', abort)
      ac.abort()
    }
  }

  /**
   * Events of every run matching `filter` (`jobName`, `labels`), slim (no
   * inputs or outputs), as an async iterable that reconnects when dropped.
   * Events during a reconnect are not replayed: refetch lists on `reconnect`
   * items (`{ type: 'reconnect' }`).
   */
  function subscribeRuns(filter = {}, { signal } = {}) {
    return {
      [Symbol.asyncIterator]() {
        return runsEvents(filter, signal)
      },
    }
  }

  async function* runsEvents(filter, outerSignal) {
    const ac = new AbortController()
    const abort = () => ac.abort()
    if (outerSignal) {
      if (outerSignal.aborted) return
      outerSignal.addEventListener('abort', abort, { once: true })
    }
    let delay = RECONNECT_MIN_MS
    let connected = false
    try {
      for (;;) {
        try {
          const res = await doFetch(`${base}/runs/subscribe${query({ jobName: filter.jobName, labels: filter.labels })}`, {
            headers: await headersFor({ accept: 'text/event-stream' }),
            signal: ac.signal,
            cache: 'no-store',
          })
          if (!res.ok || !res.body) {
            if (res.status < 500 && res.status !== 429 && res.status !== 408) throw await httpError(res, 'GET /runs/subscribe')
            await res.body?.cancel().catch(() => {})
          } else {
            if (connected) yield { type: 'reconnect' }
            connected = true
            delay = RECONNECT_MIN_MS
            for await (const msg of sseMessages(res.body, ac.signal)) {
              let e
              try {
                e = normalizeEvent(JSON.parse(msg.data))
              } catch {
                continue
              }
              if (e && typeof e.type === 'string') yield e
            }
          }
        } catch (err) {
          if (ac.signal.aborted) return
          if (err instanceof DurablyClientError) throw err
        }
        if (ac.signal.aborted) return
        await pause(delay, ac.signal)
        delay = Math.min(delay * 2, RECONNECT_MAX_MS)
      }
    } finally {
      if (outerSignal) outerSignal.removeEventListener('abort', abort)
      ac.abort()
    }
  }

  async function trigger(jobName, input, opts = {}) {
    if (typeof jobName !== 'string' || jobName === '') throw new TypeError('trigger(jobName, input): jobName must be a non-empty string')
    const { signal, ...triggerOptions } = opts ?? {}
    return request('POST', '/trigger', { body: { jobName, input, ...triggerOptions }, signal })
  }

  /** Throws TypeError for wait options it cannot use (before anything is sent). */
  function checkWait(what, { timeout, onProgress, onLog }) {
    if (timeout !== undefined && (!Number.isInteger(timeout) || timeout < 0 || timeout > 2 ** 31 - 1)) {
      throw new TypeError(`${what}: timeout must be an integer number of ms from 0 to ${2 ** 31 - 1}`)
    }
    for (const [k, f] of [['onProgress', onProgress], ['onLog', onLog]]) {
      if (f !== undefined && typeof f !== 'function') throw new TypeError(`${what}: ${k} must be a function`)
    }
  }

  /** Waits for a run to end: its output once completed; rejects when it fails, is cancelled or deleted. */
  async function waitForRun(runId, { timeout, signal, onProgress, onLog } = {}) {
    checkWait('waitForRun', { timeout, onProgress, onLog })
    const ac = new AbortController()
    const abort = () => ac.abort()
    if (signal) signal.addEventListener('abort', abort, { once: true })
    let timedOut = false
    const timer = timeout === undefined ? null : setTimeout(() => ((timedOut = true), ac.abort()), timeout)
    try {
      for await (const e of subscribe(runId, { signal: ac.signal })) {
        if (e.type === 'run:progress' && onProgress) onProgress(e.progress)
        else if (e.type === 'log:write' && onLog) onLog(e)
        const run = e.type === 'run:snapshot' ? e.run : null
        if (e.type === 'run:complete' || (run && run.status === 'completed')) {
          return { runId, output: e.type === 'run:complete' ? e.output : run.output }
        }
        if (e.type === 'run:fail' || (run && run.status === 'failed')) {
          throw new DurablyClientError(e.error ?? run.error ?? 'run failed', { code: 'RUN_FAILED', runId })
        }
        if (e.type === 'run:cancel' || (run && run.status === 'cancelled')) {
          throw new DurablyClientError(`run ${runId} was cancelled`, { code: 'CANCELLED', runId })
        }
        if (e.type === 'run:delete' || (e.type === 'run:snapshot' && e.run === null)) {
          throw new DurablyClientError(`run ${runId} was deleted`, { code: 'NOT_FOUND', runId })
        }
      }
      if (timedOut) throw new DurablyClientError(`run ${runId} did not finish within ${timeout} ms`, { code: 'TIMEOUT', runId })
      if (signal && signal.aborted) throw signal.reason ?? new DurablyClientError('aborted', { code: 'ABORTED', runId })
      throw new DurablyClientError(`the event stream of run ${runId} ended early`, { code: 'HTTP_ERROR', runId })
    } finally {
      clearTimeout(timer)
      if (signal) signal.removeEventListener('abort', abort)
    }
  }

  async function triggerAndWait(jobName, input, opts = {}) {
    const { timeout, onProgress, onLog, signal, ...triggerOptions } = opts ?? {}
    checkWait('triggerAndWait', { timeout, onProgress, onLog })
    const { runId, disposition } = await trigger(jobName, input, { ...triggerOptions, signal })
    const { output } = await waitForRun(runId, { timeout, signal, onProgress, onLog })
    return { runId, output, disposition }
  }

  async function getRuns(filter = {}, { signal } = {}) {
    const runs = await request('GET', `/runs${query(filter ?? {})}`, { signal })
    return runs.map(normalizeRun)
  }

  const client = {
    baseUrl: base,
    trigger,
    triggerAndWait,
    waitForRun,
    async getRun(runId, { signal } = {}) {
      return normalizeRun(await request('GET', `/run?runId=${enc(runId)}`, { signal, allow404: true }))
    },
    getRuns,
    getSteps: (runId, { signal } = {}) => request('GET', `/steps?runId=${enc(runId)}`, { signal }),
    getLogs: (runId, { signal } = {}) => request('GET', `/logs?runId=${enc(runId)}`, { signal }),
    async retry(runId) {
      const r = await request('POST', `/retry?runId=${enc(runId)}`)
      return { runId: r.runId ?? runId }
    },
    async retrigger(runId) {
      const r = await request('POST', `/retrigger?runId=${enc(runId)}`)
      return { runId: r.runId }
    },
    async cancel(runId) {
      await request('POST', `/cancel?runId=${enc(runId)}`)
    },
    async deleteRun(runId) {
      await request('DELETE', `/run?runId=${enc(runId)}`)
    },
    subscribe,
    subscribeRuns,
    /** A handle bound to one job name (what `durably/react`'s `useJob` takes). */
    job(jobName) {
      if (typeof jobName !== 'string' || jobName === '') throw new TypeError('job(jobName): jobName must be a non-empty string')
      return {
        name: jobName,
        client,
        trigger: (input, o) => trigger(jobName, input, o),
        triggerAndWait: (input, o) => triggerAndWait(jobName, input, o),
        getRuns: (filter, o) => getRuns({ ...filter, jobName }, o),
      }
    },
  }
  return client
}
