'use strict'
// Executing claimed runs: takes the runs the engine claims (its worker loop's
// messages, the successors a flush claimed in the same commit, the runs a
// trigger claimed on this thread right after it, processOne's claim), executes each as an
// Execution (at most `limit` at once; runs claimed ahead wait for a slot),
// keeps the runs in flight, hands runs back to pending when it
// cannot or may no longer execute them, and stops.
//
// The runner sees its instance only through a narrow host (RunnerHost below),
// like lib/watch.js and ExecutionHost; __test__/runner.test.mjs drives it
// with a fake native engine.

const { reviveParsed, TAG_TEXT } = require('./values')
const { releaseOp } = require('./protocol')
const { DurablyError, CancelledError, LeaseLostError, TimeoutError, fromNative, native, nativeAsync } = require('./errors')

/** The reason an execution abandoned by stop({ abort }) sees on its signal. */
const STOPPED = new DurablyError('the worker was stopped with abort: true', 'STOPPED')

/**
 * Runs are claimed ahead only while they end within AHEAD_MS of their start,
 * and one claimed ahead that waited AHEAD_MS for a slot is handed back.
 */
const AHEAD_MS = 20

/**
 * What the runner may use of its instance.
 * @typedef {object} RunnerHost
 * @property {object} engine  the native engine's worker side: start(), stop(), loopAlive(),
 *   wake(), claim(limit) → Promise<JSON text>, release(id, generation), setClaimAhead(on)
 * @property {{ push(op: string): Promise<string>, drain(): Promise<void>, linger(): void }} writer  the flush batcher (lib/writer.js)
 * @property {number} [limit]  maxConcurrentRuns: job functions executed at once (runs claimed beyond it wait)
 * @property {boolean} [claimAhead]  whether the engine may claim ahead (then told when, with setClaimAhead)
 * @property {(name: string) => object | undefined} job  the registered job `{ name, def }` of that name
 * @property {(job: object, claimed: object, tags: boolean) => import('./execution').Execution} execution
 *   a new Execution of a claimed run (over the instance's ExecutionHost)
 * @property {(err: Error, exec: object | null, context: string) => void} workerError  reports a worker:error
 * @property {() => boolean} isClosed  whether the instance is closed
 * @property {(text: string) => void} remoteEvent  an event of a run another process executes (JSON text)
 */

class Runner {
  /** @param {RunnerHost} host */
  constructor(host) {
    this.host = host
    this.engine = host.engine
    /** run id → { exec, promise } of the executions in flight here */
    this.active = new Map()
    /** runs whose run:cancel cancel() already emitted (their execution must not emit it again) */
    this.cancelEmitted = new Set()
    /** run id → { count, lost } of cancel() calls under way here (see cancelling()) */
    this.cancelling = new Map()
    this.started = false
    /** open holds (see hold()); claimed runs wait in `held` while any is open */
    this.holds = 0
    this.held = []
    /** runs executed at once (maxConcurrentRuns) */
    this.limit = host.limit ?? Infinity
    /** executions whose job function has not ended yet */
    this.executing = 0
    /** runs claimed ahead, waiting for a slot: { r, tags, since } (see waitForSlot()) */
    this.queue = []
    this.aheadTimer = null
    this.expireBound = () => this.expire()
    /** whether the engine claims ahead (host.claimAhead: it can) */
    this.claimAhead = host.claimAhead === true
    this.aheadOn = false
  }

  /**
   * Holds the start of claimed runs until the returned release() is called:
   * an asynchronous trigger takes it so that a run claimed before the
   * trigger's reply reached JS (another connection's poll, on PostgreSQL)
   * does not start before triggerAndWait listens to it.
   */
  hold() {
    this.holds++
    let released = false
    return () => {
      if (released) return
      released = true
      if (--this.holds > 0) return
      for (const [r, tags] of this.held.splice(0)) this.startClaimed(r, tags)
    }
  }

  /** Executes a claimed run, or hands it back when stopped; waits while held. */
  startClaimed(r, tags) {
    if (this.holds > 0) this.held.push([r, tags])
    else if (!this.started) this.handBack(r) // claimed while stop() was under way
    else if (this.executing < this.limit) this.execute(r, tags)
    else this.waitForSlot(r, tags)
  }

  /**
   * A run claimed ahead (a flush that ended runs claims up to twice
   * maxConcurrentRuns, see WorkerConfig::claim_ahead): it starts when a job
   * function ends, and its first write then shares the commit of that run's
   * completion. One that waited AHEAD_MS is handed back (the running runs
   * are long: another worker may take it).
   */
  waitForSlot(r, tags) {
    this.queue.push({ r, tags, since: performance.now() })
    this.aheadTimer ??= setTimeout(this.expireBound, AHEAD_MS)
  }

  /** Tells the engine whether its flushes claim ahead (WorkerConfig::claim_ahead). */
  setAhead(on) {
    this.aheadOn = on
    if (this.host.isClosed()) return
    try {
      this.engine.setClaimAhead(on)
    } catch (err) {
      this.host.workerError(fromNative(err), null, 'claim')
    }
  }

  /** Hands back the runs claimed ahead that waited AHEAD_MS or longer. */
  expire() {
    this.aheadTimer = null
    const old = performance.now() - AHEAD_MS
    if (this.queue.length && this.queue[0].since <= old && this.aheadOn) {
      // Runs do not end quickly now: the flush of the hand-back (and the
      // next ones) must not claim ahead again.
      this.setAhead(false)
    }
    while (this.queue.length && this.queue[0].since <= old) this.handBack(this.queue.shift().r)
    if (this.queue.length) this.aheadTimer = setTimeout(this.expireBound, this.queue[0].since - old)
  }

  /** Hands back every run claimed ahead (stop()). */
  handBackQueued() {
    if (this.aheadTimer !== null) clearTimeout(this.aheadTimer)
    this.aheadTimer = null
    return Promise.all(this.queue.splice(0).map((q) => this.handBack(q.r)))
  }

  /** Takes a run claimed ahead out of the queue (it was cancelled or lost); true if it was there. */
  dropQueued(runId) {
    const i = this.queue.findIndex((q) => q.r.id === runId)
    if (i < 0) return false
    const [{ r }] = this.queue.splice(i, 1)
    if (!this.host.isClosed()) native(() => this.engine.release(r.id, r.leaseGeneration))
    return true
  }

  /**
   * An execution's job function ended `ms` after it started (its last op is
   * queued): a run claimed ahead takes its slot. Claiming ahead is on while
   * runs end within AHEAD_MS.
   */
  next(ms) {
    this.executing--
    if (this.claimAhead && ms < AHEAD_MS !== this.aheadOn) this.setAhead(ms < AHEAD_MS)
    if (this.queue.length === 0 || !this.started) return
    const { r, tags } = this.queue.shift()
    this.executing++ // its slot, taken now: a run claimed meanwhile waits behind it
    // The ended run's last op is queued and its flush not yet made: that
    // flush waits for the next turn, so the first write of this run joins it.
    this.host.writer.linger()
    queueMicrotask(() => {
      if (this.started) return this.execute(r, tags, true)
      this.executing--
      this.handBack(r)
    })
  }

  /** Runs in flight here. */
  get activeCount() {
    return this.active.size
  }

  /** Starts the native claim loop; its runs arrive through onMessage. */
  start() {
    if (this.started) return
    this.started = true
    native(() => this.engine.start())
  }

  /**
   * Stops claiming; resolves once the runs in flight finished their job
   * function. `abort`: hands every run in flight back at once (see
   * Durably#stop); `timeout`: waits up to `timeout` ms, then aborts.
   */
  async stop({ abort, timeout } = {}) {
    if (this.started) {
      this.started = false
      native(() => this.engine.stop())
      // The loop may be finishing a claim; its runs reach us after it exits
      // (through the ThreadsafeFunction) and, since we are stopped, are handed
      // back to pending instead of being dropped.
      while (native(() => this.engine.loopAlive())) await new Promise((r) => setTimeout(r, 1))
      await new Promise((r) => setImmediate(r))
      await new Promise((r) => setImmediate(r))
    }
    await this.handBackQueued()
    if (!abort && timeout !== undefined && this.active.size) {
      let timer
      await Promise.race([this.settled(), new Promise((r) => (timer = setTimeout(r, timeout)))])
      clearTimeout(timer)
    }
    if (abort || timeout !== undefined) await this.handBackActive()
    await this.settled()
    await this.host.writer.drain()
  }

  /** Resolves once no run is in flight here. */
  async settled() {
    while (this.active.size) await Promise.allSettled([...this.active.values()].map((a) => a.promise))
  }

  /** Abandons every execution in flight and hands its run back to pending. */
  async handBackActive() {
    const list = [...this.active.values()]
    await Promise.all(
      list.map(({ exec }) => {
        exec.detach(STOPPED)
        if (this.active.get(exec.id)?.exec === exec) this.active.delete(exec.id)
        return this.handBack({ id: exec.id, leaseGeneration: exec.generation })
      }),
    )
  }

  /**
   * cancel() cancelled the run and emitted run:cancel: if it is in flight
   * here, its signal fires (and it does not emit run:cancel again).
   */
  cancelled(runId) {
    const active = this.active.get(runId)
    if (!active) {
      this.dropQueued(runId) // (never started here: nothing to abort)
      return
    }
    this.cancelEmitted.add(runId)
    active.exec.abort(new CancelledError(`run ${runId} was cancelled`))
  }

  /**
   * cancel() of `runId` is under way here: a 'lost: cancelled' message for it
   * waits until the returned end(ok) is called. ok: cancel() goes on to
   * cancelled(); otherwise (it failed, e.g. someone else cancelled first) the
   * waiting message is applied then.
   */
  startCancel(runId) {
    let entry = this.cancelling.get(runId)
    if (!entry) this.cancelling.set(runId, (entry = { count: 0, lost: false }))
    entry.count++
    let ended = false
    return (ok) => {
      if (ended) return
      ended = true
      if (--entry.count === 0) this.cancelling.delete(runId)
      if (!ok && entry.lost) {
        const a = this.active.get(runId)
        if (a) a.exec.abort(new CancelledError(`run ${runId} was cancelled`))
      }
    }
  }

  /** Whether cancel() already emitted run:cancel for the run (and forgets it). */
  takeCancelEmitted(runId) {
    return this.cancelEmitted.delete(runId)
  }

  /** Wakes the native claim loop (after the event announcing new work was emitted). */
  wake() {
    if (this.host.isClosed()) return
    try {
      this.engine.wake()
    } catch (err) {
      this.host.workerError(fromNative(err), null, 'wake')
    }
  }

  /** processOne: claims one run and executes it; resolves false when none was pending. */
  async processNext() {
    const runs = JSON.parse(await nativeAsync(this.engine.claim(1)))
    if (runs.length === 0) return false
    const text = JSON.stringify(runs)
    const tags = text.includes(TAG_TEXT)
    await Promise.all(runs.map((r) => this.execute(r, tags)))
    return true
  }

  /** A message of the native worker (JSON text): claimed runs, a lost lease, a worker error. */
  onMessage(text) {
    try {
      if (this.host.isClosed()) return
      const msg = JSON.parse(text)
      if (msg.t === 'runs') {
        const tags = text.includes(TAG_TEXT)
        for (const r of msg.runs) this.startClaimed(r, tags)
      } else if (msg.t === 'lost') {
        const a = this.active.get(msg.id)
        if (!a) {
          this.dropQueued(msg.id) // claimed ahead, never started: another worker or cancel() has it
          return
        }
        if (msg.reason === 'cancelled' && this.cancelling.has(msg.id)) {
          // Our own cancel(), heard back (PostgreSQL's NOTIFY) before it returned:
          // cancel() aborts the run when it returns, after emitting run:cancel.
          this.cancelling.get(msg.id).lost = true
        } else if (msg.reason === 'cancelled') a.exec.abort(new CancelledError(`run ${msg.id} was cancelled`))
        else if (msg.reason === 'timeout') {
          a.exec.abort(new TimeoutError(`run ${msg.id} timed out after ${a.exec.job.def.timeout} ms`))
        } else a.exec.abort(new LeaseLostError())
      } else if (msg.t === 'event') {
        this.host.remoteEvent(msg.event)
      } else if (msg.t === 'error') {
        this.host.workerError(fromNative({ code: msg.code, message: msg.message }), null, msg.context)
      }
    } catch (err) {
      this.host.workerError(err, null, 'message')
    }
  }

  /**
   * Runs claimed by a flush together with the completion of their
   * predecessors, or by a trigger right after it (JSON text).
   */
  onClaimed(text) {
    try {
      const tags = text.includes(TAG_TEXT)
      const runs = JSON.parse(text)
      // After the settled waiters' continuations (run:complete of the predecessors).
      queueMicrotask(() => {
        for (const r of runs) this.startClaimed(r, tags) // (hands back one claimed by a flush that raced with stop())
      })
    } catch (err) {
      this.host.workerError(err, null, 'claim')
    }
  }

  /**
   * Executes a run its trigger inserted already claimed by this worker (see
   * TriggerResult.started in lib/protocol.js): the claimed run is built from
   * what the trigger sent, as a first claim would have read it back (the
   * input and labels decoded from the text that was stored, not the caller's
   * objects).
   */
  startTriggered(id, jobName, inputText, labelsText, createdAt) {
    try {
      const tags = inputText.includes(TAG_TEXT)
      const claimed = {
        id,
        jobName,
        input: JSON.parse(inputText),
        labels: labelsText === '{}' ? {} : JSON.parse(labelsText),
        progress: null,
        leaseGeneration: 1,
        startedAt: createdAt,
        steps: [],
      }
      // As onClaimed: after the continuations already queued.
      queueMicrotask(() => this.startClaimed(claimed, tags))
    } catch (err) {
      this.host.workerError(err, null, 'claim')
    }
  }

  /** Gives a claimed run back (pending) without executing it. */
  handBack(claimed) {
    const id = claimed.id
    const gen = claimed.leaseGeneration
    return this.host.writer
      .push(releaseOp(id, gen))
      .catch((err) => this.host.workerError(err, null, 'hand-back'))
      .finally(() => {
        if (!this.host.isClosed()) native(() => this.engine.release(id, gen))
      })
  }

  /**
   * Executes a claimed run; resolves when its execution ended (or was
   * abandoned). `slotTaken`: next() already counted it as executing.
   */
  execute(claimed, tags, slotTaken = false) {
    const job = this.host.job(claimed.jobName)
    const id = claimed.id
    if (!job) {
      if (slotTaken) this.executing--
      native(() => this.engine.release(id, claimed.leaseGeneration))
      return Promise.resolve()
    }
    const exec = this.host.execution(job, claimed, tags)
    const input = reviveParsed(claimed.input, tags)
    if (!slotTaken) this.executing++
    const t0 = performance.now()
    let counted = true
    exec.onEnding = () => {
      if (!counted) return
      counted = false
      this.next(performance.now() - t0)
    }
    const ended = () => {
      exec.onEnding()
      if (this.active.get(id)?.exec === exec) this.active.delete(id)
      // (a detached run was released by its hand-back; a completed or failed
      // one by the commit of its last op)
      if (!this.host.isClosed() && !exec.detached && !exec.slotFreed) {
        try {
          this.engine.release(id, claimed.leaseGeneration)
        } catch {
          // closed meanwhile
        }
      }
    }
    // Settles when the job function's run ended, or at once when the
    // execution is detached (stop({ abort })): a detached one may never settle.
    const promise = new Promise((resolve) => {
      exec.onDetached = resolve
      exec.run(input, claimed.leaseGeneration).then(resolve, (err) => {
        this.host.workerError(err, exec, 'execute')
        resolve()
      })
    }).then(ended)
    this.active.set(id, { exec, promise })
    return promise
  }
}

module.exports = { Runner, STOPPED }
