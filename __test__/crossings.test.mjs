// Issue 19: what a run costs at the JS ↔ Rust boundary. Counted on the
// binding's Engine class (every instance in this test process): a one-step run
// is two commits (its step; its completion, which also frees its slot and
// claims its successor) and no separate release() call; a run that ends
// without a committed completion (cancelled) still releases its slot.
import { createRequire } from 'node:module'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { z } from 'zod'
import { defineJob } from '../index.js'
import helpers from './helpers.js'

const { makeDurably, closeAll, until } = helpers
const require = createRequire(import.meta.url)
const { Engine } = require('../binding.js')

const COUNTED = ['flush', 'flushAsync', 'release', 'tryClaim', 'claim', 'wake']
let calls
const originals = {}
beforeEach(() => {
  calls = Object.fromEntries(COUNTED.map((k) => [k, 0]))
  for (const k of COUNTED) {
    originals[k] = Engine.prototype[k]
    Engine.prototype[k] = function (...args) {
      calls[k]++
      return originals[k].apply(this, args)
    }
  }
})
afterEach(async () => {
  await closeAll()
  for (const k of COUNTED) Engine.prototype[k] = originals[k]
})

function oneStep(name, run) {
  return defineJob({ name, input: z.object({ i: z.number() }), run })
}

describe('boundary crossings per run', () => {
  it('a completed one-step run: at most two flushes, no release; the slots still turn over', async () => {
    const job = oneStep('one', async (ctx, input) => ctx.run('s', () => input.i * 2))
    const d = makeDurably({ maxConcurrentRuns: 2, jobs: { job } })
    await d.migrate()
    const n = 30
    const runs = await d.jobs.job.batchTrigger(Array.from({ length: n }, (_, i) => ({ input: { i } })))
    let done = 0
    d.on('run:complete', () => done++)
    for (const k of COUNTED) calls[k] = 0
    await d.start()
    await until(() => done === n, { what: `${n} runs complete`, timeout: 20_000 })
    for (const r of runs) expect((await d.getRun(r.id)).status).toBe('completed')
    expect(calls.release).toBe(0)
    expect(calls.flush + calls.flushAsync).toBeLessThanOrEqual(2 * n)
  })

  it('a failed run frees its slot with its failure commit: the next run starts, no release', async () => {
    const job = oneStep('fails', async (ctx, input) => {
      await ctx.run('s', () => {
        if (input.i === 0) throw new Error('boom')
        return input.i
      })
    })
    const d = makeDurably({ maxConcurrentRuns: 1, jobs: { job } })
    await d.migrate()
    const [a, b] = await d.jobs.job.batchTrigger([{ input: { i: 0 } }, { input: { i: 1 } }])
    for (const k of COUNTED) calls[k] = 0
    await d.start()
    await until(async () => (await d.getRun(b.id)).status === 'completed', { what: 'the second run' })
    expect((await d.getRun(a.id)).status).toBe('failed')
    expect(calls.release).toBe(0)
  })

  it('a cancelled run, which commits no completion, releases its slot: the next run starts', async () => {
    let entered
    const inStep = new Promise((r) => (entered = r))
    const job = oneStep('cancel', async (ctx, input) => {
      await ctx.run('s', async () => {
        if (input.i !== 0) return input.i
        entered()
        await new Promise((resolve) => ctx.signal.addEventListener('abort', resolve))
        return 0
      })
    })
    const d = makeDurably({ maxConcurrentRuns: 1, jobs: { job } })
    await d.migrate()
    const [a, b] = await d.jobs.job.batchTrigger([{ input: { i: 0 } }, { input: { i: 1 } }])
    await d.start()
    await inStep
    for (const k of COUNTED) calls[k] = 0
    await d.cancel(a.id)
    await until(async () => (await d.getRun(b.id)).status === 'completed', { what: 'the run after the cancelled one' })
    expect((await d.getRun(a.id)).status).toBe('cancelled')
    expect(calls.release).toBe(1)
  })
})
