// Issue 15: lib/protocol.js is the one encoder of what crosses into the
// engine. Its output for every flush op kind is pinned in
// __test__/fixtures/protocol-ops.json (parsed by the cargo test
// `store::tests::protocol_fixture_parses` with the Rust FlushOp), its trigger
// batch items in __test__/fixtures/protocol-triggers.json (parsed by
// `protocol_trigger_fixture_parses` with TriggerRequest); so a change on one
// side that the other does not follow fails a suite. What comes back is
// typed by the binding (TriggerResult, FlushResult, CancelResult): checked
// here through the addon.
import fs from 'node:fs'
import path from 'node:path'
import { createRequire } from 'node:module'
import { afterEach, describe, expect, it } from 'vitest'
import { defineJob } from '../index.js'
import helpers from './helpers.js'

const require = createRequire(import.meta.url)
const protocol = require('../lib/protocol.js')
const { makeDurably, closeAll, onPostgres } = helpers

/**
 * The synchronous form of an addon call, or on PostgreSQL its async form: the
 * synchronous fast paths are SQLite's (null on PostgreSQL by design).
 */
const direct = async (sync, async) => (onPostgres ? async() : sync())
const FIXTURE = path.join(import.meta.dirname, 'fixtures', 'protocol-ops.json')
const TRIGGER_FIXTURE = path.join(import.meta.dirname, 'fixtures', 'protocol-triggers.json')

afterEach(closeAll)

/**
 * A started instance whose one run stored its step `a` and is held running
 * (generation 1) until `release()`; it then returns 'done'.
 */
async function heldRun() {
  let release
  const gate = new Promise((r) => (release = r))
  const job = defineJob({
    name: 'p',
    run: async (ctx) => {
      await ctx.run('a', () => 1)
      await gate
      return 'done'
    },
  })
  const d = makeDurably({ jobs: { job } })
  await d.migrate()
  const run = await d.jobs.job.trigger({})
  d.start()
  await expect.poll(async () => (await d.getSteps(run.id)).length, { timeout: 20_000 }).toBe(1)
  return { d, run, release }
}

const RUN = '01JB0000000000000000000000'
const AT = '2026-01-02T03:04:05.678Z'

/** One op of every kind, with the awkward values (quotes, newlines, non-ASCII, nulls). */
function everyOp() {
  const { stepOp, completeOp, failOp, progressOp, logOp, releaseOp } = protocol
  return [
    stepOp(RUN, 3, 'fetch "page"\n1', 0, 'completed', '{"html":"<p>é</p>"}', null, AT, AT),
    stepOp(RUN, 3, 'boom', 1, 'failed', null, { message: 'bad: "x"', stack: 'Error: bad\n    at f' }, AT, AT, '{"pct":50}'),
    completeOp(RUN, 3, '[1,{"a":null}]', '{"pct":100}', AT, 2),
    completeOp(RUN, 3, null, null, AT),
    failOp(RUN, 3, 'it failed ☃', null, null, AT, 1),
    progressOp(RUN, 3, '"half"'),
    logOp(RUN, 3, 'fetch', 'warn', 'slow\tpage', '{"ms":1200}', AT),
    logOp(RUN, 3, null, 'info', 'no step', null, AT),
    releaseOp(RUN, 3),
  ]
}

describe('flush op encoding', () => {
  it('every op kind encodes to valid JSON, exactly as the shared fixture (which cargo test parses)', () => {
    const text = protocol.encodeBatch(everyOp())
    const parsed = JSON.parse(text)
    const fixture = JSON.parse(fs.readFileSync(FIXTURE, 'utf8'))
    expect(parsed).toEqual(fixture)
    const kinds = parsed.map((op) => Object.keys(op))
    expect(new Set(kinds.map((k) => k.join()))).toEqual(new Set(['step', 'complete', 'fail', 'progress', 'log', 'release']))
    for (const k of kinds) expect(k.length).toBe(1)
    // Every encoder in the module is covered by the fixture.
    const encoders = Object.keys(protocol).filter((k) => k.endsWith('Op'))
    expect(encoders.sort()).toEqual(['completeOp', 'failOp', 'logOp', 'progressOp', 'releaseOp', 'stepOp'])
  })


  it("ops of different runs interleaved each name their own run (the last run id's JSON is reused)", () => {
    const { stepOp, completeOp, releaseOp, logOp } = protocol
    const other = '01JB000000000000000000000Z'
    const ops = [
      stepOp(RUN, 1, 'a', 0, 'completed', '1', null, AT, AT),
      stepOp(other, 2, 'a', 0, 'completed', '2', null, AT, AT),
      stepOp(RUN, 1, 'b', 1, 'completed', '3', null, AT, AT),
      releaseOp(other, 2),
      logOp(null, 4, null, 'info', 'm', null, AT),
      completeOp(RUN, 1, null, null, AT),
      completeOp('quote"d', 5, null, null, AT),
    ]
    const runs = JSON.parse(protocol.encodeBatch(ops)).map((op) => Object.values(op)[0].run)
    expect(runs).toEqual([RUN, other, RUN, other, null, RUN, 'quote"d'])
  })
})

describe('trigger batch encoding', () => {
  it('items encode as objects, exactly as the shared fixture (which cargo test parses)', () => {
    const { triggerItem, encodeTriggerBatch, q } = protocol
    const job = q('import "csv"\n☃')
    const text = encodeTriggerBatch([
      triggerItem(job, '{"rows":[1,null,"é"]}', 'order-42', null, false, '{}'),
      triggerItem(job, 'null', null, 'tenant "a"', true, '{"tenant":"a","region":"eu\\tw"}'),
    ])
    expect(JSON.parse(text)).toEqual(JSON.parse(fs.readFileSync(TRIGGER_FIXTURE, 'utf8')))
  })
})

describe("trigger's text answer", () => {
  const id = '01KB0000000000000000000001'
  const at = '2026-12-02T06:41:34.321Z'
  it('a created run: id and createdAt, nothing claimed', () => {
    expect(protocol.createdResult(`c${id} ${at}`)).toEqual({ kind: 'created', id, createdAt: at, claimed: null, started: false })
  })
  it('inserted already claimed by this worker: started', () => {
    expect(protocol.createdResult(`c${id} ${at}\ns`)).toEqual({ kind: 'created', id, createdAt: at, claimed: null, started: true })
  })
  it('the claimed runs come last and are taken whole, whatever they hold (newlines, spaces, a lone "s")', () => {
    const claimed = `[{"id":"x","input":"a b\nc","steps":[]},{"input":"s"}]`
    expect(protocol.createdResult(`c${id} ${at}\n${claimed}`)).toEqual({ kind: 'created', id, createdAt: at, claimed, started: false })
    expect(protocol.createdResult(`c${id} ${at}\ns\n`).claimed).toBe('s\n')
  })
})

describe('typed results from the addon', () => {
  it('trigger, triggerBatch and their async forms return TriggerResult objects', async () => {
    const job = defineJob({ name: 'typed', run: async () => 1 })
    const d = makeDurably({ jobs: { job } })
    await d.migrate()
    const e = d._engine
    const answer = await direct(
      () => e.trigger('typed', '{"a":1}', 'k1', null, false, '{}'),
      () => e.triggerAsync('typed', '{"a":1}', 'k1', null, false, '{}'),
    )
    // The synchronous trigger answers a created run as text (`c<id> <createdAt>`,
    // nothing claimed here: the worker is off), which createdResult reads.
    if (!onPostgres) expect(answer).toMatch(/^c[0-9A-HJKMNP-TV-Z]{26} \d{4}-\d\d-\d\dT[^\n ]+Z$/)
    const created = typeof answer === 'string' ? protocol.createdResult(answer) : answer
    expect(created.kind).toBe('created')
    expect(created.id).toMatch(/^[0-9A-HJKMNP-TV-Z]{26}$/)
    expect(new Date(created.createdAt).toISOString()).toBe(created.createdAt)
    expect(created.claimed ?? null).toBe(null)
    expect(created.started ?? false).toBe(false)
    const createdAsync = await e.triggerAsync('typed', '{"a":0}', null, null, false, '{}')
    expect(Object.keys(createdAsync).sort()).toEqual(['createdAt', 'id', 'kind'])
    expect(createdAsync.kind).toBe('created')
    const again = await e.triggerAsync('typed', '{"a":2}', 'k1', null, false, '{}')
    expect(Object.keys(again).sort()).toEqual(['kind', 'run'])
    expect(again.kind).toBe('idempotent')
    expect(JSON.parse(again.run)).toMatchObject({ id: created.id, input: { a: 1 }, status: 'pending' })
    // An existing run found by the synchronous trigger stays a TriggerResult object.
    const againSync = await direct(
      () => e.trigger('typed', '{"a":3}', 'k1', null, false, '{}'),
      () => e.triggerAsync('typed', '{"a":3}', 'k1', null, false, '{}'),
    )
    expect(Object.keys(againSync).sort()).toEqual(['kind', 'run'])
    expect(JSON.parse(againSync.run).id).toBe(created.id)
    const { triggerItem, encodeTriggerBatch, q } = protocol
    const batch = encodeTriggerBatch([
      triggerItem(q('typed'), '1', null, 'c', false, '{}'),
      triggerItem(q('typed'), '2', null, 'c', true, '{}'),
      triggerItem(q('typed'), '3', 'k1', null, false, '{}'),
    ])
    // A batch answers with one TriggerBatchResult: an id per item (comma-separated,
    // empty where the item found a run), the items that found a run.
    const results = await direct(() => e.triggerBatch(batch), () => e.triggerBatchAsync(batch))
    expect(Object.keys(results).sort()).toEqual(['createdAt', 'existing', 'ids'])
    expect(results.ids).toMatch(/^[0-9A-HJKMNP-TV-Z]{26},,$/)
    const ids = results.ids.split(',')
    expect(new Date(results.createdAt).toISOString()).toBe(results.createdAt)
    expect(results.existing.map((x) => [x.index, x.kind])).toEqual([
      [1, 'coalesced'],
      [2, 'idempotent'],
    ])
    expect(JSON.parse(results.existing[0].run).id).toBe(ids[0])
    expect(JSON.parse(results.existing[1].run).id).toBe(created.id)
    const again2 = await e.triggerBatchAsync(batch)
    expect(again2.ids).toMatch(/^[0-9A-HJKMNP-TV-Z]{26},,$/)
    expect(again2.ids.split(',')[0]).not.toBe(ids[0])
    expect(again2.existing.map((x) => [x.index, x.kind])).toEqual([
      [1, 'coalesced'],
      [2, 'idempotent'],
    ])
    // A batch that creates every run has no `existing` field.
    const one = encodeTriggerBatch([triggerItem(q('typed'), '4', null, null, false, '{}')])
    const plain = await direct(() => e.triggerBatch(one), () => e.triggerBatchAsync(one))
    expect(Object.keys(plain).sort()).toEqual(['createdAt', 'ids'])
    // A malformed item is refused with a code, and nothing of its batch is written.
    const before = (await d.getRuns()).length
    const malformed = `[${triggerItem(q('typed'), '1', null, null, false, '{}')},{"job":"typed"}]`
    await expect(direct(() => e.triggerBatch(malformed), () => e.triggerBatchAsync(malformed))).rejects.toMatchObject({
      code: 'INTERNAL',
    })
    expect((await d.getRuns()).length).toBe(before)
  })

  it('flush returns a FlushResult: a status per op, the ops that failed with their code', async () => {
    const d = makeDurably()
    await d.migrate()
    const e = d._engine
    const ghost = '01JB0000000000000000000000'
    const ops = protocol.encodeBatch([protocol.progressOp(ghost, 1, '1'), '{"log":{"run":"x"}}'])
    const res = await direct(() => e.flush(ops), () => e.flushAsync(ops))
    expect(res.statuses).toEqual(['lost', 'failed'])
    expect(res.claimed).toBeUndefined()
    expect(res.errors).toHaveLength(1)
    expect(res.errors[0]).toMatchObject({ index: 1, code: 'INTERNAL' })
    expect(res.errors[0].message).toMatch(/flush op 1 is malformed/)
    // No op failed: the answer is text, a status code per op.
    expect(await e.flushAsync(protocol.encodeBatch([protocol.releaseOp(ghost, 1)]))).toBe('l')
    // Every status the engine reports is one lib/protocol.js names.
    for (const s of res.statuses) expect(Object.values(protocol.OP_RESULTS)).toContain(s)
  })

  // (PostgreSQL: flush is not served on the JS thread; it returns null there.)
  it.skipIf(onPostgres)('flush answers with text when no op failed: a status code per op, in order', async () => {
    const { d, run, release } = await heldRun()
    const ghost = '01JB0000000000000000000000'
    const { encodeBatch, progressOp } = protocol
    const ops = encodeBatch([progressOp(ghost, 1, '1'), progressOp(run.id, 1, '{"current":7}'), progressOp(run.id, 2, '2')])
    expect(d._engine.flush(ops)).toBe('l0l')
    expect((await d.getRun(run.id)).progress).toEqual({ current: 7 })
    release()
    await expect.poll(async () => (await d.getRun(run.id)).status, { timeout: 20_000 }).toBe('completed')
  })

  it('cancel returns a CancelResult; purge and recoverStale a number; close undefined', async () => {
    const job = defineJob({ name: 'c', run: async () => 1 })
    const d = makeDurably({ jobs: { job } })
    await d.migrate()
    const run = await d.jobs.job.trigger({})
    const res = await d._engine.cancel(run.id)
    expect(res.previous).toBe('pending')
    expect(JSON.parse(res.run)).toMatchObject({ id: run.id, status: 'cancelled' })
    expect(await d._engine.purge(new Date(Date.now() + 60_000).toISOString(), 10)).toBe(1)
    expect(await d._engine.recoverStale()).toBe(0)
    expect(await d._engine.close()).toBeUndefined()
  })
})

describe('through the engine', () => {
  it('one op the engine refuses fails only its own pusher; the batch commits the rest', async () => {
    const { d, run, release } = await heldRun()
    const writer = d._writer
    // A malformed op (no generation) and a step op the database refuses
    // (status not allowed by its CHECK), in one batch with a valid log op.
    const bad = writer.push(`{"step":{"run":"${run.id}","name":"x"}}`)
    const refused = writer.push(
      protocol.stepOp(run.id, 1, 'x', 5, 'bogus', null, null, AT, AT, '{"never":true}'),
    )
    const ok = writer.push(protocol.logOp(run.id, 1, null, 'info', 'still written', null, AT))
    const [b, r, o] = await Promise.allSettled([bad, refused, ok])
    expect(b.status).toBe('rejected')
    expect(b.reason.code).toBe('INTERNAL')
    expect(b.reason.message).toMatch(/flush op \d+ is malformed.*gen/)
    expect(r.status).toBe('rejected')
    expect(r.reason.code).toBe('DB_ERROR')
    expect(o).toEqual({ status: 'fulfilled', value: 'written' })
    expect((await d.getLogs(run.id)).map((l) => l.message)).toContain('still written')
    const now = await d.getRun(run.id)
    expect(now.progress).toBe(null) // the refused op's run update was rolled back
    expect((await d.getSteps(run.id)).map((s) => s.name)).toEqual(['a'])
    release()
    const done = await d.waitForRun(run.id, { timeout: 20_000 })
    expect(done.status).toBe('completed')
    expect(done.output).toBe('done')
  })
})

describe('one error channel', () => {
  it('an async native call rejects with the engine error code (never resolves an encoded error)', async () => {
    const d = makeDurably()
    await d.migrate()
    // Straight at the addon: the promise itself rejects, with .code.
    const raw = await d._engine.cancel('01JB0000000000000000000000').then(
      (v) => ({ resolved: v }),
      (err) => ({ rejected: err }),
    )
    expect(raw.resolved).toBeUndefined()
    expect(raw.rejected).toBeInstanceOf(Error)
    expect(raw.rejected.code).toBe('NOT_FOUND')
    expect(raw.rejected.message).toMatch(/not found/)
    // Through the public API: the class picked from the code.
    const err = await d.cancel('01JB0000000000000000000000').catch((e) => e)
    expect(err.name).toBe('NotFoundError')
    expect(err.code).toBe('NOT_FOUND')
    // CONFLICT through another async call: retrying a pending run.
    const job = defineJob({ name: 'j', run: async () => 1 })
    const d2 = makeDurably({ jobs: { job } })
    await d2.migrate()
    const run = await d2.jobs.job.trigger({})
    const conflict = await d2.retry(run.id).catch((e) => e)
    expect(conflict.name).toBe('ConflictError')
    expect(conflict.code).toBe('CONFLICT')
  })
})
