// Issue 15, step 1: the run status vocabulary and the run record's fields are
// defined once (lib/status.js, lib/records.js; the Rust RunStatus enum) and
// every shape of a run follows them.
import fs from 'node:fs'
import path from 'node:path'
import { createRequire } from 'node:module'
import { afterEach, describe, expect, it } from 'vitest'
import { defineJob, ValidationError } from '../index.js'
import helpers from './helpers.js'

const require = createRequire(import.meta.url)
const { STATUSES, TERMINAL, isStatus } = require('../lib/status.js')
const { RUN_FIELDS, CLIENT_RUN_FIELDS } = require('../lib/records.js')
const { toClientRun } = require('../lib/http.js')
const { makeDurably, closeAll } = helpers

afterEach(closeAll)

const job = defineJob({ name: 'vocab', run: async (ctx) => ctx.run('s', () => 1) })

describe('status vocabulary', () => {
  it('the JS list is the Rust RunStatus enum, in the same order', () => {
    const rust = fs.readFileSync(path.join(import.meta.dirname, '..', 'src', 'store', 'status.rs'), 'utf8')
    const body = rust.slice(rust.indexOf('pub const fn as_str'), rust.indexOf('pub const fn is_terminal'))
    const names = [...body.matchAll(/RunStatus::\w+ => "(\w+)"/g)].map((m) => m[1])
    expect(names).toEqual([...STATUSES])
    expect([...TERMINAL]).toEqual(['completed', 'failed', 'cancelled'])
    expect(STATUSES.every(isStatus)).toBe(true)
    expect(isStatus('done')).toBe(false)
    expect(Object.isFrozen(STATUSES)).toBe(true)
  })

  it('getRuns and getStats use it: every status counted, an unknown one refused', async () => {
    const d = makeDurably({ jobs: { job } })
    await d.migrate()
    await d.jobs.job.trigger({})
    const stats = await d.getStats()
    expect(Object.keys(stats.byStatus)).toEqual([...STATUSES])
    expect(stats.byStatus.pending).toBe(1)
    for (const status of STATUSES) {
      expect((await d.getRuns({ status })).length).toBe(status === 'pending' ? 1 : 0)
    }
    await expect(d.getRuns({ status: 'done' })).rejects.toBeInstanceOf(ValidationError)
  })
})

describe('run record fields', () => {
  it('a triggered run, a read run and a finished run have exactly RUN_FIELDS', async () => {
    const d = makeDurably({ jobs: { job } })
    await d.migrate()
    const created = await d.jobs.job.trigger({ a: 1 }, { idempotencyKey: 'k' })
    const { disposition, ...rest } = created
    expect(disposition).toBe('created')
    expect(Object.keys(rest)).toEqual([...RUN_FIELDS])
    const read = await d.getRun(created.id)
    expect(Object.keys(read)).toEqual([...RUN_FIELDS])
    // The record built from the trigger's reply matches the stored one.
    expect(rest).toEqual(read)
    d.start()
    const done = await d.waitForRun(created.id, { timeout: 30_000 })
    expect(Object.keys(done)).toEqual([...RUN_FIELDS])
    expect(done.status).toBe('completed')
    expect(done.attempt).toBe(1)
    expect(done.completedStepCount).toBe(1)
  })

  it('the browser shape is RUN_FIELDS without keys and stack, plus isTerminal/isActive', async () => {
    const d = makeDurably({ jobs: { job } })
    await d.migrate()
    const run = await d.jobs.job.trigger({}, { idempotencyKey: 'secret', concurrencyKey: 'c' })
    const client = toClientRun(run)
    expect(Object.keys(client)).toEqual([...CLIENT_RUN_FIELDS, 'isTerminal', 'isActive'])
    expect(CLIENT_RUN_FIELDS).not.toContain('idempotencyKey')
    expect(CLIENT_RUN_FIELDS).not.toContain('concurrencyKey')
    expect(CLIENT_RUN_FIELDS).not.toContain('errorStack')
    expect(client).toMatchObject({ id: run.id, status: 'pending', isTerminal: false, isActive: true })
  })
})
