'use strict'
// One execution of a claimed run: builds `ctx`, replays completed steps,
// executes new ones, and records the outcome. Every write names the run's
// lease generation; an op the engine refuses means the run was cancelled
// (`cancelled`) or taken over (`lost`), and the execution stops writing.

const { AsyncLocalStorage } = require('node:async_hooks')
const { encode, reviveParsed, oversize } = require('./values')
const { validate } = require('./schema')
const { stepOp, completeOp, failOp, progressOp, logOp, OP_RESULTS: OP } = require('./protocol')
const {
  CancelledError,
  DurablyError,
  LeaseLostError,
  ValidationError,
  TimeoutError,
} = require('./errors')

/**
 * Which step a `ctx.log` call comes from under Promise.all: `{ exec, name }`.
 * Only a step started while another of its run is in flight enters it. A
 * step started alone does not: it is the run's `solo` step, the one a log
 * with no scope of this run's steps in flight comes from. (An
 * AsyncLocalStorage that was ever entered turns on Node's promise hooks for
 * the whole process, ~10 % of the CPU of a step; most jobs run their steps
 * one at a time and never pay it.)
 */
const stepScope = new AsyncLocalStorage()

const PROGRESS_INTERVAL_MS = 50

/** error object → name of the step that threw it (for run:fail's failedStepName) */
const stepErrors = new WeakMap()

/**
 * A resumed run called its steps in a different order than stored
 * (`replay: 'strict'`). `details`: { stepName, stepIndex, storedStepName, storedIndex }:
 * the step called at `stepIndex`, the step stored there (or null), and where
 * `stepName` was stored (or null).
 */
class ReplayMismatchError extends DurablyError {
  constructor(message, details) {
    super(message, 'REPLAY_MISMATCH')
    this.name = 'ReplayMismatchError'
    if (details) Object.assign(this, details)
  }
}

let lastMs = 0
let lastIso = ''
/** ISO time of now; formatted at most once per millisecond (steps are often faster). */
function now() {
  const ms = Date.now()
  if (ms !== lastMs) {
    lastMs = ms
    lastIso = new Date(ms).toISOString()
  }
  return lastIso
}

function errorText(err) {
  if (err instanceof Error) return { message: err.message || String(err), stack: err.stack ?? null }
  return { message: typeof err === 'string' ? err : safeString(err), stack: null }
}

function safeString(v) {
  try {
    return JSON.stringify(v) ?? String(v)
  } catch {
    return String(v)
  }
}

/**
 * What an execution may use of its Durably instance (built once per instance
 * by `Durably#_executionHost`); nothing else of the instance is reachable.
 * @typedef {object} ExecutionHost
 * @property {import('./events').Events} events  where run and step events go
 * @property {((e: object) => void) | null} publish  sends a run event to the other processes (PostgreSQL), else null
 * @property {(op: string) => Promise<string>} write  queues a flush op (lib/protocol.js); resolves with its status
 * @property {() => number} maxValueBytes  the instance's value size limit
 * @property {() => boolean} persistLogs  whether ctx.log lines are stored
 * @property {() => void} progressWritten  counts a stored progress write
 * @property {(err: Error, exec: Execution, context: string) => void} workerError  reports a worker:error
 * @property {(runId: string) => boolean} takeCancelEmitted  whether cancel() already emitted run:cancel for the run (and forgets it)
 */

/**
 * The `ctx` a job function gets. Its methods are own properties bound to the
 * execution (`const { run } = ctx` works). `signal` is a getter on the
 * prototype: creating the AbortSignal costs ~12 µs on Node 20 (far more than
 * the rest of a run's start), so it is made when first used (by the job, or
 * the first step, whose function gets it). On the prototype, not on each
 * context: a getter closure per context gave each its own hidden class
 * (+11 MB peak RSS over 2,000 runs of 10 steps).
 */
class JobContext {
  #exec
  constructor(exec) {
    this.#exec = exec
    this.runId = exec.id
    this.jobName = exec.jobName
    this.run = (name, fn) => exec.step(name, fn)
    this.progress = (current, total, message) => exec.setProgress({ current, total, message })
    this.setProgress = (p) => exec.setProgress(p)
    this.log = new JobLog(exec)
  }

  get signal() {
    return this.#exec.controller.signal
  }
}

/**
 * `ctx.log`: its methods are own properties bound to the execution
 * (`const { info } = ctx.log` works). A class, not an object literal: V8
 * pretenures a literal whose objects often survive a young collection (it
 * did this one's), so each run's log object was born in the old generation,
 * where it kept its closures, hence the whole execution, alive through every
 * young collection until the next full one: every run's objects were copied
 * and promoted. One-step runs: 1.3 → 0.77 MB promoted per young collection,
 * pauses 2.2 → 1.3 ms.
 */
class JobLog {
  constructor(exec) {
    this.info = (message, data) => exec.log('info', message, data)
    this.warn = (message, data) => exec.log('warn', message, data)
    this.error = (message, data) => exec.log('error', message, data)
  }
}

class Execution {
  /**
   * @param {ExecutionHost} host  what the execution may use of its instance
   * @param {object} job  the registered job (name, def)
   * @param {object} claimed  the claimed run: id, jobName, input, labels, progress, leaseGeneration, startedAt, steps
   */
  constructor(host, job, claimed, hadTags) {
    this.host = host
    this.job = job
    this.id = claimed.id
    this.generation = claimed.leaseGeneration
    this.jobName = claimed.jobName
    this.labels = claimed.labels
    this.startedAt = claimed.startedAt
    this.controller = new AbortController()
    // Mirrors controller.signal.aborted (only abort() aborts it): the getter costs ~1 % of a step.
    this.aborted = false
    this.position = 0
    this.names = new Set()
    this.hadTags = hadTags
    // The stored steps by name and by position; null on a first execution (nothing stored).
    this.byName = null
    this.byIndex = null
    // The position after the run's last completed step (its stored ones and
    // this execution's): sent with the op that ends the run, which stores it
    // as current_step_index without reading the run's steps.
    this.stepIndex = 0
    const stored = claimed.steps
    if (stored.length > 0) {
      this.byName = new Map()
      this.byIndex = new Map()
      for (const [name, index, output] of stored) {
        const s = { name, index, output, decoded: false }
        this.byName.set(name, s)
        this.byIndex.set(index, s)
        if (index >= this.stepIndex) this.stepIndex = index + 1
      }
    }
    this.progress = claimed.progress
    this.progressDirty = false
    this.progressTimer = null
    this.lastProgressWrite = 0
    this.running = 0 // steps executing now
    this.inFlight = new Set() // their names
    this.lastStep = null
    this.solo = null // the step in flight that was started alone (see stepScope)
    this.ended = false
    // Set once a committed "c" or "f" op freed this run's slot in the engine,
    // which then needs no separate release() (one boundary crossing less per run).
    this.slotFreed = false
    /** set by the runner: called once the job function ended and its last op is queued (or it was aborted) */
    this.onEnding = noop
    this.cancelEmitted = false
    // Set by detach(): the run was handed back by stop({ abort }) and this
    // execution is abandoned. Whatever it does later is ignored.
    this.detached = false
    // Called once by detach(): whoever waits for the execution (the runner) stops waiting.
    this.onDetached = noop
    this.ctx = this.makeContext()
  }

  event(type, extra) {
    const e = { type, runId: this.id, jobName: this.jobName, labels: this.labels, timestamp: now() }
    return extra ? Object.assign(e, extra) : e
  }

  /** Whether an event of `type` goes anywhere (a listener here, or other processes). */
  wants(type) {
    const publish = this.host.publish
    return (publish !== null && publish !== undefined) || this.host.events.has(type)
  }

  emit(type, extra) {
    const events = this.host.events
    const publish = this.host.publish
    if (publish === null || publish === undefined) {
      if (events.has(type)) events.emit(this.event(type, extra))
      return
    }
    const e = this.event(type, extra)
    publish(e)
    if (events.has(type)) events.emit(e)
  }

  /** Stops the execution: the signal fires with `reason`. */
  abort(reason) {
    if (this.aborted) return
    this.aborted = true
    this.controller.abort(reason)
    // Its slot no longer counts (a job timeout frees it in the engine at once),
    // even while a job function ignoring its signal goes on.
    this.onEnding()
  }

  /**
   * Abandons the execution (stop({ abort }) hands its run back): the signal
   * fires, and from now on nothing it does is written or emitted. A step
   * still running when it settles is dropped, and its `ctx.run` promise never
   * settles, so the job function does not go on; nor does a later `ctx.run`.
   */
  detach(reason) {
    if (this.detached) return
    this.detached = true
    this.ended = true
    this.takeProgress()
    this.abort(reason)
    this.onDetached()
  }

  stopError() {
    const r = this.controller.signal.reason
    return r instanceof Error ? r : new CancelledError()
  }

  makeContext() {
    return new JobContext(this)
  }

  // ---- steps -------------------------------------------------------------

  step(name, fn) {
    if (this.detached) return NEVER
    if (typeof name !== 'string' || name.length === 0) {
      return Promise.reject(new ValidationError('ctx.run: step name must be a non-empty string'))
    }
    if (typeof fn !== 'function') {
      const got = fn === null ? 'null' : typeof fn
      return Promise.reject(new ValidationError(`ctx.run('${name}'): second argument must be a function (got ${got})`))
    }
    // A refused call is not a step: it takes no position.
    if (this.names.has(name)) {
      return Promise.reject(
        new ValidationError(
          `ctx.run: step name '${name}' is used twice in one execution of run ${this.id}; ` +
            'step names must be unique (in a loop, include the index: `item-${i}`)',
        ),
      )
    }
    // Once the replay went off the stored path, no further step may run or replay.
    if (this.replayError) return Promise.reject(this.replayError)
    // The position is taken now, at call time, so Promise.all of steps replays deterministically.
    const index = this.position++
    this.names.add(name)
    if (this.aborted) return Promise.reject(this.stopError())
    const stored = this.lookup(name, index)
    if (stored instanceof Error) {
      this.replayError = stored
      return Promise.reject(stored)
    }
    if (stored) {
      if (!stored.decoded) {
        stored.output = reviveParsed(stored.output, this.hadTags)
        stored.decoded = true
      }
      return Promise.resolve(stored.output)
    }
    const p = this.execute(name, index, fn)
    // A step the job forgot to await must not reject unhandled and crash the
    // process (run() fails the run instead); awaiting it still sees the rejection.
    p.catch(noop)
    return p
  }

  /** The stored step to replay for this call, undefined to execute it, or a ReplayMismatchError. */
  lookup(name, index) {
    if (this.byName === null) return undefined
    const byName = this.byName.get(name)
    if (this.job.def.replay === 'lenient') return byName
    const atIndex = this.byIndex.get(index)
    if (atIndex && atIndex.name !== name) {
      return new ReplayMismatchError(
        `replay mismatch at step ${index}: the job now calls '${name}' where the stored run has '${atIndex.name}' ` +
          "(the job's code changed or it branches non-deterministically); " +
          "set replay: 'lenient' on the job to match steps by name only",
        {
          stepName: name,
          stepIndex: index,
          storedStepName: atIndex.name,
          storedIndex: byName ? byName.index : null,
        },
      )
    }
    if (byName && byName.index !== index) {
      // Nothing is stored at `index` (else the check above answered).
      return new ReplayMismatchError(
        `replay mismatch: step '${name}' is called at position ${index} but was stored at position ${byName.index} ` +
          "(the job's code changed or it branches non-deterministically); " +
          "set replay: 'lenient' on the job to match steps by name only",
        { stepName: name, stepIndex: index, storedStepName: null, storedIndex: byName.index },
      )
    }
    return byName
  }

  /**
   * Strict replay: a job that returns without reaching steps it stored
   * before has changed (steps were removed) — the stored results would be
   * silently orphaned, so fail like any other mismatch.
   */
  checkUnvisited() {
    if (this.byName === null || this.job.def.replay === 'lenient') return
    for (const s of this.byName.values()) {
      if (!this.names.has(s.name)) {
        throw new ReplayMismatchError(
          `replay mismatch: the job returned without calling step '${s.name}' stored at position ${s.index} ` +
            "(the job's code changed or it branches non-deterministically); set replay: 'lenient' to match steps by name only",
          { stepName: null, stepIndex: null, storedStepName: s.name, storedIndex: s.index },
        )
      }
    }
  }

  async execute(name, index, fn) {
    // (an event's extra object is built only when the event goes somewhere)
    if (this.wants('step:start')) this.emit('step:start', { stepName: name, stepIndex: index })
    const startedAt = now()
    const t0 = performance.now()
    const signal = this.controller.signal
    let value
    const alone = this.running === 0
    this.running++
    this.inFlight.add(name)
    this.lastStep = name
    if (alone) this.solo = name
    try {
      value = await (alone ? callStep(fn, signal) : stepScope.run({ exec: this, name }, callStep, fn, signal))
    } catch (err) {
      this.running--
      this.inFlight.delete(name)
      if (this.solo === name) this.solo = null
      if (this.detached) return NEVER
      if (this.aborted) return this.stepCut(name, index, startedAt)
      if (err !== null && typeof err === 'object') stepErrors.set(err, name)
      await this.persistFailedStep(name, index, errorText(err), startedAt)
      throw err
    }
    this.running--
    this.inFlight.delete(name)
    if (this.solo === name) this.solo = null
    if (this.detached) return NEVER
    if (this.aborted) return this.stepCut(name, index, startedAt)
    let text
    try {
      text = encode(value, 'result')
    } catch (err) {
      const e = new ValidationError(`step '${name}' returned a value that cannot be stored: ${err.message}`)
      stepErrors.set(e, name)
      await this.persistFailedStep(name, index, errorText(e), startedAt)
      throw e
    }
    const bytes = oversize(text, this.host.maxValueBytes())
    if (bytes) return this.stepTooLarge(name, index, startedAt, bytes, 'maxValueBytes')
    // (written here, not through a helper: one async call less per step)
    let st
    try {
      st = await this.host.write(stepOp(this.id, this.generation, name, index, 'completed', text, null, startedAt, now()))
    } catch (storeErr) {
      await this.stepWriteFailed(storeErr, name, index, text, startedAt)
    }
    if (st !== OP.written) await this.stepNotWritten(st, name, index, text, startedAt)
    if (index >= this.stepIndex) this.stepIndex = index + 1
    if (this.wants('step:complete')) {
      this.emit('step:complete', {
        stepName: name,
        stepIndex: index,
        output: value,
        duration: Math.round(performance.now() - t0),
      })
    }
    // Handed back while the write was in flight: the job does not go on.
    if (this.detached) return NEVER
    return value
  }

  /**
   * A step result too large to store (over maxValueBytes, or refused by
   * SQLite's length limit): the step is stored failed and the error fails
   * the run. Retrying could never store it, so the run must not stay running.
   */
  async stepTooLarge(name, index, startedAt, bytes, limit) {
    const e = new DurablyError(
      `VALUE_TOO_LARGE: step '${name}' returned a value of ${bytes} bytes encoded, over ${limit === 'maxValueBytes' ? `maxValueBytes (${this.host.maxValueBytes()})` : "SQLite's length limit"}`,
      'VALUE_TOO_LARGE',
    )
    stepErrors.set(e, name)
    await this.persistFailedStep(name, index, errorText(e), startedAt)
    throw e
  }

  /** Writes a failed step's row (`err`: `{ message, stack }`); throws if the run is no longer ours. */
  async persistFailedStep(name, index, err, startedAt) {
    let st
    try {
      st = await this.host.write(stepOp(this.id, this.generation, name, index, 'failed', null, err, startedAt, now()))
    } catch (storeErr) {
      return this.stepWriteFailed(storeErr, name, index, null, startedAt)
    }
    if (st !== OP.written) return this.stepNotWritten(st, name, index, null, startedAt)
    this.emit('step:fail', { stepName: name, stepIndex: index, error: err.message })
  }

  /**
   * A step's write was rejected with `storeErr` (`outputText`: the result of
   * a completed step, null for a failed one): always throws.
   */
  async stepWriteFailed(storeErr, name, index, outputText, startedAt) {
    // A value SQLite refuses (a whole batch failing with SQLITE_TOOBIG): retrying cannot help.
    if (storeErr && storeErr.code === 'VALUE_TOO_LARGE' && outputText !== null) {
      return this.stepTooLarge(name, index, startedAt, Buffer.byteLength(outputText), 'sqlite')
    }
    // The store refused the write (DB_BUSY after busyTimeout, DB_FULL…): stop this
    // execution without failing the run (stopped() reports it as a worker error).
    this.writeFailed = 'step-write'
    this.abort(storeErr)
    throw storeErr
  }

  /** A step's write answered `st`, not `written`: always throws. */
  async stepNotWritten(st, name, index, outputText, startedAt) {
    if (st === OP.tooBig) return this.stepTooLarge(name, index, startedAt, Buffer.byteLength(outputText ?? ''), 'sqlite')
    this.lostBy(st)
    this.emit('step:cancel', { stepName: name, stepIndex: index })
    throw this.stopError()
  }

  stepCut(name, index) {
    this.emit('step:cancel', { stepName: name, stepIndex: index })
    throw this.stopError()
  }

  /** An op was refused: `cancelled`, or `lost` (the lease). */
  lostBy(status) {
    this.abort(status === OP.cancelled ? new CancelledError(`run ${this.id} was cancelled`) : new LeaseLostError())
  }

  // ---- progress and logs ---------------------------------------------------

  setProgress(p) {
    if (this.detached) return
    if (p === null || typeof p !== 'object') throw new ValidationError('progress must be an object')
    const { current, total, message } = p
    if (typeof current !== 'number' || !Number.isFinite(current)) {
      throw new ValidationError('progress current must be a finite number')
    }
    if (total !== undefined && total !== null && (typeof total !== 'number' || !Number.isFinite(total))) {
      throw new ValidationError('progress total must be a finite number')
    }
    if (message !== undefined && message !== null && typeof message !== 'string') {
      throw new ValidationError('progress message must be a string')
    }
    const value = { current }
    if (total != null) value.total = total
    if (message != null) value.message = message
    this.progress = value
    this.progressDirty = true
    if (this.progressTimer === null && !this.ended) {
      const wait = Math.max(0, this.lastProgressWrite + PROGRESS_INTERVAL_MS - Date.now())
      this.progressTimer = setTimeout(() => this.writeProgress(), wait)
    }
  }

  /** The pending progress as JSON text for the final op, or null. */
  takeProgress() {
    if (this.progressTimer !== null) {
      clearTimeout(this.progressTimer)
      this.progressTimer = null
    }
    if (!this.progressDirty) return null
    this.progressDirty = false
    return JSON.stringify(this.progress)
  }

  async writeProgress() {
    this.progressTimer = null
    if (!this.progressDirty || this.ended) return
    this.progressDirty = false
    this.lastProgressWrite = Date.now()
    const value = this.progress
    try {
      const st = await this.host.write(progressOp(this.id, this.generation, JSON.stringify(value)))
      if (st === OP.written) {
        this.host.progressWritten()
        this.emit('run:progress', { progress: value })
      } else this.lostBy(st)
    } catch (err) {
      this.host.workerError(err, this, 'progress-write')
    }
  }

  log(level, message, data) {
    if (this.detached) return
    if (typeof message !== 'string') throw new ValidationError(`ctx.log.${level}: message must be a string`)
    const stepName = this.running === 0 ? null : this.currentStep()
    // One time for the event and the stored line: a client merging the live
    // lines with the stored ones (useLogs) matches them by it, and a slow
    // 'log:write' listener must not make them differ.
    const at = now()
    this.emit('log:write', { stepName, level, message, data: data === undefined ? null : data, timestamp: at })
    if (this.host.persistLogs()) this.persistLog(stepName, level, message, data, at)
  }

  /** The step in flight a log comes from (some step is in flight). */
  currentStep() {
    if (this.running === 1) return this.inFlight.values().next().value
    // The scope of a step of this run still in flight; else the solo step
    // (a scope may be stale: another run's, or a step that ended).
    const scope = stepScope.getStore()
    if (scope !== undefined && scope.exec === this && this.inFlight.has(scope.name)) return scope.name
    return this.solo ?? this.lastStep
  }

  persistLog(stepName, level, message, data, at) {
    let text = 'null'
    try {
      if (data !== undefined) text = encode(data, 'data')
    } catch (err) {
      this.host.workerError(err, this, 'log-write')
      return
    }
    const op = logOp(this.id, this.generation, stepName, level, message, text, at)
    this.host.write(op).then(
      (st) => {
        if (st !== OP.written) this.lostBy(st)
      },
      (err) => this.host.workerError(err, this, 'log-write'),
    )
  }

  // ---- the run -------------------------------------------------------------

  async run(input, attempt) {
    if (this.wants('run:start')) this.emit('run:start', { input, attempt })
    const def = this.job.def
    let output
    try {
      output = await callJob(def.run, this.ctx, input)
      if (this.inFlight.size > 0 && !this.detached && !this.aborted) {
        // A forgotten `await`: the step would go on writing into a finished run.
        const name = this.inFlight.values().next().value
        const err = new ValidationError(`job returned while step '${name}' was still running — missing await?`)
        stepErrors.set(err, name)
        await this.failed(err)
        // Its signal fires; when it settles, nothing is stored or emitted.
        this.detach(err)
        return
      }
      if (this.replayError) throw this.replayError
      this.checkUnvisited()
      if (def.output) output = await validate(def.output, output, `job '${this.jobName}' returned an invalid output`)
    } catch (err) {
      return this.failed(err)
    }
    if (this.detached) return
    if (this.aborted) return this.stopped()
    let text
    try {
      text = encode(output, 'output')
    } catch (err) {
      return this.failed(new ValidationError(`job '${this.jobName}' returned an output that cannot be stored: ${err.message}`))
    }
    const bytes = oversize(text, this.host.maxValueBytes())
    if (bytes) return this.failed(this.outputTooLarge(bytes, `maxValueBytes (${this.host.maxValueBytes()})`))
    const progress = this.takeProgress()
    this.ended = true
    const pushed = this.host.write(completeOp(this.id, this.generation, text, progress, now(), this.stepIndex))
    this.onEnding()
    const st = await pushed
    this.slotFreed = true // the commit of a "c" or "f" op frees the run's slot (Worker::flush)
    if (st === OP.tooBig) {
      this.ended = false
      if (progress) this.progressDirty = true
      return this.failed(this.outputTooLarge(Buffer.byteLength(text), "SQLite's length limit"))
    }
    if (st !== OP.written) {
      this.lostBy(st)
      return this.stopped()
    }
    if (progress) this.emit('run:progress', { progress: this.progress })
    if (this.wants('run:complete')) this.emit('run:complete', { output, duration: Math.round(this.duration()) })
  }

  outputTooLarge(bytes, limit) {
    return new DurablyError(`VALUE_TOO_LARGE: job '${this.jobName}' returned an output of ${bytes} bytes encoded, over ${limit}`, 'VALUE_TOO_LARGE')
  }

  duration() {
    const t = Date.parse(this.startedAt)
    return Number.isNaN(t) ? 0 : Date.now() - t
  }

  async failed(err) {
    if (this.detached) return
    if (this.aborted) return this.stopped()
    const { message, stack } = errorText(err)
    const progress = this.takeProgress()
    this.ended = true
    const pushed = this.host.write(failOp(this.id, this.generation, message, stack, progress, now(), this.stepIndex))
    this.onEnding()
    const st = await pushed
    this.slotFreed = true
    if (st !== OP.written) {
      this.lostBy(st)
      return this.stopped()
    }
    if (progress) this.emit('run:progress', { progress: this.progress })
    this.emit('run:fail', {
      error: message,
      failedStepName: err !== null && typeof err === 'object' ? (stepErrors.get(err) ?? null) : null,
    })
  }

  /** The run ended because it was cancelled, lost, timed out or stopped. */
  async stopped() {
    if (this.detached) return
    this.ended = true
    this.takeProgress()
    const reason = this.controller.signal.reason
    if (reason instanceof CancelledError) {
      const emittedByCancel = this.host.takeCancelEmitted(this.id)
      if (!this.cancelEmitted && !emittedByCancel) this.emit('run:cancel')
    } else if (reason instanceof TimeoutError) {
      this.emit('run:fail', { error: reason.message, failedStepName: null })
    } else if (reason instanceof DurablyError) {
      // Lease lost, or a write of ours failed (see stepWriteFailed): a worker error, not a
      // run failure. After a failed write the run stays `running`; once its heartbeat
      // is stale it is recovered and resumes from its last stored step.
      const context = reason instanceof LeaseLostError ? 'lease-lost' : (this.writeFailed ?? 'execute')
      this.host.workerError(reason, this, context)
    }
  }
}

function noop() {}

/** What an abandoned execution's steps resolve to: nothing, ever. */
const NEVER = new Promise(() => {})

function callStep(fn, signal) {
  return fn(signal)
}

async function callJob(fn, ctx, input) {
  return fn(ctx, input)
}

module.exports = { Execution, ReplayMismatchError }
