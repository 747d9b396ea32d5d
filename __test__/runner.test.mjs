// Issue 15: lib/runner.js (claims, native message dispatch, hand-back, the
// runs in flight, stop) sees its instance only through a narrow host. Here a
// fake native engine and a fake writer stand in for the addon: the tests
// assert which calls and ops happen in which order, and the runner's states.
import { createRequire } from 'node:module'
import { describe, expect, it } from 'vitest'

const require = createRequire(import.meta.url)
const { Runner, STOPPED } = require('../lib/runner.js')
const { Execution } = require('../lib/execution.js')
const { Events } = require('../lib/events.js')
const { defineJob } = require('../lib/job.js')

/** A claimed run as the engine hands it over (src/store/claim.rs). */
function claimed(id, jobName = 'j', gen = 1) {
  return {
    id,
    jobName,
    input: { n: 1 },
    labels: {},
    leaseGeneration: gen,
    startedAt: new Date().toISOString(),
    steps: [],
    progress: null,
  }
}

/** A deferred promise. */
function deferred() {
  let resolve
  const promise = new Promise((r) => (resolve = r))
  return { promise, resolve }
}

const tick = () => new Promise((r) => setImmediate(r))

/** A job recording each run it executes in `ran`, then waiting for `gate`. */
function waitingJob(ran, gate) {
  return async (ctx) => {
    ran.push(ctx.runId)
    await gate.promise
  }
}

/**
 * A runner over a fake engine (records every call in `calls`), a fake writer
 * (records every op's kind and run in `calls` too, resolves 'written' unless
 * `statuses` says otherwise) and jobs given by name.
 */
function setup(jobs, { limit, claimAhead } = {}) {
  const calls = []
  const errors = []
  const events = new Events()
  const seen = []
  events.onAny((e) => seen.push(`${e.type}:${e.runId}`))
  const state = { closed: false, loopAliveFor: 0, loopExited: deferred(), claim: '[]', statuses: {}, rejectOnce: {} }
  const engine = {
    start: () => calls.push('start'),
    stop: () => calls.push('stop'),
    loopAlive: () => {
      calls.push('loopAlive')
      if (state.loopAliveFor-- > 0) return true
      state.loopExited.resolve()
      return false
    },
    wake: () => calls.push('wake'),
    claim: async (n) => {
      calls.push(`claim(${n})`)
      return state.claim
    },
    release: (id, gen) => calls.push(`engine.release(${id},${gen})`),
    setClaimAhead: (on) => calls.push(`ahead(${on})`),
  }
  const writer = {
    push: async (op) => {
      const [kind, body] = Object.entries(JSON.parse(op))[0]
      calls.push(`op:${kind}(${body.run},${body.gen}${kind === 'step' ? `,${body.name}${body.status === 'completed' ? '' : `,${body.status}`}` : ''})`)
      if (kind === 'fail') state.failError = body.error
      const err = state.rejectOnce[kind]
      if (err) {
        delete state.rejectOnce[kind]
        throw err
      }
      return state.statuses[kind] ?? 'written'
    },
    drain: async () => calls.push('drain'),
    linger: () => calls.push('linger'),
  }
  const registered = new Map(Object.entries(jobs).map(([name, run]) => [name, { name, def: defineJob({ name, run }) }]))
  let runner
  const host = {
    events,
    write: (op) => writer.push(op),
    maxValueBytes: () => 1 << 20,
    persistLogs: () => false,
    progressWritten: () => {},
    workerError: (err, exec, context) => errors.push({ err, context, runId: exec ? exec.id : null }),
    takeCancelEmitted: (id) => runner.takeCancelEmitted(id),
  }
  runner = new Runner({
    engine,
    writer,
    job: (name) => registered.get(name),
    execution: (job, c, tags) => new Execution(host, job, c, tags),
    workerError: host.workerError,
    isClosed: () => state.closed,
    limit,
    claimAhead,
  })
  return { runner, calls, errors, seen, state }
}

describe('lib/runner.js over a fake engine', () => {
  it('executes the runs of a worker message: steps and completion written in order, no separate release', async () => {
    const { runner, calls, seen, errors } = setup({
      j: async (ctx, input) => {
        const a = await ctx.run('a', () => input.n + 1)
        return ctx.run('b', () => a * 10)
      },
    })
    runner.start()
    expect(runner.started).toBe(true)
    runner.onMessage(JSON.stringify({ t: 'runs', runs: [claimed('r1')] }))
    expect(runner.activeCount).toBe(1)
    await runner.settled()
    expect(runner.activeCount).toBe(0)
    expect(calls).toEqual(['start', 'op:step(r1,1,a)', 'op:step(r1,1,b)', 'op:complete(r1,1)'])
    expect(seen).toEqual(['run:start:r1', 'step:start:r1', 'step:complete:r1', 'step:start:r1', 'step:complete:r1', 'run:complete:r1'])
    expect(errors).toEqual([])
  })

  it('hold(): runs claimed while an asynchronous trigger is under way start only after its release (all holds), in order', async () => {
    // On PostgreSQL another connection's poll can claim a run before the trigger's reply reaches JS:
    // triggerAndWait must listen before the job's first log or progress (issue 16).
    const { runner, seen } = setup({ j: async () => 1 })
    runner.start()
    const releaseA = runner.hold()
    const releaseB = runner.hold()
    runner.onMessage(JSON.stringify({ t: 'runs', runs: [claimed('h1')] }))
    runner.onClaimed(JSON.stringify([claimed('h2')]))
    await tick()
    expect(runner.activeCount).toBe(0)
    expect(seen).toEqual([])
    releaseA()
    releaseA() // idempotent: does not release B's hold
    await tick()
    expect(runner.activeCount).toBe(0)
    releaseB()
    expect(runner.activeCount).toBe(2)
    await runner.settled()
    expect(seen.filter((e) => e.startsWith('run:start'))).toEqual(['run:start:h1', 'run:start:h2'])
  })

  it('hold(): a run held while the runner stopped is handed back at the release, not executed', async () => {
    const { runner, calls, seen } = setup({ j: async () => 1 })
    runner.start()
    const release = runner.hold()
    runner.onMessage(JSON.stringify({ t: 'runs', runs: [claimed('h3', 'j', 5)] }))
    runner.started = false // as stop() leaves it
    release()
    await tick()
    expect(seen).toEqual([])
    expect(calls).toContain('op:release(h3,5)')
  })

  it('releases the slot itself when the execution ended without a committed complete/fail op', async () => {
    // The lease was lost at the step write: the execution stops, and only the runner frees the slot.
    const { runner, calls, errors, state } = setup({ j: async (ctx) => ctx.run('a', () => 1) })
    state.statuses.step = 'lost'
    runner.start()
    runner.onMessage(JSON.stringify({ t: 'runs', runs: [claimed('r2', 'j', 4)] }))
    await runner.settled()
    expect(calls).toEqual(['start', 'op:step(r2,4,a)', 'engine.release(r2,4)'])
    expect(errors.map((e) => [e.context, e.err.code])).toEqual([['lease-lost', 'LEASE_LOST']])
  })

  it("a step's write refused as VALUE_TOO_LARGE by the store (the whole batch) fails the run naming the step and size, never re-executed", async () => {
    let calledTimes = 0
    const { runner, calls, seen, state, errors } = setup({
      j: async (ctx) => {
        await ctx.run('big', () => {
          calledTimes++
          return 'x'.repeat(100)
        })
        return 'unreachable'
      },
    })
    state.rejectOnce.step = Object.assign(new Error('string or blob too big'), { code: 'VALUE_TOO_LARGE' })
    runner.start()
    runner.onMessage(JSON.stringify({ t: 'runs', runs: [claimed('t1')] }))
    await runner.settled()
    expect(calledTimes).toBe(1)
    expect(calls).toEqual(['start', 'op:step(t1,1,big)', 'op:step(t1,1,big,failed)', 'op:fail(t1,1)'])
    expect(seen).toEqual(['run:start:t1', 'step:start:t1', 'step:fail:t1', 'run:fail:t1'])
    expect(state.failError).toBe("VALUE_TOO_LARGE: step 'big' returned a value of 102 bytes encoded, over SQLite's length limit")
    expect(errors).toEqual([])
  })

  it('a run of a job not registered here is released at once, not executed', async () => {
    const { runner, calls, seen } = setup({})
    runner.start()
    runner.onMessage(JSON.stringify({ t: 'runs', runs: [claimed('r3', 'other', 2)] }))
    await runner.settled()
    expect(calls).toEqual(['start', 'engine.release(r3,2)'])
    expect(seen).toEqual([])
  })

  it('a run of a job not registered here, claimed ahead, is released when its turn comes, and its slot is given back', async () => {
    const gate = deferred()
    const ran = []
    const { runner, calls } = setup({ j: waitingJob(ran, gate) }, { limit: 1 })
    runner.start()
    runner.onMessage(JSON.stringify({ t: 'runs', runs: [claimed('u1'), claimed('u2', 'other', 3)] }))
    expect(runner.queue.map((q) => q.r.id)).toEqual(['u2'])
    gate.resolve()
    await runner.settled()
    await tick()
    expect(calls).toContain('engine.release(u2,3)')
    expect(ran).toEqual(['u1'])
    expect(runner.executing).toBe(0)
  })

  it('runs reaching a stopped runner (message or flush-claimed) are handed back: release op, then the slot', async () => {
    let ran = 0
    const { runner, calls } = setup({ j: async () => ran++ })
    runner.onMessage(JSON.stringify({ t: 'runs', runs: [claimed('m1', 'j', 3)] }))
    runner.onClaimed(JSON.stringify([claimed('f1', 'j', 5)]))
    expect(calls).toEqual(['op:release(m1,3)']) // the flush-claimed run waits for the microtask queue
    await tick()
    await tick()
    expect(calls.filter((c) => c.includes('m1'))).toEqual(['op:release(m1,3)', 'engine.release(m1,3)'])
    expect(calls.filter((c) => c.includes('f1'))).toEqual(['op:release(f1,5)', 'engine.release(f1,5)'])
    expect(calls).toHaveLength(4)
    expect(ran).toBe(0)
    expect(runner.activeCount).toBe(0)
  })

  it('flush-claimed runs start after the current microtasks, so their predecessors complete first', async () => {
    const order = []
    const { runner } = setup({ j: async () => order.push('executed') })
    runner.start()
    runner.onClaimed(JSON.stringify([claimed('f2')]))
    order.push('same turn')
    await Promise.resolve()
    order.push('after one microtask')
    await runner.settled()
    await tick()
    expect(order).toEqual(['same turn', 'executed', 'after one microtask'])
  })

  it("'lost' messages abort the execution with the matching reason; 'error' and garbage become worker errors", async () => {
    const reasons = []
    const gate = deferred()
    const { runner, errors, seen } = setup({
      j: async (ctx) => {
        ctx.signal.addEventListener('abort', () => reasons.push(ctx.signal.reason))
        await gate.promise
      },
    })
    runner.start()
    runner.onMessage(JSON.stringify({ t: 'runs', runs: [claimed('c'), claimed('t'), claimed('l')] }))
    expect(runner.activeCount).toBe(3)
    runner.onMessage(JSON.stringify({ t: 'lost', id: 'c', reason: 'cancelled' }))
    runner.onMessage(JSON.stringify({ t: 'lost', id: 't', reason: 'timeout' }))
    runner.onMessage(JSON.stringify({ t: 'lost', id: 'l', reason: 'lease' }))
    runner.onMessage(JSON.stringify({ t: 'lost', id: 'unknown', reason: 'cancelled' })) // not ours: ignored
    expect(reasons.map((r) => r.code)).toEqual(['CANCELLED', 'TIMEOUT', 'LEASE_LOST'])
    runner.onMessage(JSON.stringify({ t: 'error', code: 'BUSY', message: 'database is locked', context: 'heartbeat' }))
    runner.onMessage('{not json')
    expect(errors.map((e) => [e.context, e.err.code])).toEqual([
      ['heartbeat', 'BUSY'],
      ['message', undefined],
    ])
    gate.resolve()
    await runner.settled()
    expect(seen.filter((e) => e.startsWith('run:cancel') || e.startsWith('run:fail'))).toEqual(['run:cancel:c', 'run:fail:t'])
  })

  it('ctx.signal, made when first read (issue 19), is one signal for the job and its steps, aborted with the reason even when first read after the abort', async () => {
    const gate = deferred()
    const got = []
    const { runner } = setup({
      j: async (ctx) => {
        await gate.promise // aborted meanwhile, before anything read the signal
        const signal = ctx.signal
        got.push(signal instanceof AbortSignal, signal.aborted, signal.reason?.code, ctx.signal === signal)
      },
      k: async (ctx) => {
        const first = ctx.signal
        const same = await ctx.run('s', (s) => s === first)
        got.push(same, first === ctx.signal, first.aborted)
      },
    })
    runner.start()
    runner.onMessage(JSON.stringify({ t: 'runs', runs: [claimed('a', 'j'), claimed('b', 'k')] }))
    runner.onMessage(JSON.stringify({ t: 'lost', id: 'a', reason: 'cancelled' }))
    gate.resolve()
    await runner.settled()
    expect(got).toEqual([true, true, 'CANCELLED', true, true, true, false])
  })

  it('cancelled(id) aborts a run in flight here once, and its execution does not emit run:cancel again', async () => {
    const gate = deferred()
    const { runner, seen } = setup({ j: async () => gate.promise })
    runner.start()
    runner.onMessage(JSON.stringify({ t: 'runs', runs: [claimed('x')] }))
    runner.cancelled('x')
    runner.cancelled('not-here')
    gate.resolve()
    await runner.settled()
    expect(seen).toEqual(['run:start:x']) // cancel() emitted run:cancel itself
    expect(runner.takeCancelEmitted('x')).toBe(false) // taken by the execution
  })

  it('onClaimed executes the runs a trigger or flush claimed while started, and hands them back once stopped', async () => {
    const { runner, calls } = setup({ j: async () => 1 })
    runner.start()
    runner.onClaimed(JSON.stringify([claimed('s1')]))
    await tick()
    await runner.settled()
    expect(calls).toEqual(['start', 'op:complete(s1,1)'])
    await runner.stop()
    runner.onClaimed(JSON.stringify([claimed('s2')]))
    await tick()
    await runner.settled()
    expect(calls.slice(2)).toEqual(['stop', 'loopAlive', 'drain', 'op:release(s2,1)', 'engine.release(s2,1)'])
  })

  it('startTriggered executes a run its trigger inserted claimed (generation 1, input and labels decoded from the text sent), and hands it back once stopped', async () => {
    const got = []
    const { runner, calls, seen } = setup({ j: async (ctx, input) => got.push(input) })
    runner.start()
    const input = '{"n":{"$t":"BigInt","v":"5"},"d":{"$t":"Date","v":"2020-01-02T00:00:00.000Z"}}'
    runner.startTriggered('s1', 'j', input, '{"team":"a"}', '2020-01-01T00:00:00.000Z')
    expect(got, 'after the continuations already queued').toEqual([])
    await tick()
    await runner.settled()
    expect(got).toEqual([{ n: 5n, d: new Date('2020-01-02T00:00:00.000Z') }])
    expect(calls).toEqual(['start', 'op:complete(s1,1)'])
    expect(seen).toEqual(['run:start:s1', 'run:complete:s1'])
    await runner.stop()
    runner.startTriggered('s2', 'j', '{}', '{}', '2020-01-01T00:00:00.000Z')
    await tick()
    await runner.settled()
    expect(calls.slice(2)).toEqual(['stop', 'loopAlive', 'drain', 'op:release(s2,1)', 'engine.release(s2,1)'])
    expect(got).toHaveLength(1)
  })

  it('processNext claims one run and resolves true once it ran; false when none was pending', async () => {
    const { runner, calls, state } = setup({ j: async (ctx) => ctx.run('only', () => 'x') })
    expect(await runner.processNext()).toBe(false)
    state.claim = JSON.stringify([claimed('p1')])
    expect(await runner.processNext()).toBe(true)
    expect(calls).toEqual(['claim(1)', 'claim(1)', 'op:step(p1,1,only)', 'op:complete(p1,1)'])
    expect(runner.activeCount).toBe(0)
  })

  it('stop() stops the loop, waits until it exited and the runs in flight finished, then drains the writer', async () => {
    const gate = deferred()
    const { runner, calls, state } = setup({ j: async () => gate.promise })
    runner.start()
    runner.onMessage(JSON.stringify({ t: 'runs', runs: [claimed('g')] }))
    state.loopAliveFor = 2
    let stopped = false
    const stopping = runner.stop().then(() => (stopped = true))
    await state.loopExited.promise
    for (let i = 0; i < 10; i++) await tick()
    expect(runner.started).toBe(false)
    expect(stopped).toBe(false) // the run is still in flight
    expect(calls).toEqual(['start', 'stop', 'loopAlive', 'loopAlive', 'loopAlive'])
    gate.resolve()
    await stopping
    expect(calls.slice(5)).toEqual(['op:complete(g,1)', 'drain'])
    expect(runner.activeCount).toBe(0)
  })

  it('stop({ abort: true }) abandons a hung execution at once: signal STOPPED, run handed back, nothing stored after', async () => {
    const step = deferred()
    let signalReason = null
    let after = false
    const { runner, calls } = setup({
      j: async (ctx) => {
        ctx.signal.addEventListener('abort', () => (signalReason = ctx.signal.reason))
        await ctx.run('hang', () => step.promise)
        after = true
      },
    })
    runner.start()
    runner.onMessage(JSON.stringify({ t: 'runs', runs: [claimed('h', 'j', 7)] }))
    await runner.stop({ abort: true })
    expect(signalReason).toBe(STOPPED)
    expect(runner.activeCount).toBe(0)
    expect(calls).toEqual(['start', 'stop', 'loopAlive', 'op:release(h,7)', 'engine.release(h,7)', 'drain'])
    step.resolve('late')
    for (let i = 0; i < 5; i++) await tick()
    expect(after).toBe(false) // the job function does not go on
    expect(calls).toHaveLength(6) // the late step is not written
  })

  it('stop({ timeout }) lets a quick run finish and hands back the one still running after the timeout', async () => {
    const { runner, calls } = setup({
      quick: async () => 'ok',
      slow: async (ctx) => ctx.run('forever', () => new Promise(() => {})),
    })
    runner.start()
    runner.onMessage(JSON.stringify({ t: 'runs', runs: [claimed('q', 'quick'), claimed('s', 'slow', 2)] }))
    await runner.stop({ timeout: 30 })
    expect(calls).toContain('op:complete(q,1)')
    expect(calls.slice(-3)).toEqual(['op:release(s,2)', 'engine.release(s,2)', 'drain'])
    expect(calls.filter((c) => c.includes('(s,'))).toEqual(['op:release(s,2)', 'engine.release(s,2)']) // its step never written
    expect(runner.activeCount).toBe(0)
  })

  it('once the instance is closed, messages are ignored and wake() does not reach the engine', async () => {
    const { runner, calls, state } = setup({ j: async () => 1 })
    runner.start()
    state.closed = true
    runner.onMessage(JSON.stringify({ t: 'runs', runs: [claimed('z')] }))
    runner.wake()
    expect(calls).toEqual(['start'])
    state.closed = false
    runner.wake()
    expect(calls).toEqual(['start', 'wake'])
  })

  // ---- runs claimed ahead (WorkerConfig::claim_ahead) -------------------------

  it('claimed ahead: beyond maxConcurrentRuns a run waits; it starts when a job function ends, its flush lingering for it', async () => {
    const gates = { a1: deferred(), a2: deferred(), a3: deferred(), a4: deferred() }
    let executing = 0
    let most = 0
    const { runner, calls, seen } = setup(
      {
        j: async (ctx) => {
          most = Math.max(most, ++executing)
          await gates[ctx.runId].promise
          executing--
          return ctx.runId
        },
      },
      { limit: 1 },
    )
    runner.start()
    runner.onMessage(JSON.stringify({ t: 'runs', runs: [claimed('a1'), claimed('a2'), claimed('a3')] }))
    expect(runner.activeCount).toBe(1)
    expect(runner.queue.map((q) => q.r.id)).toEqual(['a2', 'a3'])
    gates.a1.resolve()
    await tick()
    // a1's completion was queued, the flush told to linger, then a2 started (a3 still waits)
    expect(calls.slice(calls.indexOf('op:complete(a1,1)'))).toEqual(['op:complete(a1,1)', 'linger'])
    expect(seen.filter((e) => e.startsWith('run:start'))).toEqual(['run:start:a1', 'run:start:a2'])
    expect(runner.queue.map((q) => q.r.id)).toEqual(['a3'])
    gates.a2.resolve()
    gates.a3.resolve()
    await runner.settled()
    await tick()
    expect(most).toBe(1)
    expect(seen.filter((e) => e.startsWith('run:complete'))).toEqual(['run:complete:a1', 'run:complete:a2', 'run:complete:a3'])
    expect(runner.queue).toEqual([])
    // every slot given back: a run arriving now starts at once
    expect(runner.executing).toBe(0)
    runner.onMessage(JSON.stringify({ t: 'runs', runs: [claimed('a4')] }))
    expect(runner.activeCount).toBe(1)
    expect(runner.queue).toEqual([])
    gates.a4.resolve()
    await runner.settled()
    expect(runner.executing).toBe(0)
  })

  it('claimed ahead: one that waited 20 ms for a slot is handed back (release op, then the slot), never executed; claiming ahead turns off first', async () => {
    const gate = deferred()
    const ran = []
    const { runner, calls } = setup(
      { j: waitingJob(ran, gate) },
      { limit: 1, claimAhead: true },
    )
    runner.aheadOn = true // (as after a quick run)
    runner.start()
    runner.onMessage(JSON.stringify({ t: 'runs', runs: [claimed('long'), claimed('b1', 'j', 7)] }))
    await new Promise((r) => setTimeout(r, 10))
    expect(calls.some((c) => c.includes('b1'))).toBe(false) // still waiting
    await new Promise((r) => setTimeout(r, 40))
    // The hand-back's flush ends a run: with claiming ahead still on it would claim this one again.
    expect(calls.filter((c) => c.includes('b1') || c.startsWith('ahead'))).toEqual(['ahead(false)', 'op:release(b1,7)', 'engine.release(b1,7)'])
    expect(runner.queue).toEqual([])
    gate.resolve()
    await runner.settled()
    expect(ran).toEqual(['long'])
  })

  it('claimed ahead: cancel() and a lost lease take a waiting run out (its slot released); stop() hands back the rest', async () => {
    const gate = deferred()
    const ran = []
    const { runner, calls } = setup(
      { j: waitingJob(ran, gate) },
      { limit: 1 },
    )
    runner.start()
    const runs = [claimed('x0'), claimed('c1', 'j', 2), claimed('l1', 'j', 3), claimed('s1', 'j', 4)]
    runner.onMessage(JSON.stringify({ t: 'runs', runs }))
    runner.cancelled('c1')
    runner.onMessage(JSON.stringify({ t: 'lost', id: 'l1', reason: 'lost' }))
    expect(calls.filter((c) => c.startsWith('engine.release'))).toEqual(['engine.release(c1,2)', 'engine.release(l1,3)'])
    expect(runner.queue.map((q) => q.r.id)).toEqual(['s1'])
    const stopped = runner.stop()
    await tick()
    await tick()
    expect(calls.filter((c) => c.includes('s1'))).toEqual(['op:release(s1,4)', 'engine.release(s1,4)'])
    gate.resolve()
    await stopped
    expect(ran).toEqual(['x0']) // the running one finished; nothing waiting was executed
  })

  it('a run timed out (its slot freed by the engine at once) no longer counts: the next run starts while its job function still hangs', async () => {
    const hung = deferred()
    const ran = []
    const { runner } = setup(
      {
        j: async (ctx) => {
          ran.push(ctx.runId)
          if (ctx.runId === 't1') await hung.promise // ignores its signal
        },
      },
      { limit: 1 },
    )
    runner.start()
    runner.onMessage(JSON.stringify({ t: 'runs', runs: [claimed('t1')] }))
    runner.onMessage(JSON.stringify({ t: 'runs', runs: [claimed('t2')] })) // (the engine's freed slot)
    expect(ran).toEqual(['t1'])
    runner.onMessage(JSON.stringify({ t: 'lost', id: 't1', reason: 'timeout' }))
    await tick()
    expect(ran).toEqual(['t1', 't2'])
    hung.resolve()
    await runner.settled()
  })

  it('claimed ahead: turned on while runs end within 20 ms, off after one that took longer', async () => {
    const { runner, calls } = setup(
      {
        quick: async () => 1,
        slow: async () => new Promise((r) => setTimeout(r, 30)),
      },
      { limit: 1, claimAhead: true },
    )
    runner.start()
    const ahead = () => calls.filter((c) => c.startsWith('ahead'))
    runner.onMessage(JSON.stringify({ t: 'runs', runs: [claimed('q1', 'quick')] }))
    await runner.settled()
    expect(ahead()).toEqual(['ahead(true)'])
    runner.onMessage(JSON.stringify({ t: 'runs', runs: [claimed('q2', 'quick')] }))
    await runner.settled()
    expect(ahead()).toEqual(['ahead(true)']) // told only when it changes
    runner.onMessage(JSON.stringify({ t: 'runs', runs: [claimed('s1', 'slow')] }))
    await runner.settled()
    expect(ahead()).toEqual(['ahead(true)', 'ahead(false)'])
  })

  it('claimed ahead: an engine that cannot claim ahead (PostgreSQL) is never told to', async () => {
    const { runner, calls } = setup({ quick: async () => 1 }, { limit: 1 })
    runner.start()
    runner.onMessage(JSON.stringify({ t: 'runs', runs: [claimed('q1', 'quick')] }))
    await runner.settled()
    expect(calls.some((c) => c.startsWith('ahead'))).toBe(false)
  })
})

