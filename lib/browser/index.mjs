// `durably/browser`: the same API as in Node, with the engine (the Rust
// store compiled to WebAssembly, SQLite on OPFS) in a dedicated Worker this
// module starts (lib/browser/worker.mjs). Job functions and their steps run
// here, in the page, through the same Execution as in Node (lib/execution.js):
// the worker claims runs and hands them over, each step's result goes back as
// a tagged flush op, committed before the next step starts.
// `npm run build:browser` bundles this file into browser/index.mjs.

import { Events, EVENT_TYPES, TERMINAL_EVENTS } from '../events.js'
import { resolveOptions, positiveInt } from '../options.js'
import { encodeBatch, releaseOp } from '../protocol.js'
import { Execution } from '../execution.js'
import { encode, reviveParsed, TAG_TEXT, oversize } from '../values.js'
import { validate } from '../schema.js'
import { defineJob, isJobDefinition, JobHandle } from '../job.js'
import { parseRun, parseRuns, parseSteps, parseLogs, newRun } from '../records.js'
import { TERMINAL } from '../status.js'
import { checkId, checkLabels, checkWaitOptions, checkTriggerOptions, checkFilter, tallyStats } from '../checks.js'
import {
  DurablyError,
  ValidationError,
  NotFoundError,
  ConflictError,
  CancelledError,
  LeaseLostError,
  RunFailedError,
  TimeoutError,
  fromCode,
  fromNative,
} from '../errors.js'

export {
  defineJob,
  DurablyError,
  ValidationError,
  NotFoundError,
  ConflictError,
  CancelledError,
  LeaseLostError,
  RunFailedError,
  TimeoutError,
}

const BROWSER_DEFAULTS = { directory: 'durably', lockTimeout: 3000 }

/** The worker's RPC: calls are answered in order. */
class Rpc {
  constructor(worker, onEvent) {
    this.worker = worker
    this.next = 1
    this.pending = new Map()
    worker.onmessage = (e) => {
      const m = e.data
      // Events carry `t` (a `lost` event also has an `id`: the run's); replies do not.
      if (m.t !== undefined) return onEvent(m)
      const p = this.pending.get(m.id)
      if (!p) return
      this.pending.delete(m.id)
      if (m.error) p.reject(fromCode(m.error.code, m.error.message))
      else p.resolve(m.ok)
    }
    worker.onerror = (e) => {
      const err = new DurablyError(`the durably worker failed: ${e.message ?? 'could not start'}`, 'WORKER_FAILED')
      for (const p of this.pending.values()) p.reject(err)
      this.pending.clear()
      this.failed = err
    }
  }

  call(op, ...args) {
    if (this.failed) return Promise.reject(this.failed)
    return new Promise((resolve, reject) => {
      const id = this.next++
      this.pending.set(id, { resolve, reject })
      this.worker.postMessage({ id, op, args })
    })
  }
}

/** Batches the executions' flush ops per microtask into one worker call (one commit). */
class Writer {
  constructor(rpc) {
    this.rpc = rpc
    this.ops = []
    this.waiters = []
    this.scheduled = false
    this.inFlight = Promise.resolve()
  }

  push(op) {
    return new Promise((resolve, reject) => {
      this.ops.push(op)
      this.waiters.push({ resolve, reject })
      if (!this.scheduled) {
        this.scheduled = true
        queueMicrotask(() => this.flush())
      }
    })
  }

  flush() {
    this.scheduled = false
    const ops = this.ops
    const waiters = this.waiters
    this.ops = []
    this.waiters = []
    this.inFlight = this.rpc.call('flush', encodeBatch(ops)).then(
      ({ statuses, errors }) => {
        const failed = new Map((errors ?? []).map(({ index, code, message }) => [index, fromCode(code, message)]))
        waiters.forEach((w, i) => (failed.has(i) ? w.reject(failed.get(i)) : w.resolve(statuses[i])))
      },
      (err) => waiters.forEach((w) => w.reject(err)),
    )
  }

  async drain() {
    while (this.scheduled || this.ops.length) await new Promise((r) => setTimeout(r, 0))
    await this.inFlight
  }
}

class BrowserDurably {
  constructor(options) {
    if (globalThis.isSecureContext === false) {
      throw new DurablyError(
        'durably/browser needs a secure context (https:// or http://localhost): OPFS and Web Locks are not available here',
        'INSECURE_CONTEXT',
      )
    }
    const { directory, lockTimeout, worker, ...rest } = { ...BROWSER_DEFAULTS, ...(options ?? {}) }
    const UNSUPPORTED = {
      busyTimeout: 'one tab owns the database: nothing waits for a lock',
      retainRuns: 'call purgeRuns() instead',
      url: 'it stores in SQLite on OPFS, not in PostgreSQL',
      schema: 'it stores in SQLite on OPFS, not in PostgreSQL',
    }
    for (const [k, why] of Object.entries(UNSUPPORTED)) {
      if (rest[k] !== undefined) throw new ValidationError(`option ${k} is not supported by durably/browser (${why})`)
    }
    if (typeof directory !== 'string' || directory.length === 0) {
      throw new ValidationError('directory must be a non-empty string (an OPFS directory name)')
    }
    positiveInt('lockTimeout', lockTimeout, { min: 0 })
    // No environment in a tab (DURABLY_DATABASE_URL is a Node setting).
    const o = resolveOptions(rest, {})
    this._options = { ...o, directory, lockTimeout }
    this._events = new Events()
    this._jobs = new Map()
    this.jobs = {}
    this._active = new Map()
    this._cancelEmitted = new Set()
    this._persistLogs = false
    this._closed = false
    this._started = false
    this._worker =
      worker ?? new Worker(new URL('./worker.mjs', import.meta.url), { type: 'module', name: `durably:${o.path}` })
    this._rpc = new Rpc(this._worker, (m) => this._onWorkerMessage(m))
    this._writer = new Writer(this._rpc)
    this._opened = this._rpc.call('open', {
      path: o.path,
      directory,
      synchronous: o.synchronous,
      pollingInterval: o.pollingInterval,
      heartbeatInterval: o.heartbeatInterval,
      staleThreshold: o.staleThreshold,
      maxConcurrentRuns: o.maxConcurrentRuns,
      lockTimeout,
      wasmUrl: new URL('./durably_wasm_bg.wasm', import.meta.url).href,
    })
    this._opened.catch(() => {}) // reported by the first call that needs the database
    this._migrated = null
    if (o.jobs) this.register(o.jobs)
  }

  // ---- lifecycle -------------------------------------------------------------

  _ensureOpen() {
    if (this._closed) throw new DurablyError('durably instance is closed', 'CLOSED')
  }

  async _call(op, ...args) {
    this._ensureOpen()
    await this._opened
    return this._rpc.call(op, ...args)
  }

  async _ready() {
    this._ensureOpen()
    await this._opened
    this._migrated ??= this._rpc.call('migrate')
    await this._migrated
  }

  /** Creates or upgrades the schema. */
  async migrate() {
    await this._ready()
  }

  /** Starts claiming: first every run a reloaded or closed tab left running resumes. */
  async start() {
    await this._ready()
    if (this._started) return
    this._started = true
    await this._rpc.call('start')
  }

  async init() {
    await this.migrate()
    await this.start()
  }

  /** Stops claiming; resolves once the runs in flight here finished their job function. */
  async stop() {
    if (this._closed || !this._started) return
    this._started = false
    await this._rpc.call('stop')
    while (this._active.size) await Promise.allSettled([...this._active.values()].map((a) => a.promise))
    await this._writer.drain()
  }

  /** stop(), then closes the database and ends the worker (releasing the tab's lock). */
  close() {
    this._closing ??= (async () => {
      try {
        await this._opened
        await this.stop()
        await this._rpc.call('close')
      } catch {
        // never opened: nothing to close
      }
      this._closed = true
      this._worker.terminate()
    })()
    return this._closing
  }

  // ---- jobs ------------------------------------------------------------------

  register(defs) {
    this._ensureOpen()
    if (defs === null || typeof defs !== 'object') throw new ValidationError('register() takes an object of job definitions')
    const out = {}
    for (const [key, def] of Object.entries(defs)) {
      if (!isJobDefinition(def)) throw new ValidationError(`jobs.${key} is not a job definition (use defineJob)`)
      const existing = this._jobs.get(def.name)
      if (existing && existing.def !== def) throw new ValidationError(`a different job named '${def.name}' is already registered`)
      const handle = existing ? existing.handle : new JobHandle(this, def)
      this._jobs.set(def.name, { name: def.name, def, handle })
      this.jobs[key] = handle
      out[key] = handle
    }
    this._call('setJobs', [...this._jobs.values()].map((j) => [j.name, j.def.timeout ?? null])).catch(() => {})
    return out
  }

  defineJob(config, fn) {
    const def = defineJob(fn === undefined ? config : { ...config, run: fn })
    return this.register({ [def.name]: def })[def.name]
  }

  getJob(name) {
    return this._jobs.get(name)?.handle
  }

  // ---- triggering --------------------------------------------------------------

  async _trigger(def, input, options, onRun) {
    await this._ready()
    const o = checkTriggerOptions(options)
    if (this._options.labels) {
      let labels = validate(this._options.labels, o.labelsValue, 'invalid labels')
      if (labels && typeof labels.then === 'function') labels = await labels
      o.labels = checkLabels(labels)
      o.labelsValue = JSON.parse(o.labels)
    }
    let value = validate(def.input, input, `invalid input for job '${def.name}'`)
    if (value !== null && typeof value === 'object' && typeof value.then === 'function') value = await value
    const text = encode(value, 'input')
    const bytes = oversize(text, this._options.maxValueBytes)
    if (bytes) {
      throw new ValidationError(`input for job '${def.name}' is ${bytes} bytes encoded, over maxValueBytes (${this._options.maxValueBytes})`)
    }
    const outcome = await this._rpc.call('trigger', def.name, text, o.idem, o.conc, o.coalesce, o.labels)
    let run
    if (outcome.kind === 'created') {
      run = newRun({
        id: outcome.id,
        jobName: def.name,
        input: value,
        labels: o.labelsValue,
        idempotencyKey: o.idem,
        concurrencyKey: o.conc,
        createdAt: outcome.createdAt,
      })
      run.disposition = 'created'
      this._emit('run:trigger', run, { input: value })
    } else {
      run = parseRun(outcome.run)
      run.disposition = outcome.kind
      if (outcome.kind === 'coalesced') this._emit('run:coalesced', run, { skippedInput: value, skippedLabels: o.labelsValue })
    }
    if (onRun) onRun(run)
    if (outcome.kind === 'created') this._wake()
    return run
  }

  async _batchTrigger(def, items) {
    if (!Array.isArray(items)) throw new ValidationError('batchTrigger takes an array of { input, options }')
    const runs = []
    for (const it of items) runs.push(await this._trigger(def, it?.input, it?.options))
    return runs
  }

  async _triggerAndWait(def, input, options) {
    checkWaitOptions(options, 'triggerAndWait', false)
    const { timeout, onProgress, onLog, ...rest } = options ?? {}
    let waiting
    const run = await this._trigger(def, input, rest, (r) => {
      waiting = this.waitForRun(r.id, { timeout, onProgress, onLog })
      waiting.catch(() => {})
    })
    const done = await waiting
    return { id: run.id, output: done.output, disposition: run.disposition }
  }

  _wake() {
    if (this._started) this._rpc.call('wake').catch((err) => this._workerError(err, null, 'wake'))
  }

  // ---- queries -----------------------------------------------------------------

  async getRun(id) {
    checkId(id)
    await this._ready()
    return parseRun(await this._rpc.call('getRun', id))
  }

  async getRuns(filter) {
    const f = checkFilter(filter)
    await this._ready()
    return parseRuns(await this._rpc.call('getRuns', JSON.stringify(f)))
  }

  async getSteps(runId) {
    checkId(runId)
    await this._ready()
    return parseSteps(await this._rpc.call('getSteps', runId))
  }

  async getLogs(runId) {
    checkId(runId)
    await this._ready()
    return parseLogs(await this._rpc.call('getLogs', runId))
  }

  async getStats() {
    await this._ready()
    return tallyStats(JSON.parse(await this._rpc.call('runCounts')))
  }

  // ---- management --------------------------------------------------------------

  async retry(runId) {
    checkId(runId)
    await this._ready()
    const run = parseRun(await this._rpc.call('retry', runId))
    this._emit('run:retry', run)
    this._wake()
    return run
  }

  async retrigger(runId) {
    const run = await this.getRun(runId)
    if (!run) throw new NotFoundError(`run ${runId} not found`)
    if (!TERMINAL.has(run.status)) {
      throw new ConflictError(`run ${runId} is ${run.status}; only completed, failed or cancelled runs can be retriggered`)
    }
    const job = this._jobs.get(run.jobName)
    if (!job) throw new ValidationError(`job '${run.jobName}' is not registered in this instance`)
    const options = {}
    if (Object.keys(run.labels).length) options.labels = run.labels
    if (run.concurrencyKey !== null) options.concurrencyKey = run.concurrencyKey
    return this._trigger(job.def, run.input, options)
  }

  async cancel(runId) {
    checkId(runId)
    await this._ready()
    const run = parseRun((await this._rpc.call('cancel', runId)).run)
    const active = this._active.get(runId)
    if (active) {
      this._cancelEmitted.add(runId)
      active.exec.abort(new CancelledError(`run ${runId} was cancelled`))
    }
    this._emit('run:cancel', run)
    return run
  }

  async deleteRun(runId) {
    checkId(runId)
    await this._ready()
    const run = parseRun(await this._rpc.call('deleteRun', runId))
    this._emit('run:delete', run)
  }

  async purgeRuns(options) {
    const { olderThan, limit = 1000 } = options ?? {}
    if (!(olderThan instanceof Date) || Number.isNaN(olderThan.getTime())) {
      throw new ValidationError('purgeRuns: olderThan must be a valid Date')
    }
    if (!Number.isInteger(limit) || limit < 1) throw new ValidationError('purgeRuns: limit must be a positive integer')
    await this._ready()
    return this._rpc.call('purge', olderThan.toISOString(), limit)
  }

  // ---- waiting -----------------------------------------------------------------

  /** Resolves with the completed run; rejects on failure, cancellation, timeout. */
  waitForRun(runId, options = {}) {
    try {
      checkId(runId)
      checkWaitOptions(options)
    } catch (err) {
      return Promise.reject(err)
    }
    const { timeout, onProgress, onLog } = options ?? {}
    return new Promise((resolve, reject) => {
      let done = false
      let timer = null
      let poll = null
      const finish = (fn, v) => {
        if (done) return
        done = true
        unsub()
        clearTimeout(timer)
        clearInterval(poll)
        fn(v)
      }
      const check = () =>
        this.getRun(runId).then((run) => {
          if (!run) return finish(reject, new NotFoundError(`run ${runId} not found`))
          if (run.status === 'completed') return finish(resolve, run)
          if (run.status === 'failed') return finish(reject, new RunFailedError(run.error ?? 'run failed', runId))
          if (run.status === 'cancelled') return finish(reject, new CancelledError(`run ${runId} was cancelled`))
        }, (err) => finish(reject, fromNative(err)))
      const unsub = this._events.onAny((e) => {
        if (e.runId !== runId) return
        if (e.type === 'run:progress' && onProgress) onProgress(e.progress)
        else if (e.type === 'log:write' && onLog) onLog(e)
        else if (TERMINAL_EVENTS.has(e.type)) check()
      })
      if (timeout !== undefined) {
        timer = setTimeout(() => finish(reject, new TimeoutError(`waitForRun: run ${runId} did not finish within ${timeout} ms`)), timeout)
      }
      poll = setInterval(check, 1000)
      check()
    })
  }

  /** A stream of one run's events: its current state first, closing after its terminal event. */
  subscribe(runId) {
    checkId(runId)
    let unsub = () => {}
    return new ReadableStream({
      start: async (controller) => {
        // Listen before reading the snapshot, so no event in between is lost.
        let buffered = []
        let closed = false
        const push = (e) => {
          if (closed) return
          controller.enqueue(e)
          if (TERMINAL_EVENTS.has(e.type)) {
            closed = true
            unsub()
            controller.close()
          }
        }
        unsub = this._events.onAny((e) => {
          if (e.runId !== runId) return
          if (buffered) buffered.push(e)
          else push(e)
        })
        let run
        try {
          run = await this.getRun(runId)
        } catch (err) {
          unsub()
          return controller.error(err)
        }
        if (!run) {
          unsub()
          return controller.error(new NotFoundError(`run ${runId} not found`))
        }
        controller.enqueue({
          type: 'run:snapshot',
          runId,
          jobName: run.jobName,
          labels: run.labels,
          timestamp: new Date().toISOString(),
          sequence: this._events.sequence,
          run,
        })
        if (TERMINAL.has(run.status)) {
          closed = true
          unsub()
          return controller.close()
        }
        const early = buffered
        buffered = null
        for (const e of early) push(e)
      },
      cancel: () => unsub(),
    })
  }

  // ---- execution ---------------------------------------------------------------

  _onWorkerMessage(m) {
    if (this._closed) return
    if (m.t === 'runs') {
      const tags = m.text.includes(TAG_TEXT)
      for (const r of JSON.parse(m.text)) this._execute(r, tags)
    } else if (m.t === 'lost') {
      const a = this._active.get(m.id)
      if (!a) return
      if (m.reason === 'cancelled') a.exec.abort(new CancelledError(`run ${m.id} was cancelled`))
      // The worker failed the run for its job timeout (as in Node, lib/runner.js): the signal fires, run:fail is emitted.
      else if (m.reason === 'timeout') a.exec.abort(new TimeoutError(`run ${m.id} timed out after ${a.exec.job.def.timeout} ms`))
      else a.exec.abort(new LeaseLostError())
    } else if (m.t === 'error') {
      this._workerError(fromCode(m.code, m.message), null, m.context)
    }
  }

  _executionHost() {
    return (this._host ??= {
      events: this._events,
      write: (op) => this._writer.push(op),
      maxValueBytes: () => this._options.maxValueBytes,
      persistLogs: () => this._persistLogs,
      progressWritten: () => {},
      workerError: (err, exec, context) => this._workerError(err, exec, context),
      takeCancelEmitted: (runId) => this._cancelEmitted.delete(runId),
    })
  }

  _execute(claimed, tags) {
    const id = claimed.id
    const gen = claimed.leaseGeneration
    const job = this._jobs.get(claimed.jobName)
    if (!job || !this._started) {
      // Not ours to run (any more): hand it back to pending.
      this._writer
        .push(releaseOp(id, gen))
        .catch((err) => this._workerError(err, null, 'hand-back'))
        .finally(() => this._rpc.call('release', id, gen).catch(() => {}))
      return
    }
    const exec = new Execution(this._executionHost(), job, claimed, tags)
    const input = reviveParsed(claimed.input, tags)
    const promise = exec
      .run(input, gen)
      .catch((err) => this._workerError(err, exec, 'execute'))
      .finally(() => {
        if (this._active.get(id)?.exec === exec) this._active.delete(id)
        if (!this._closed) this._rpc.call('release', id, gen).catch(() => {})
      })
    this._active.set(id, { exec, promise })
  }

  // ---- events --------------------------------------------------------------------

  on(type, listener) {
    if (!EVENT_TYPES.includes(type)) {
      throw new ValidationError(`unknown event type ${JSON.stringify(type)} (known: ${EVENT_TYPES.join(', ')})`)
    }
    if (typeof listener !== 'function') throw new ValidationError('on(): listener must be a function')
    return this._events.on(type, listener)
  }

  onError(listener) {
    return this.on('worker:error', listener)
  }

  use(plugin) {
    if (plugin === null || typeof plugin !== 'object' || typeof plugin.install !== 'function') {
      throw new ValidationError('use(): a plugin is { name, install(durably) }')
    }
    plugin.install(this)
    return this
  }

  _emit(type, run, extra) {
    if (!this._events.has(type)) return
    const e = { type, runId: run.id, jobName: run.jobName, labels: run.labels, timestamp: new Date().toISOString() }
    this._events.emit(extra ? Object.assign(e, extra) : e)
  }

  _workerError(err, exec, context) {
    this._events.emit({
      type: 'worker:error',
      runId: exec ? exec.id : null,
      jobName: exec ? exec.jobName : null,
      labels: exec ? exec.labels : {},
      timestamp: new Date().toISOString(),
      error: err,
      context,
    })
  }
}

/** Plugin: persist every `log:write` to the `logs` table. */
export function withLogPersistence() {
  return {
    name: 'log-persistence',
    install(durably) {
      durably._persistLogs = true
    },
  }
}

/** Opens (creating) `options.path` on OPFS in a dedicated Worker; see the README's "In the browser". */
export function createDurably(options) {
  return new BrowserDurably(options)
}

export { BrowserDurably as Durably }
