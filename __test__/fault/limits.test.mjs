// Issue 13, item 3: values too large to store. A step result or output over
// `maxValueBytes` (or over SQLite's own length limit) fails its run with
// VALUE_TOO_LARGE naming the step and the size — it must never leave the run
// `running` to be executed again every stale period. Inputs over the limit
// are refused at trigger. SQLite's limit (~1 GB) is lowered for the test
// through DURABLY_TEST_SQLITE_MAX_LENGTH in a child process.
import path from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { defineJob, ValidationError, createDurably } from '../../index.js'
import helpers from '../helpers.js'
import { exitWithin, fixture } from './util.mjs'

const { makeDurably, closeAll, tempDir, spawnNode, sleep } = helpers

afterEach(closeAll)

function sizedJob(calls) {
  return defineJob({
    name: 'sized',
    run: async (ctx, input) => {
      calls.push(input.kind)
      await ctx.run('first', () => 'ok')
      if (input.kind === 'step') await ctx.run('big', () => input.char.repeat(input.n))
      if (input.kind === 'output') return input.char.repeat(input.n)
      return 'small'
    },
  })
}

describe('maxValueBytes', () => {
  it('is validated like the other options', () => {
    for (const bad of [0, -1, 1.5, '64MB', null]) {
      expect(() => createDurably({ path: ':memory:', maxValueBytes: bad })).toThrow(/maxValueBytes/)
    }
  })

  it('refuses an input over it at trigger, writing nothing', async () => {
    const d = makeDurably({ maxValueBytes: 1000, jobs: { sized: sizedJob([]) } })
    await d.migrate()
    const err = await d.jobs.sized.trigger({ kind: 'small', pad: 'x'.repeat(2000) }).catch((e) => e)
    expect(err).toBeInstanceOf(ValidationError)
    expect(err.message).toMatch(/input for job 'sized' is \d+ bytes encoded, over maxValueBytes \(1000\)/)
    const batchErr = await d.jobs.sized
      .batchTrigger([{ input: { kind: 'small' } }, { input: { kind: 'small', pad: 'x'.repeat(2000) } }])
      .catch((e) => e)
    expect(batchErr).toBeInstanceOf(ValidationError)
    expect(batchErr.message).toMatch(/item 1: .*maxValueBytes/)
    expect(await d.getRuns()).toEqual([])
    // Counted in UTF-8 bytes: 600 'é' are 1,200 bytes.
    const multi = await d.jobs.sized.trigger({ kind: 'small', pad: 'é'.repeat(600) }).catch((e) => e)
    expect(multi).toBeInstanceOf(ValidationError)
    expect((await d.jobs.sized.trigger({ kind: 'small', pad: 'x'.repeat(500) })).status).toBe('pending')
  })

  it('fails the run with VALUE_TOO_LARGE when a step result is over it, once and for good', async () => {
    const calls = []
    const d = makeDurably({ maxValueBytes: 10_000, staleThreshold: 300, heartbeatInterval: 100, jobs: { sized: sizedJob(calls) } })
    const fails = []
    d.on('run:fail', (e) => fails.push(e))
    await d.init()
    const run = await d.jobs.sized.trigger({ kind: 'step', char: 'é', n: 6000 }) // 12,002 bytes encoded
    const err = await d.waitForRun(run.id, { timeout: 10_000 }).catch((e) => e)
    expect(err.message).toMatch(/^VALUE_TOO_LARGE: step 'big' returned a value of 12002 bytes encoded, over maxValueBytes \(10000\)/)
    await sleep(900) // three stale periods: a run left running would be executed again
    const stored = await d.getRun(run.id)
    expect(stored.status).toBe('failed')
    expect(stored.error).toMatch(/^VALUE_TOO_LARGE: step 'big'/)
    expect((await d.getSteps(run.id)).map((s) => [s.name, s.status, s.output])).toEqual([
      ['first', 'completed', 'ok'],
      ['big', 'failed', null],
    ])
    expect(fails.map((e) => e.failedStepName)).toEqual(['big'])
    expect(calls).toEqual(['step'])
  })

  it('fails the run with VALUE_TOO_LARGE when its output is over it', async () => {
    const calls = []
    const d = makeDurably({ maxValueBytes: 10_000, jobs: { sized: sizedJob(calls) } })
    await d.init()
    const run = await d.jobs.sized.trigger({ kind: 'output', char: 'x', n: 20_000 })
    const err = await d.waitForRun(run.id, { timeout: 10_000 }).catch((e) => e)
    expect(err.message).toMatch(/^VALUE_TOO_LARGE: job 'sized' returned an output of 20002 bytes encoded, over maxValueBytes/)
    expect((await d.getRun(run.id)).status).toBe('failed')
    // A value just under the limit is stored.
    const ok = await d.jobs.sized.triggerAndWait({ kind: 'output', char: 'x', n: 9_000 })
    expect(ok.output).toBe('x'.repeat(9_000))
    expect(calls).toEqual(['output', 'output'])
  })
})

describe("SQLite's own length limit", () => {
  it('a value SQLite refuses fails its run (VALUE_TOO_LARGE), never re-executed; other runs in the same batches complete', async () => {
    const db = path.join(tempDir('durably-limits-'), 'limit.db')
    // Limit 300,000 bytes; values of 400,000 (maxValueBytes stays at its 64 MB default).
    const w = spawnNode(fixture('stress-toobig.js'), [db], {
      env: { DURABLY_TEST_SQLITE_MAX_LENGTH: '300000', STRESS_VALUE_SIZE: '400000' },
    })
    const ex = await exitWithin(w, 30_000)
    expect(ex && ex.code, `${w.lines.join('\n')}\n${w.stderr()}`).toBe(0)
    const res = JSON.parse(w.lines.at(-1))
    const [step, small1, output, small2] = res.runs
    expect(step.status).toBe('failed')
    expect(step.error).toMatch(/^VALUE_TOO_LARGE: step 'huge' returned a value of 400002 bytes encoded, over SQLite's length limit/)
    expect(step.steps).toEqual([
      ['before', 'completed'],
      ['huge', 'failed'],
    ])
    expect(output.status).toBe('failed')
    expect(output.error).toMatch(/^VALUE_TOO_LARGE: job 'toobig' returned an output of 400002 bytes encoded, over SQLite's length limit/)
    for (const s of [small1, small2]) {
      expect(s.status).toBe('completed')
      expect(s.steps).toEqual([
        ['before', 'completed'],
        ['after', 'completed'],
      ])
    }
    expect(res.executions).toEqual({ 'step-': 1, 'small-1': 1, 'output-': 1, 'small-2': 1 })
    expect(res.errors).toEqual([])
    // An input over SQLite's limit (under maxValueBytes) is refused with the same code.
    expect(res.triggerError).toBe('VALUE_TOO_LARGE')
  }, 40_000)
})

describe('a big value costs its own write and nothing after it', () => {
  it('the log is checkpointed and cut back right after an 80 MB step, not left for the steps after it', async () => {
    const fs = await import('node:fs')
    const big = defineJob({
      name: 'big-then-small',
      run: async (ctx) => {
        const v = await ctx.run('big', () => 'x'.repeat(80 * 1024 * 1024))
        for (let i = 0; i < 5; i++) await ctx.run(`small-${i}`, () => i)
        return v.length
      },
    })
    const d = makeDurably({ maxValueBytes: 96 * 1024 * 1024, jobs: { big } })
    await d.init()
    const r = await d.jobs.big.triggerAndWait({}, { timeout: 60_000 })
    expect(r.output).toBe(80 * 1024 * 1024)
    // journal_size_limit is 64 MB: a log restarted by the checkpoint after the big
    // write is cut back at the next commit; left alone it stays over 80 MB.
    const wal = fs.statSync(`${d._options.path}-wal`).size
    expect(wal).toBeLessThanOrEqual(65 * 1024 * 1024)
    expect((await d.getSteps(r.id)).map((s) => s.name)).toEqual(['big', 'small-0', 'small-1', 'small-2', 'small-3', 'small-4'])
  }, 90_000)
})
