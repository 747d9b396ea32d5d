// Run management, events, records and values fixes (issue 12): retrigger of an
// active run, empty filters, skippedLabels, a labels schema, onError and
// worker:error contexts, completedStepCount and event sequences, reserved job
// keys, giant sparse arrays, integer durations, runId in HTTP action bodies.
import { afterEach, describe, expect, it } from 'vitest'
import { createRequire } from 'node:module'
import { z } from 'zod'
import { holdWriteLock } from './fault/util.mjs'

const require = createRequire(import.meta.url)
const { createDurably, defineJob, createDurablyHandler, ConflictError, ValidationError } = require('..')
const { makeDurably, closeAll, tempDb, testStore, storeSql, onPostgres, until, sleep, sql } = require('./helpers.js')

afterEach(closeAll)

function gate() {
  let open
  const promise = new Promise((r) => (open = r))
  return { promise, open }
}

const post = (handler, path, body) =>
  handler.handle(
    new Request(`http://x/api${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    }),
    '/api',
  )

describe('run management', () => {
  it('retrigger() and POST /retrigger of a pending or running run → ConflictError / 409; terminal runs retrigger', async () => {
    const g = gate()
    const job = defineJob({ name: 'gated', run: async (ctx) => ctx.run('wait', () => g.promise) })
    const d = makeDurably({ jobs: { job } })
    const handler = createDurablyHandler(d)
    const pending = await d.jobs.job.trigger(undefined)
    await expect(d.retrigger(pending.id)).rejects.toBeInstanceOf(ConflictError)
    const res = await post(handler, `/retrigger?runId=${pending.id}`)
    expect(res.status).toBe(409)
    expect((await res.json()).error).toMatch(/pending/)

    const started = new Promise((r) => d.on('step:start', r))
    await d.start()
    await started
    await expect(d.retrigger(pending.id)).rejects.toMatchObject({ code: 'CONFLICT', message: /running/ })
    expect((await post(handler, `/retrigger?runId=${pending.id}`)).status).toBe(409)
    expect((await d.getRuns()).length).toBe(1) // nothing created

    g.open()
    await d.waitForRun(pending.id, { timeout: 10_000 })
    const again = await d.retrigger(pending.id)
    expect(again.id).not.toBe(pending.id)
  })

  it('getRuns with an empty status or jobName list applies no filter', async () => {
    const job = defineJob({ name: 'j', run: async () => 1 })
    const d = makeDurably({ jobs: { job } })
    await d.jobs.job.trigger(1)
    await d.jobs.job.trigger(2)
    expect((await d.getRuns({ status: [] })).length).toBe(2)
    expect((await d.getRuns({ jobName: [] })).length).toBe(2)
    expect((await d.getRuns({ status: ['completed'] })).length).toBe(0)
  })

  it('run:coalesced carries skippedLabels next to skippedInput', async () => {
    const job = defineJob({ name: 'c', run: async () => 1 })
    const d = makeDurably({ jobs: { job } })
    const seen = []
    d.on('run:coalesced', (e) => seen.push([e.skippedInput, e.skippedLabels, e.labels]))
    await d.jobs.job.trigger(1, { concurrencyKey: 'k', labels: { who: 'first' } })
    const r = await d.jobs.job.trigger(2, { concurrencyKey: 'k', coalesce: 'skip', labels: { who: 'second' } })
    expect(r.disposition).toBe('coalesced')
    expect(seen).toEqual([[2, { who: 'second' }, { who: 'first' }]])
  })
})

describe('a labels schema on createDurably', () => {
  const labels = z.object({ tenant: z.string().min(1).transform((s) => s.toLowerCase()) })
  const job = defineJob({ name: 'labelled', run: async () => 'ok' })

  it('validates labels at trigger, batchTrigger, retrigger and the HTTP trigger; nothing written when invalid', async () => {
    const store = testStore()
    const d = makeDurably({ ...store, jobs: { job }, labels })
    const bad = await d.jobs.job.trigger(undefined, { labels: { tenant: '' } }).catch((e) => e)
    expect(bad).toBeInstanceOf(ValidationError)
    expect(bad.message).toMatch(/labels/)
    expect(bad.message).toMatch(/tenant/)
    // Omitted labels are validated as {}: a required key makes them required.
    await expect(d.jobs.job.trigger(undefined)).rejects.toBeInstanceOf(ValidationError)
    await expect(
      d.jobs.job.batchTrigger([{ input: 1, options: { labels: { tenant: 'a' } } }, { input: 2, options: { labels: {} } }]),
    ).rejects.toMatchObject({ code: 'VALIDATION_ERROR', message: /item 1/ })
    const res = await post(createDurablyHandler(d), '/trigger', { jobName: 'labelled', labels: { tenant: '' } })
    expect(res.status).toBe(400)
    expect(storeSql(d, 'SELECT COUNT(*) FROM runs')).toEqual([[0]])

    // Valid labels are stored as the schema returns them.
    const ok = await d.jobs.job.trigger(undefined, { labels: { tenant: 'ACME' } })
    expect(ok.labels).toEqual({ tenant: 'acme' })
    expect((await d.getRun(ok.id)).labels).toEqual({ tenant: 'acme' })

    // A run written without the schema (another process, older code) is re-validated on retrigger.
    const loose = makeDurably({ ...store, jobs: { job } })
    const old = await loose.jobs.job.trigger(undefined, { labels: { tenant: '' } })
    await loose.cancel(old.id)
    await expect(d.retrigger(old.id)).rejects.toBeInstanceOf(ValidationError)
    expect(storeSql(d, 'SELECT COUNT(*) FROM runs')).toEqual([[2]])
  })

  it('refuses a labels option that is not a Standard Schema', () => {
    expect(() => createDurably({ path: tempDb(), labels: { tenant: 'x' } })).toThrow(/option labels must be a Standard Schema/)
  })
})

describe('events', () => {
  it('onError(fn) is on("worker:error", fn) and returns the unsubscribe; a throwing listener is context "listener"', async () => {
    const job = defineJob({ name: 'e', run: async (ctx) => ctx.run('s', () => 1) })
    const d = makeDurably({ jobs: { job } })
    const errors = []
    const off = d.onError((e) => errors.push([e.context, e.error.message, e.jobName]))
    d.on('step:complete', () => {
      throw new Error('listener bug')
    })
    await d.init()
    await d.jobs.job.triggerAndWait(undefined, { timeout: 10_000 })
    expect(errors).toEqual([['listener', 'listener bug', 'e']])
    off()
    await d.jobs.job.triggerAndWait(undefined, { timeout: 10_000 })
    expect(errors.length).toBe(1)
  })

  // SQLite only: another connection holds the file's write lock.
  it.skipIf(onPostgres)('a claim that fails on a locked database is a worker:error with context "claim"', async () => {
    const db = tempDb()
    const job = defineJob({ name: 'locked', run: async () => 1 })
    const d = makeDurably({ path: db, jobs: { job }, busyTimeout: 50 })
    const errors = []
    d.onError((e) => errors.push(`${e.context} ${e.error.code}`))
    const run = await d.jobs.job.trigger(undefined)
    const holder = holdWriteLock(db, 1000)
    await holder.locked
    await d.start()
    await until(() => errors.length > 0, { what: 'a worker error' })
    expect(errors[0]).toBe('claim DB_BUSY')
    await holder.released
    expect((await d.waitForRun(run.id, { timeout: 10_000 })).status).toBe('completed')
  })

  // SQLite only: another connection holds the file's write lock.
  it.skipIf(onPostgres)('a step write that fails on a locked database is a worker:error with context "step-write"', async () => {
    const db = tempDb()
    const g = gate()
    const job = defineJob({ name: 'write', run: async (ctx) => ctx.run('s', () => g.promise) })
    const d = makeDurably({ path: db, jobs: { job }, busyTimeout: 50 })
    const errors = []
    d.onError((e) => errors.push(`${e.context} ${e.error.code}`))
    await d.init()
    const started = new Promise((r) => d.on('step:start', r))
    const run = await d.jobs.job.trigger(undefined)
    await started
    const holder = holdWriteLock(db, 1000)
    await holder.locked
    g.open('late')
    await until(() => errors.some((e) => e.startsWith('step-write')), { what: 'the step write to fail' })
    expect(errors).toContain('step-write DB_BUSY')
    for (const e of errors) expect(e).toMatch(/^(step-write|heartbeat|claim|recover|checkpoint) DB_BUSY$/)
    await holder.released
    // The run stays running until its heartbeat is stale, then resumes (staleThreshold 1000 ms).
    expect((await d.waitForRun(run.id, { timeout: 15_000 })).status).toBe('completed')
  })

  it('events carry a per-instance increasing sequence; durations are integer ms', async () => {
    const job = defineJob({
      name: 'seq',
      run: async (ctx) => {
        await ctx.run('a', () => sleep(3))
        ctx.log.info('between')
        await ctx.run('b', () => sleep(2))
      },
    })
    const d = makeDurably({ jobs: { job } })
    const events = []
    for (const t of ['run:trigger', 'run:start', 'step:start', 'step:complete', 'log:write', 'run:complete']) d.on(t, (e) => events.push(e))
    await d.init()
    await d.jobs.job.triggerAndWait(undefined, { timeout: 10_000 })
    await d.jobs.job.triggerAndWait(undefined, { timeout: 10_000 })
    const seqs = events.map((e) => e.sequence)
    expect(seqs.every(Number.isInteger)).toBe(true)
    expect(seqs).toEqual([...seqs].sort((a, b) => a - b))
    expect(new Set(seqs).size).toBe(seqs.length)
    const durations = events.filter((e) => e.type === 'step:complete' || e.type === 'run:complete').map((e) => e.duration)
    expect(durations.length).toBe(6)
    for (const ms of durations) expect(Number.isInteger(ms) && ms >= 0).toBe(true)
  })
})

describe('job context', () => {
  it('ctx methods work detached from ctx: const { run, progress, log: { info, warn, error } } = ctx', async () => {
    const job = defineJob({
      name: 'detached',
      run: async (ctx) => {
        const { run, progress, log, runId } = ctx
        const { info, warn, error } = log
        info('one', { n: 1 })
        const a = await run('a', () => 2)
        warn('two')
        progress(1, 2, 'half')
        error('three')
        return { a, runId }
      },
    })
    const d = makeDurably({ jobs: { job } })
    const lines = []
    d.on('log:write', (e) => lines.push([e.level, e.message, e.data]))
    await d.init()
    const run = await d.jobs.job.trigger(undefined)
    const done = await d.waitForRun(run.id, { timeout: 10_000 })
    expect(done.output).toEqual({ a: 2, runId: run.id })
    expect(done.progress).toEqual({ current: 1, total: 2, message: 'half' })
    expect(lines).toEqual([
      ['info', 'one', { n: 1 }],
      ['warn', 'two', null],
      ['error', 'three', null],
    ])
  })
})

describe('run records', () => {
  it('completedStepCount counts the completed steps, in every record shape', async () => {
    const job = defineJob({
      name: 'count',
      run: async (ctx, fail) => {
        await ctx.run('a', () => 1)
        await ctx.run('b', () => 2)
        if (fail) await ctx.run('c', () => { throw new Error('no') })
      },
    })
    const d = makeDurably({ jobs: { job } })
    await d.init()
    const fresh = await d.jobs.job.trigger(false)
    expect(fresh.completedStepCount).toBe(0)
    await d.waitForRun(fresh.id, { timeout: 10_000 })
    expect((await d.getRun(fresh.id)).completedStepCount).toBe(2)
    const failed = await d.jobs.job.trigger(true)
    await d.waitForRun(failed.id, { timeout: 10_000 }).catch(() => {})
    expect((await d.getRun(failed.id)).completedStepCount).toBe(2)
    expect((await d.retry(failed.id)).completedStepCount).toBe(2)
    expect((await d.getRuns()).map((r) => r.completedStepCount)).toEqual([2, 2])
  })
})

describe('job keys', () => {
  it("'__proto__' as a job key is refused; durably.jobs keeps its prototype", () => {
    const job = defineJob({ name: 'p', run: async () => 1 })
    expect(() => createDurably({ path: tempDb(), jobs: { ['__proto__']: job } })).toThrow(ValidationError)
    expect(() => createDurably({ path: tempDb(), jobs: JSON.parse('{"__proto__": 1}') })).toThrow(/__proto__/)
    expect(() => createDurably({ path: tempDb(), jobs: { __proto__: job } })).toThrow(/prototype/)
    const d = makeDurably()
    expect(() => d.register({ ['__proto__']: job })).toThrow(/__proto__/)
    expect(() => d.defineJob({ name: '__proto__' }, async () => 1)).toThrow(/__proto__/)
    expect(Object.getPrototypeOf(d.jobs)).toBe(Object.prototype)
    expect(d.getJob('p')).toBeUndefined()
  })
})

describe('waitForRun and triggerAndWait options', () => {
  it('a callback that is not a function, a bad timeout, an unknown option: ValidationError naming it, nothing triggered', async () => {
    const job = defineJob({ name: 'job', run: async (ctx, input) => input })
    const d = makeDurably({ jobs: { job } })
    await d.start()
    const run = await d.jobs.job.trigger(1)
    await d.waitForRun(run.id, { timeout: 10_000 })
    const bad = [
      [{ onLog: 5 }, /onLog must be a function \(got number\)/],
      [{ onProgress: 'x' }, /onProgress must be a function \(got string\)/],
      [{ onProgress: null }, /onProgress must be a function \(got null\)/],
      [{ timeout: -1 }, /timeout must be an integer/],
      [{ timeout: 2 ** 31 }, /timeout must be an integer number of ms from 0 to 2147483647/],
      [{ timeout: 1.5 }, /timeout/],
      ['fast', /options must be an object/],
    ]
    for (const [options, message] of bad) {
      await expect(d.waitForRun(run.id, options)).rejects.toMatchObject({ code: 'VALIDATION_ERROR', message: /^waitForRun: / })
      await expect(d.waitForRun(run.id, options)).rejects.toThrow(message)
      await expect(d.jobs.job.triggerAndWait(2, options)).rejects.toMatchObject({ code: 'VALIDATION_ERROR', message: /^triggerAndWait: / })
      await expect(d.jobs.job.triggerAndWait(2, options)).rejects.toThrow(message)
    }
    // A typo is named (triggerAndWait's other options are trigger's: refused there).
    await expect(d.waitForRun(run.id, { onlog: () => {} })).rejects.toThrow(/waitForRun: unknown option onlog \(known: timeout, onProgress, onLog\)/)
    await expect(d.jobs.job.triggerAndWait(2, { onlog: () => {} })).rejects.toThrow(/unknown trigger option onlog/)
    expect((await d.getRuns({ jobName: 'job' })).map((r) => r.id)).toEqual([run.id])
    // The good ones still work.
    expect((await d.waitForRun(run.id, { timeout: 2 ** 31 - 1, onLog: undefined })).output).toBe(1)
    expect((await d.jobs.job.triggerAndWait(3, { timeout: 10_000, onLog: () => {}, onProgress: () => {} })).output).toBe(3)
  })
})

describe('giant values', () => {
  it('a step returning a sparse array of length 2**32-1 fails fast with ValidationError naming the path', async () => {
    const job = defineJob({
      name: 'sparse',
      run: async (ctx) => {
        await ctx.run('top', () => new Array(2 ** 32 - 1))
      },
    })
    const nested = defineJob({
      name: 'nested',
      run: async (ctx) => {
        await ctx.run('inner', () => ({ users: [1, new Array(2 ** 30)] }))
      },
    })
    const d = makeDurably({ jobs: { job, nested } })
    await d.init()
    const t0 = performance.now()
    const err = await d.jobs.job.triggerAndWait(undefined, { timeout: 20_000 }).catch((e) => e)
    expect(err.message).toMatch(/step 'top' returned a value that cannot be stored: result is an array of length 4294967295/)
    const err2 = await d.jobs.nested.triggerAndWait(undefined, { timeout: 20_000 }).catch((e) => e)
    expect(err2.message).toMatch(/result\.users\[1\] is an array of length 1073741824/)
    expect(performance.now() - t0).toBeLessThan(3000)
    // As an input too: refused before anything is written.
    await expect(d.jobs.job.trigger(new Array(2 ** 32 - 1))).rejects.toMatchObject({ code: 'VALIDATION_ERROR', message: /^input is an array/ })
    // Bytes whose base64 text would exceed the longest string: refused before encoding.
    const t1 = performance.now()
    const big = Buffer.allocUnsafe(403_000_000)
    await expect(d.jobs.job.trigger({ file: big })).rejects.toMatchObject({
      code: 'VALIDATION_ERROR',
      message: /^input\.file is 403000000 bytes, too large to store/,
    })
    expect(performance.now() - t1).toBeLessThan(3000)
    expect((await d.getRuns()).length).toBe(2)
  })
})

describe('HTTP actions take runId from a JSON body too', () => {
  it('POST /cancel, /retry and /retrigger with { runId }; query and body must agree', async () => {
    const job = defineJob({ name: 'h', run: async () => 1 })
    const d = makeDurably({ jobs: { job } })
    const handler = createDurablyHandler(d)
    const a = await d.jobs.job.trigger(undefined)
    const b = await d.jobs.job.trigger(undefined)
    let res = await post(handler, `/cancel?runId=${a.id}`, { runId: b.id })
    expect(res.status).toBe(400)
    expect((await res.json()).error).toMatch(/different/)
    expect(await post(handler, '/cancel', {}).then((r) => r.status)).toBe(400)
    expect(await post(handler, '/cancel', { runId: 5 }).then((r) => r.status)).toBe(400)
    expect(await post(handler, '/cancel', { runId: a.id, extra: 1 }).then((r) => r.status)).toBe(400)
    expect(await post(handler, '/cancel', '{not json').then((r) => r.status)).toBe(400)

    res = await post(handler, '/cancel', { runId: a.id })
    expect(res.status).toBe(200)
    expect((await d.getRun(a.id)).status).toBe('cancelled')
    res = await post(handler, `/cancel?runId=${b.id}`, { runId: b.id }) // both, same
    expect(res.status).toBe(200)
    res = await post(handler, '/retry', { runId: a.id })
    expect(await res.json()).toEqual({ success: true, runId: a.id })
    await d.cancel(a.id)
    res = await post(handler, '/retrigger', { runId: a.id })
    expect(res.status).toBe(200)
    expect((await res.json()).runId).not.toBe(a.id)
    // The query form still works.
    expect((await post(handler, `/retry?runId=${b.id}`)).status).toBe(200)
  })
})
