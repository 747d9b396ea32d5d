'use strict'
// The Durably instance: the public API over the native engine. Argument
// checks live in lib/checks.js, waiting and streaming in lib/watch.js,
// executing claimed runs (claims, hand-back, stop) in lib/runner.js.

const binding = require('../binding.js')
const { resolveOptions } = require('./options')
const { ensureSupported } = require('./backend')
const { Events, EVENT_TYPES } = require('./events')
const { Writer } = require('./writer')
const { q, triggerItem, encodeTriggerBatch, createdResult } = require('./protocol')
const { Execution } = require('./execution')
const { Runner } = require('./runner')
const { encode, decode, oversize } = require('./values')
const { validate } = require('./schema')
const { defineJob, isJobDefinition, JobHandle } = require('./job')
const { parseRun, parseRuns, parseSteps, parseLogs, newRun } = require('./records')
const { TERMINAL } = require('./status')
const {
  checkId,
  checkLabels,
  checkStopOptions,
  checkWaitOptions,
  checkTriggerOptions,
  checkFilter,
  tallyStats,
} = require('./checks')
const { waitForRun, subscribe } = require('./watch')

/** How long a registration for other processes' run events outlives its last listener (PostgreSQL). */
const UNREGISTER_GRACE_MS = 5000
const {
  DurablyError,
  ValidationError,
  NotFoundError,
  ConflictError,
  native,
  nativeAsync,
  fromNative,
} = require('./errors')

/**
 * The event as JSON text for other processes. A log line's data is any value
 * (stored only with withLogPersistence, which reports an unstorable one as a
 * 'log-write' worker error): when it cannot be encoded, the others get the
 * line with `data: null` rather than a second, 'watch' error here that
 * SQLite (no publishing) would not give.
 */
function encodeForPublish(e) {
  try {
    return encode(e, 'event')
  } catch (err) {
    if (e.type !== 'log:write' || !(err instanceof ValidationError)) throw err
    return encode({ ...e, data: null }, 'event')
  }
}

class Durably {
  constructor(options) {
    const o = resolveOptions(options)
    // Until the addon can open a PostgreSQL engine, a url is refused here
    // (POSTGRES_UNSUPPORTED) rather than reaching the SQLite engine.
    ensureSupported(o.backend, binding)
    this._options = o
    // Runs claimed ahead (lib/runner.js, WorkerConfig::claim_ahead): SQLite
    // only; on PostgreSQL a claim ahead would hold a run from other machines.
    this._claimAhead = o.backend.kind !== 'postgres'
    this._events = new Events()
    this._engine = native(
      () =>
        new binding.Engine(
          {
            path: o.path ?? '',
            url: o.backend.kind === 'postgres' ? o.backend.url : undefined,
            schema: o.backend.kind === 'postgres' ? o.backend.schema : undefined,
            synchronous: o.synchronous,
            busyTimeout: o.busyTimeout,
            pollingInterval: o.pollingInterval,
            heartbeatInterval: o.heartbeatInterval,
            staleThreshold: o.staleThreshold,
            maxConcurrentRuns: o.maxConcurrentRuns,
            claimAhead: this._claimAhead ? o.maxConcurrentRuns : 0,
            // retainRuns: the engine's own timer applies it while started
            retainMs: o.retainMs ?? undefined,
          },
          (msg) => this._runner.onMessage(msg),
          (done) => this._writer.flushed(done),
        ),
    )
    // PostgreSQL: run events go to the other processes on the database too
    // (their waitForRun/subscribe), and theirs arrive here (lib/runner.js).
    this._publish = native(() => this._engine.listens()) ? (e) => this._publishEvent(e) : null
    // Theirs reach JS only while something listens to every event here, and
    // they are published at all only while some process is registered for
    // them (src/pg/events.rs): each of P processes would otherwise publish
    // and decode the run events of all P.
    this._interestReady = null // resolves once registered (reads wait for it)
    this._unregisterTimer = null
    if (this._publish !== null) {
      native(() => this._engine.setRemoteEvents(false))
      this._events.onInterest = (on) => this._remoteInterest(on)
    }
    // SQLite answers reads on this thread at once; on PostgreSQL each is a
    // network round trip, made off the JS thread so the event loop runs on.
    this._syncReads = native(() => this._engine.syncReads())
    this._writer = new Writer(this._engine, {
      alwaysAsync: o.synchronous === 'full',
      sendOnly: !this._syncReads,
      onEventsError: (err) => this._workerError(err, null, 'watch'),
      onClaimed: (text) => this._runner.onClaimed(text),
    })
    this._jobs = new Map()
    this.jobs = {}
    this._runner = new Runner(this._runnerHost())
    this._persistLogs = false
    this._progressWrites = 0
    this._migrated = false
    this._closed = false
    this._timers = []
    if (o.jobs) this.register(o.jobs)
  }

  // ---- lifecycle -----------------------------------------------------------

  _ensureOpen() {
    if (this._closed) throw new DurablyError('durably instance is closed', 'CLOSED')
  }

  /**
   * Migrates on first use. SQLite: on this thread, returns undefined.
   * PostgreSQL: off the JS thread (a network round trip, maybe a wait for
   * another process's migration), returns a promise: callers await it.
   */
  _ensureReady() {
    this._ensureOpen()
    if (this._migrated) return undefined
    if (!this._syncReads) {
      this._migrating ??= nativeAsync(this._engine.migrateAsync()).then(
        () => {
          this._migrated = true
          this._migrating = null
        },
        (err) => {
          this._migrating = null
          throw err
        },
      )
      return this._migrating
    }
    this._ensureReadyNow()
    return undefined
  }

  /** Migrates on first use, on this thread (for calls that must answer at once). */
  _ensureReadyNow() {
    this._ensureOpen()
    if (!this._migrated) {
      native(() => this._engine.migrate())
      this._migrated = true
    }
  }

  /** Creates or upgrades the schema. Idempotent; safe from several processes. */
  async migrate() {
    this._ensureOpen()
    if (this._syncReads) native(() => this._engine.migrate())
    else await nativeAsync(this._engine.migrateAsync())
    this._migrated = true
  }

  /**
   * For tools that must not change a file (the CLI): uses the schema as it
   * is instead of migrating, and refuses a file whose schema version is not
   * this library's. Throws `SCHEMA_MISMATCH` (with `found`/`expected`).
   */
  async _useExistingSchema() {
    this._ensureOpen()
    const found = await nativeAsync(this._engine.schemaVersionAsync())
    const expected = this._engine.librarySchemaVersion()
    if (found !== expected) {
      const why =
        found === 0
          ? 'it has no durably schema (not a durably database, or never migrated)'
          : found > expected
            ? `its schema version ${found} is newer than this durably's (${expected}): use a newer durably`
            : `its schema version ${found} is older than this durably's (${expected}): open it once with the app (durably.migrate()) to upgrade it`
      const err = new DurablyError(`the database ${why}`, 'SCHEMA_MISMATCH')
      err.found = found
      err.expected = expected
      throw err
    }
    this._migrated = true
  }

  /** Starts the worker loop. */
  async start() {
    const ready = this._ensureReady()
    if (ready) await ready
    if (this._runner.started) return
    this._runner.start()
    // The native worker never keeps Node alive by itself; this timer does while started.
    // (retainRuns runs on the engine's own timer while started: src/engine.)
    this._timers.push(setInterval(() => {}, 2 ** 30))
  }

  /** migrate() then start(). */
  async init() {
    await this.migrate()
    await this.start()
  }

  /**
   * Stops claiming; resolves once in-flight runs finished their job function.
   * `{ abort: true }`: resolves at once, whatever the steps do: each run in
   * flight is handed back to pending (lease released, so any worker resumes
   * it now), its signal fires, and its execution is abandoned (a step that
   * ignores the signal and settles later is not stored and the job function
   * does not go on). `{ timeout: ms }`: waits up to `ms`, then aborts.
   */
  async stop(options) {
    const { abort, timeout } = checkStopOptions('stop', options)
    if (this._closed) return
    for (const t of this._timers) clearInterval(t)
    this._timers = []
    await this._runner.stop({ abort, timeout })
  }

  /**
   * stop(options), then close the database. Idempotent: every call, also
   * concurrent ones, resolves once every file handle is released (a later
   * call with `abort`/`timeout` still shortens a graceful close under way).
   */
  close(options) {
    let opts
    try {
      opts = checkStopOptions('close', options)
    } catch (err) {
      return Promise.reject(err)
    }
    if (this._closing) {
      if (opts.abort || opts.timeout !== undefined) this.stop(opts).catch(() => {})
      return this._closing
    }
    this._closing = (async () => {
      await this.stop(opts)
      this._closed = true
      this._writer.sendEvents()
      await nativeAsync(this._engine.close())
    })()
    return this._closing
  }

  // ---- jobs ----------------------------------------------------------------

  /** Registers job definitions; returns their handles by key. */
  register(defs) {
    this._ensureOpen()
    if (defs === null || typeof defs !== 'object') throw new ValidationError('register() takes an object of job definitions')
    const out = {}
    const proto = Object.getPrototypeOf(defs)
    if (proto !== Object.prototype && proto !== null && isJobDefinition(proto)) {
      throw new ValidationError(
        'the jobs object has a job definition as its prototype (`__proto__: job` in an object literal): use another key',
      )
    }
    const entries = Object.entries(defs)
    for (const [key] of entries) {
      if (key === '__proto__') {
        throw new ValidationError("job key '__proto__' is not allowed (it would replace the prototype of durably.jobs): use another key")
      }
    }
    for (const [key, def] of entries) {
      if (!isJobDefinition(def)) throw new ValidationError(`jobs.${key} is not a job definition (use defineJob)`)
      const existing = this._jobs.get(def.name)
      if (existing && existing.def !== def) {
        throw new ValidationError(`a different job named '${def.name}' is already registered`)
      }
      const handle = existing ? existing.handle : new JobHandle(this, def)
      this._jobs.set(def.name, { name: def.name, def, handle })
      this.jobs[key] = handle
      out[key] = handle
    }
    const names = [...this._jobs.keys()]
    native(() => this._engine.setJobs(names, names.map((n) => this._jobs.get(n).def.timeout ?? 0)))
    return out
  }

  /** Seed form: defines and registers at once; returns the handle. */
  defineJob(config, fn) {
    const def = defineJob(fn === undefined ? config : { ...config, run: fn })
    return this.register({ [def.name]: def })[def.name]
  }

  getJob(name) {
    const j = this._jobs.get(name)
    return j ? j.handle : undefined
  }

  // ---- triggering ------------------------------------------------------------

  /** Trigger options checked, with labels validated by the `labels` schema if any. */
  async _triggerOptions(options) {
    const o = checkTriggerOptions(options)
    const schema = this._options.labels
    if (schema) {
      let labels = validate(schema, o.labelsValue, 'invalid labels')
      if (labels !== null && typeof labels === 'object' && typeof labels.then === 'function') labels = await labels
      o.labels = checkLabels(labels)
      o.labelsValue = JSON.parse(o.labels)
    }
    return o
  }

  /**
   * `onRun(run)` is called as soon as the run exists, before the worker can
   * start it (triggerAndWait subscribes there, so it misses nothing).
   */
  async _trigger(def, input, options, onRun) {
    const ready = this._ensureReady()
    if (ready) await ready
    const o = this._options.labels ? await this._triggerOptions(options) : checkTriggerOptions(options)
    let value = validate(def.input, input, `invalid input for job '${def.name}'`)
    if (value !== null && typeof value === 'object' && typeof value.then === 'function') value = await value
    const text = encode(value, 'input')
    this._checkInputSize(def, text)
    // With synchronous: 'full' a commit waits for fsync: keep it off the event loop.
    let r = this._writer.alwaysAsync
      ? null
      : native(() => this._engine.trigger(def.name, text, o.idem, o.conc, o.coalesce, o.labels))
    if (typeof r === 'string') r = createdResult(r)
    let woken = true // the synchronous path woke the worker already
    let release = null
    if (r === null) {
      // Claimed runs wait until onRun listened (see Runner#hold).
      release = this._runner.hold()
      try {
        r = await nativeAsync(this._engine.triggerAsync(def.name, text, o.idem, o.conc, o.coalesce, o.labels))
      } catch (err) {
        release()
        throw err
      }
      woken = false
    }
    let run
    try {
      run = this._triggered(def, r, value, o)
      if (onRun) onRun(run)
    } finally {
      if (release) release()
    }
    if (r.kind === 'created' && !woken) this._runner.wake()
    // The engine claimed runs on this thread right after the trigger (the
    // worker is on): executed now, after run:trigger was emitted.
    if (r.claimed) this._runner.onClaimed(r.claimed)
    else if (r.started) this._runner.startTriggered(run.id, def.name, text, o.labels, r.createdAt)
    return run
  }

  /** An input over `maxValueBytes` is refused before anything is written. */
  _checkInputSize(def, text) {
    const max = this._options.maxValueBytes
    const bytes = oversize(text, max)
    if (bytes) {
      throw new ValidationError(
        `input for job '${def.name}' is ${bytes} bytes encoded, over maxValueBytes (${max})`,
      )
    }
  }

  /** The run a TriggerResult (see lib/protocol.js) stands for, with its events emitted. */
  _triggered(def, outcome, value, o) {
    if (outcome.kind === 'created') return this._created(def, outcome.id, outcome.createdAt, value, o)
    return this._found(def, outcome, value, o)
  }

  /** A run the trigger created, with run:trigger emitted. */
  _created(def, id, createdAt, value, o) {
    const run = newRun({
      id,
      jobName: def.name,
      input: value,
      labels: o.labelsValue,
      idempotencyKey: o.idem,
      concurrencyKey: o.conc,
      createdAt,
    })
    run.disposition = 'created'
    // (the event's extra object only when someone gets the event: a batch builds one run per item)
    if (this._publish !== null || this._events.has('run:trigger')) this._emit('run:trigger', run, { input: value })
    return run
  }

  /** The existing run an idempotent or coalesced trigger found (`{ kind, run }`). */
  _found(def, outcome, value, o) {
    const run = parseRun(outcome.run)
    if (outcome.kind === 'idempotent') {
      run.disposition = 'idempotent'
      return run
    }
    run.disposition = 'coalesced'
    this._emit('run:coalesced', run, { skippedInput: value, skippedLabels: o.labelsValue })
    return run
  }

  async _batchTrigger(def, items) {
    const ready = this._ensureReady()
    if (ready) await ready
    if (!Array.isArray(items)) throw new ValidationError('batchTrigger takes an array of { input, options }')
    const prepared = []
    for (let i = 0; i < items.length; i++) {
      const it = items[i]
      try {
        if (it === null || typeof it !== 'object') throw new ValidationError('must be an object { input, options }')
        // Awaited only with a labels schema: one await per item was ~0.3 µs of a
        // batch item's CPU.
        const o = this._options.labels ? await this._triggerOptions(it.options) : checkTriggerOptions(it.options)
        let value = validate(def.input, it.input, `invalid input for job '${def.name}'`)
        if (value !== null && typeof value === 'object' && typeof value.then === 'function') value = await value
        const text = encode(value, 'input')
        this._checkInputSize(def, text)
        prepared.push({ o, value, text })
      } catch (err) {
        throw new ValidationError(`batchTrigger item ${i}: ${err.message}`)
      }
    }
    if (prepared.length === 0) return []
    const name = q(def.name)
    const text = encodeTriggerBatch(prepared.map((p) => triggerItem(name, p.text, p.o.idem, p.o.conc, p.o.coalesce, p.o.labels)))
    let r = this._writer.alwaysAsync ? null : native(() => this._engine.triggerBatch(text))
    let woken = true
    if (r === null) {
      r = await nativeAsync(this._engine.triggerBatchAsync(text))
      woken = false
    }
    // A TriggerBatchResult: an id per item, comma-separated (empty: see `existing`).
    const found = r.existing ? new Map(r.existing.map((x) => [x.index, x])) : null
    const ids = r.ids.split(',')
    const runs = new Array(prepared.length)
    for (let i = 0; i < prepared.length; i++) {
      const { value, o } = prepared[i]
      const id = ids[i]
      runs[i] = id !== '' ? this._created(def, id, r.createdAt, value, o) : this._found(def, found.get(i), value, o)
    }
    if (!woken) this._runner.wake()
    return runs
  }

  async _triggerAndWait(def, input, options) {
    checkWaitOptions(options, 'triggerAndWait', false)
    const { timeout, onProgress, onLog, ...rest } = options ?? {}
    // PostgreSQL: another process may execute the run before a registration
    // made after the trigger, and the progress and log events it emits until
    // then are not published. With onProgress/onLog, register first.
    let unlisten = null
    if ((onProgress !== undefined || onLog !== undefined) && this._events.onInterest !== null) {
      const ready = this._ensureReady()
      if (ready) await ready
      unlisten = this._events.onAny(() => {})
      await this._interestReady
    }
    try {
      let waiting
      const run = await this._trigger(def, input, rest, (r) => {
        waiting = this.waitForRun(r.id, { timeout, onProgress, onLog })
        waiting.catch(() => {}) // awaited below; never reported as unhandled meanwhile
      })
      const done = await waiting
      return { id: run.id, output: done.output, disposition: run.disposition }
    } finally {
      if (unlisten !== null) unlisten()
    }
  }

  // ---- queries ---------------------------------------------------------------

  async getRun(id) {
    const ready = this._ensureReady()
    if (ready) await ready
    checkId(id)
    return parseRun(await this._read('getRun', id))
  }

  /**
   * Other processes' run events wanted here (PostgreSQL) or not. On:
   * registered (a read after `_interestReady` sees the effect of every event
   * not heard). Off: dropped at once, the registration ended after
   * UNREGISTER_GRACE_MS unless wanted again (a loop of triggerAndWait does
   * not register and unregister each time); an instance closed with one
   * leaves it to expire (a minute).
   */
  _remoteInterest(on) {
    if (this._closed) return
    native(() => this._engine.setRemoteEvents(on))
    if (this._unregisterTimer !== null) {
      clearTimeout(this._unregisterTimer)
      this._unregisterTimer = null
    }
    const failed = (err) => this._workerError(err, null, 'watch')
    if (on) {
      this._interestReady = nativeAsync(this._engine.registerListenerAsync()).catch(failed)
      return
    }
    this._unregisterTimer = setTimeout(() => {
      this._unregisterTimer = null
      if (!this._closed) nativeAsync(this._engine.unregisterListenerAsync()).catch(failed)
    }, UNREGISTER_GRACE_MS)
    this._unregisterTimer.unref()
  }

  /**
   * A run now: its value on SQLite (read on this thread), a promise of it on
   * PostgreSQL (read off the JS thread, after this process registered for
   * run events). lib/watch.js takes either.
   */
  _getRunNow(id) {
    if (this._syncReads) return parseRun(native(() => this._engine.getRun(id)))
    const read = () => nativeAsync(this._engine.getRunAsync(id)).then(parseRun)
    return this._interestReady !== null ? this._interestReady.then(read) : read()
  }

  /** Engine read `name`: on this thread (SQLite) or off it (a promise, PostgreSQL). */
  _read(name, ...args) {
    if (this._syncReads) return native(() => this._engine[name](...args))
    return nativeAsync(this._engine[`${name}Async`](...args))
  }

  async getRuns(filter) {
    const ready = this._ensureReady()
    if (ready) await ready
    const f = checkFilter(filter)
    return parseRuns(await this._read('getRuns', JSON.stringify(f)))
  }

  async getSteps(runId) {
    const ready = this._ensureReady()
    if (ready) await ready
    checkId(runId)
    return parseSteps(await this._read('getSteps', runId))
  }

  async getLogs(runId) {
    const ready = this._ensureReady()
    if (ready) await ready
    checkId(runId)
    return parseLogs(await this._read('getLogs', runId))
  }

  /** Run counts: `{ total, byStatus: { pending, … }, byJob: { [jobName]: { total, pending, … } } }`. */
  async getStats() {
    const ready = this._ensureReady()
    if (ready) await ready
    return tallyStats(JSON.parse(await this._read('runCounts')))
  }

  // ---- management ------------------------------------------------------------

  async retry(runId) {
    const ready = this._ensureReady()
    if (ready) await ready
    checkId(runId)
    // The retry's commit can wake this worker (NOTIFY on PostgreSQL, the change
    // check on SQLite) before its reply reaches JS: the run, claimed, must not
    // start before run:retry is emitted (as for an asynchronous trigger).
    const release = this._runner.hold()
    let run
    try {
      run = parseRun(await nativeAsync(this._engine.retry(runId)))
      this._emit('run:retry', run)
    } finally {
      release()
    }
    this._runner.wake()
    return run
  }

  async retrigger(runId) {
    const ready = this._ensureReady()
    if (ready) await ready
    checkId(runId)
    const run = await this._getRunNow(runId)
    if (!run) throw new NotFoundError(`run ${runId} not found`)
    if (!TERMINAL.has(run.status)) {
      throw new ConflictError(
        `run ${runId} is ${run.status}; only completed, failed or cancelled runs can be retriggered`,
      )
    }
    const job = this._jobs.get(run.jobName)
    if (!job) throw new ValidationError(`job '${run.jobName}' is not registered in this instance`)
    // Same input, labels and concurrency key (the key is about mutual
    // exclusion, which a re-run still needs); never the idempotency key.
    const options = {}
    if (Object.keys(run.labels).length) options.labels = run.labels
    if (run.concurrencyKey !== null) options.concurrencyKey = run.concurrencyKey
    return this._trigger(job.def, run.input, options)
  }

  async cancel(runId) {
    const ready = this._ensureReady()
    if (ready) await ready
    checkId(runId)
    const end = this._runner.startCancel(runId)
    let run
    try {
      run = parseRun((await nativeAsync(this._engine.cancel(runId))).run)
    } catch (err) {
      end(false)
      throw err
    }
    end(true)
    this._runner.cancelled(runId)
    this._emit('run:cancel', run)
    return run
  }

  async deleteRun(runId) {
    const ready = this._ensureReady()
    if (ready) await ready
    checkId(runId)
    const run = parseRun(await nativeAsync(this._engine.deleteRun(runId)))
    this._emit('run:delete', run)
  }

  async purgeRuns(options) {
    const ready = this._ensureReady()
    if (ready) await ready
    const { olderThan, limit = 1000 } = options ?? {}
    if (!(olderThan instanceof Date) || Number.isNaN(olderThan.getTime())) {
      throw new ValidationError('purgeRuns: olderThan must be a valid Date')
    }
    if (!Number.isInteger(limit) || limit < 1) throw new ValidationError('purgeRuns: limit must be a positive integer')
    return nativeAsync(this._engine.purge(olderThan.toISOString(), limit))
  }

  // ---- waiting ---------------------------------------------------------------

  /** Resolves with the completed run; rejects on failure, cancellation, timeout. */
  waitForRun(runId, options = {}) {
    const ready = this._ensureReady()
    checkId(runId)
    if (ready) return ready.then(() => waitForRun(this._watchSource(), runId, options))
    return waitForRun(this._watchSource(), runId, options)
  }

  /** A stream of one run's events: its current state first, closing after its terminal event. */
  subscribe(runId) {
    // The stream is returned at once. A first use migrates: on this thread
    // (SQLite), or off it (PostgreSQL: connecting too), the stream's first
    // read waiting for it and failing with its error.
    this._ensureOpen()
    checkId(runId)
    const ready = this._ensureReady()
    if (!ready) return subscribe(this._watchSource(), runId)
    const source = this._watchSource()
    let first = true
    return subscribe(
      {
        ...source,
        getRunNow: (id) => {
          if (!first) return source.getRunNow(id)
          first = false
          return ready.then(() => source.getRunNow(id))
        },
      },
      runId,
    )
  }

  /** What an Execution may use of this instance (see ExecutionHost in lib/execution.js). */
  _executionHost() {
    const writer = this._writer
    return (this._host ??= {
      events: this._events,
      write: (op) => writer.push(op),
      maxValueBytes: () => this._options.maxValueBytes,
      persistLogs: () => this._persistLogs,
      progressWritten: () => {
        this._progressWrites++
      },
      publish: this._publish,
      workerError: (err, exec, context) => this._workerError(err, exec, context),
      takeCancelEmitted: (runId) => this._runner.takeCancelEmitted(runId),
    })
  }

  /** What lib/runner.js may use of this instance (see RunnerHost there). */
  _runnerHost() {
    return {
      engine: this._engine,
      writer: this._writer,
      limit: this._options.maxConcurrentRuns,
      claimAhead: this._claimAhead,
      job: (name) => this._jobs.get(name),
      execution: (job, claimed, tags) => new Execution(this._executionHost(), job, claimed, tags),
      workerError: (err, exec, context) => this._workerError(err, exec, context),
      isClosed: () => this._closed,
      remoteEvent: (text) => this._events.emitRemote(decode(text)),
    }
  }

  /** What lib/watch.js may use of this instance. */
  _watchSource() {
    return (this._watch ??= {
      getRunNow: (id) => this._getRunNow(id),
      onAny: (listener) => this._events.onAny(listener),
      isClosed: () => this._closed,
      noWorkerNote: (id) => this._noWorkerNote(id),
      sequence: () => this._events.sequence,
      executesHere: (id) => this._runner.active.has(id),
    })
  }

  // ---- processing without the loop -------------------------------------------

  /**
   * Claims and executes one run; resolves false when none was pending.
   * First recovers stale runs (a crashed worker's) and applies `retainRuns`.
   */
  async processOne() {
    const ready = this._ensureReady()
    if (ready) await ready
    await this._beforeProcessing()
    return this._runner.processNext()
  }

  /**
   * Processes runs until none is pending (or `maxRuns` ran); resolves with how
   * many ran. First recovers stale runs and applies `retainRuns`, once.
   */
  async processUntilIdle(options) {
    const ready = this._ensureReady()
    if (ready) await ready
    if (options !== undefined && (options === null || typeof options !== 'object' || Array.isArray(options))) {
      throw new ValidationError('processUntilIdle(): options must be an object { maxRuns? }')
    }
    const { maxRuns, ...unknown } = options ?? {}
    for (const k of Object.keys(unknown)) throw new ValidationError(`processUntilIdle(): unknown option ${k} (known: maxRuns)`)
    if (maxRuns !== undefined && (!Number.isInteger(maxRuns) || maxRuns < 1)) {
      throw new ValidationError(`processUntilIdle(): maxRuns must be a positive integer (got ${String(maxRuns)})`)
    }
    await this._beforeProcessing()
    let n = 0
    while ((maxRuns === undefined || n < maxRuns) && (await this._runner.processNext())) n++
    return n
  }

  /** What the worker loop does on its own (stale recovery, retention), done by the engine. */
  async _beforeProcessing() {
    await nativeAsync(this._engine.beforeProcessing())
  }

  /**
   * For a TimeoutError: why nothing here would have executed the run. A
   * string, or on PostgreSQL a promise of it (the run is read off the JS thread).
   */
  _noWorkerNote(runId) {
    let run = null
    try {
      run = this._getRunNow(runId)
    } catch {
      // closed meanwhile
    }
    if (run && typeof run.then === 'function') {
      return run.then(
        (r) => this._noWorkerNoteFor(r),
        () => this._noWorkerNoteFor(null),
      )
    }
    return this._noWorkerNoteFor(run)
  }

  _noWorkerNoteFor(run) {
    const jobName = run ? run.jobName : null
    if (this._runner.started && (jobName === null || this._jobs.has(jobName))) return ''
    const job = jobName === null ? 'the job' : `job '${jobName}'`
    return (
      ` (this process has no started worker for ${job}: call durably.start() or init() here, ` +
      'or make sure another process executes it)'
    )
  }

  // ---- events and plugins ------------------------------------------------------

  on(type, listener) {
    if (!EVENT_TYPES.includes(type)) {
      throw new ValidationError(`unknown event type ${JSON.stringify(type)} (known: ${EVENT_TYPES.join(', ')})`)
    }
    if (typeof listener !== 'function') throw new ValidationError('on(): listener must be a function')
    return this._events.on(type, listener)
  }

  /** Shorthand for `on('worker:error', listener)`; returns the unsubscribe function. */
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
    if (this._publish === null && !this._events.has(type)) return
    const e = { type, runId: run.id, jobName: run.jobName, labels: run.labels, timestamp: new Date().toISOString() }
    if (extra) Object.assign(e, extra)
    if (this._publish !== null) this._publish(e)
    if (this._events.has(type)) this._events.emit(e)
  }

  /**
   * Sends a run event to the other processes on this database (PostgreSQL),
   * through the writer: with the step writes of this turn, else on its own
   * at the next turn (lib/writer.js).
   */
  _publishEvent(e) {
    let json
    try {
      json = encodeForPublish(e)
    } catch (err) {
      return this._workerError(fromNative(err), null, 'watch')
    }
    this._writer.event(e.runId, json)
  }

  /** `context` names where it happened: claim, heartbeat, step-write, listener… (see WorkerErrorContext). */
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
function withLogPersistence() {
  return {
    name: 'log-persistence',
    install(durably) {
      durably._persistLogs = true
    },
  }
}

function createDurably(options) {
  return new Durably(options)
}

module.exports = { Durably, createDurably, withLogPersistence, tallyStats }
