// The `durably` CLI, spawned for real (node bin/durably.js) against database
// files made by real runs: output (plain and --json), exit codes, files it
// must refuse, and runs executed or triggered by other processes.

import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import fs from 'node:fs'
import path from 'node:path'
import durablyPkg from '../index.js'
import helpers from './helpers.js'
import format from '../lib/cli/format.js'
import cliCommands from '../lib/cli/commands.js'
import cliRun from './cli-run.js'

const { createDurably, defineJob, withLogPersistence } = durablyPkg
const { ROOT, tempDb, until, sql, spawnNode } = helpers
const { cli, json, tailJson } = cliRun
const WORKER = path.join(ROOT, '__test__', 'fixtures', 'cli-worker.js')

const jobs = {
  sync: defineJob({
    name: 'sync',
    run: async (ctx, input) => {
      ctx.log.info('starting', { org: input.org })
      await ctx.run('fetch', () => [1, 2])
      ctx.progress(2, 2, 'saved')
      if (input.fail) {
        await ctx.run('save', () => {
          ctx.log.error('cannot save')
          throw new Error(`save failed for ${input.org}`)
        })
      }
      return { synced: 2 }
    },
  }),
  other: defineJob({ name: 'other', run: async () => 'ok' }),
}

let db
const ids = {}

beforeAll(async () => {
  db = tempDb('cli.db')
  const d = createDurably({ path: db, jobs, pollingInterval: 50 })
  d.use(withLogPersistence())
  await d.init()
  ids.done = (await d.jobs.sync.triggerAndWait({ org: 'acme' }, { labels: { team: 'a' } })).id
  const failed = await d.jobs.sync.trigger({ org: 'globex', fail: true }, { labels: { team: 'b' } })
  await d.waitForRun(failed.id).catch(() => {})
  ids.failed = failed.id
  ids.other = (await d.jobs.other.triggerAndWait(null)).id
  await d.stop()
  ids.pending = (await d.jobs.other.trigger(null, { labels: { team: 'a' } })).id
  await d.close()
})

describe('reading', () => {
  it('runs: a table, filters, --json and --limit', async () => {
    const r = await cli(['runs'], { db })
    expect(r.code).toBe(0)
    expect(r.stdout.split('\n')[0]).toMatch(/^ID\s+JOB\s+STATUS\s+PROGRESS\s+LABELS\s+CREATED\s+DURATION$/)
    for (const id of Object.values(ids)) expect(r.stdout).toContain(id)
    expect(r.stdout).not.toMatch(/\x1b\[/) // not a TTY: no colours

    const all = await json(['runs', '--db', db], { db: '' })
    expect(all.body.map((x) => x.id)).toEqual([ids.pending, ids.other, ids.failed, ids.done])
    expect(all.body[2]).toMatchObject({ status: 'failed', jobName: 'sync', labels: { team: 'b' }, error: 'save failed for globex' })

    expect((await json(['runs', '--status', 'failed'], { db })).body.map((x) => x.id)).toEqual([ids.failed])
    expect((await json(['runs', '--status', 'failed,pending'], { db })).body.map((x) => x.id)).toEqual([ids.pending, ids.failed])
    expect((await json(['runs', '--job', 'sync', '--label', 'team=a'], { db })).body.map((x) => x.id)).toEqual([ids.done])
    expect((await json(['runs', '--limit', '1'], { db })).body).toHaveLength(1)
    const none = await cli(['runs', '--label', 'team=zzz'], { db })
    expect(none.stdout.trim()).toBe('no runs match')
  })

  it('show: the run, its steps with durations (failed one marked) and its logs', async () => {
    const r = await cli(['show', ids.failed], { db })
    expect(r.code).toBe(0)
    expect(r.stdout).toMatch(/Status\s+failed/)
    expect(r.stdout).toMatch(/Error\s+save failed for globex/)
    expect(r.stdout).toMatch(/0\s+fetch\s+completed\s+\d+ms/)
    expect(r.stdout).toMatch(/1\s+✗ save\s+failed\s+\d+ms\s+save failed for globex/)
    expect(r.stdout).toMatch(/info\s+\[-\] starting \{"org":"globex"\}/)
    expect(r.stdout).toMatch(/error\s+\[save\] cannot save/)

    const j = await json(['show', ids.failed], { db })
    expect(j.body.run).toMatchObject({ id: ids.failed, status: 'failed', attempt: 1 })
    expect(j.body.steps.map((s) => [s.name, s.status])).toEqual([
      ['fetch', 'completed'],
      ['save', 'failed'],
    ])
    expect(j.body.logs.map((l) => [l.stepName, l.message])).toEqual([
      [null, 'starting'],
      ['save', 'cannot save'],
    ])
  })

  it('logs: plain and --json', async () => {
    const r = await cli(['logs', ids.done], { db })
    expect(r.code).toBe(0)
    expect(r.stdout.trim().split('\n')).toHaveLength(1)
    expect(r.stdout).toContain('starting {"org":"acme"}')
    expect((await json(['logs', ids.done], { db })).body).toMatchObject([{ level: 'info', message: 'starting', data: { org: 'acme' } }])
    // -f on a finished run prints what there is and ends.
    const f = await cli(['logs', ids.done, '-f'], { db })
    expect(f.code).toBe(0)
    expect(f.stdout).toContain('starting')
  })

  it('stats: counts per status and job', async () => {
    const j = await json(['stats'], { db })
    expect(j.code).toBe(0)
    expect(j.body.total).toBe(4)
    expect(j.body.byStatus).toEqual({ pending: 1, running: 0, completed: 2, failed: 1, cancelled: 0 })
    expect(j.body.byJob.sync).toMatchObject({ total: 2, completed: 1, failed: 1 })
    const r = await cli(['stats'], { db })
    expect(r.stdout).toMatch(/^other\s+1\s+0\s+1\s+0\s+0\s+2$/m)
    expect(r.stdout).toMatch(/^all\s+1\s+0\s+2\s+1\s+0\s+4$/m)
  })

  it('colours only when asked: FORCE_COLOR forces them, NO_COLOR turns them off', async () => {
    expect((await cli(['runs'], { db, env: { FORCE_COLOR: '1' } })).stdout).toMatch(/\x1b\[31mfailed\x1b\[0m/)
    expect((await cli(['runs'], { db, env: { NO_COLOR: '1' } })).stdout).not.toMatch(/\x1b\[/)
    expect((await cli(['runs', '--json'], { db, env: { FORCE_COLOR: '1' } })).stdout).not.toMatch(/\x1b\[/)
    // The decision itself, with a terminal.
    const tty = { isTTY: true }
    expect(format.useColor(tty, {})).toBe(true)
    expect(format.useColor(tty, { NO_COLOR: '1' })).toBe(false)
    expect(format.useColor(tty, { FORCE_COLOR: '0' })).toBe(false)
    expect(format.useColor({ isTTY: false }, {})).toBe(false)
  })

  it('stored control characters never reach the terminal raw', async () => {
    const file = tempDb('ctl.db')
    const d = createDurably({ path: file, jobs })
    await d.jobs.other.trigger(null, { labels: { x: '\x1b[2J\x1b[31mred' } })
    await d.close()
    const r = await cli(['runs'], { db: file })
    expect(r.stdout).not.toContain('\x1b')
    expect(r.stdout).toContain('x=\\u001b[2J\\u001b[31mred')
  })
})

describe('usage, exit codes and files it refuses', () => {
  it('--help on every command; bad usage exits 2', async () => {
    for (const cmd of Object.keys(cliCommands.COMMANDS)) {
      const r = await cli([cmd, '--help'])
      expect(r.code, cmd).toBe(0)
      expect(r.stdout, cmd).toContain(`Usage: durably ${cmd}`)
    }
    const top = await cli(['--help'])
    expect(top.code).toBe(0)
    expect(top.stdout).toContain('Exit codes: 0 ok, 1 error, 2 usage, 3 not found, 4 conflict')
    expect((await cli([])).code).toBe(2)
    expect((await cli(['frobnicate'], { db })).code).toBe(2)
    const bad = await cli(['runs', '--bogus'], { db })
    expect(bad.code).toBe(2)
    expect(bad.stderr).toContain("Unknown option '--bogus'")
    expect((await cli(['runs', '--status', 'sleeping'], { db })).code).toBe(2)
    expect((await cli(['runs', '--limit', 'ten'], { db })).code).toBe(2)
    expect((await cli(['show'], { db })).code).toBe(2)
    expect((await cli(['retry'], { db })).code).toBe(2)
    expect((await cli(['purge'], { db })).code).toBe(2)
    expect((await cli(['purge', '--older-than', 'soon'], { db })).code).toBe(2)
    const zero = await cli(['purge', '--older-than', '0s'], { db })
    expect(zero.code).toBe(2)
    expect(zero.stderr).toContain('--older-than must be a duration over zero like 7d, 12h, 30m (got "0s")')
    const noDb = await cli(['runs'])
    expect(noDb.code).toBe(2)
    expect(noDb.stderr).toContain('--db')
  })

  it('unknown runs exit 3, in plain and --json', async () => {
    const r = await cli(['show', '01NOTAREALRUNID0000000000'], { db })
    expect(r.code).toBe(3)
    expect(r.stderr).toContain('not found')
    const j = await json(['show', 'nope'], { db })
    expect(j.code).toBe(3)
    expect(j.body).toMatchObject({ exitCode: 3 })
    expect((await cli(['logs', 'nope'], { db })).code).toBe(3)
    expect((await cli(['cancel', 'nope'], { db })).code).toBe(3)
  })

  it('never creates, migrates or accepts a file of another schema', async () => {
    const missing = path.join(path.dirname(db), 'missing.db')
    const r = await cli(['runs', '--db', missing])
    expect(r.code).toBe(1)
    expect(r.stderr).toContain(`no database file at ${missing}`)
    expect(fs.existsSync(missing)).toBe(false)

    // A SQLite file of something else: refused, and left without durably tables.
    const plain = tempDb('plain.db')
    sql(plain, 'CREATE TABLE notes (x)') // as another tool would
    const p = await cli(['stats', '--db', plain])
    expect(p.code).toBe(1)
    expect(p.stderr).toContain('no durably schema')
    expect(sql(plain, "SELECT name FROM sqlite_master WHERE type = 'table'")).toEqual([['notes']])

    // A file written by a newer durably.
    const newer = tempDb('newer.db')
    fs.copyFileSync(db, newer)
    sql(newer, "INSERT INTO schema_versions VALUES (999, 'future')")
    const n = await json(['runs'], { db: newer })
    expect(n.code).toBe(1)
    expect(n.body.error).toMatch(/schema version 999 is newer than this durably's/)

    // Not a database at all.
    const junk = tempDb('junk.db')
    fs.writeFileSync(junk, 'not a database '.repeat(500))
    const jr = await cli(['runs', '--db', junk])
    expect(jr.code).toBe(1)
    expect(jr.stderr).toContain('not a SQLite database')
  })
})

describe('changing runs', () => {
  it('retry: 4 on a completed run, then --failed retries every failed run', async () => {
    const file = tempDb('retry.db')
    fs.copyFileSync(db, file)
    const c = await cli(['retry', ids.done], { db: file })
    expect(c.code).toBe(4)
    expect(c.stderr).toContain('only failed or cancelled runs can be retried')
    const r = await json(['retry', '--failed'], { db: file })
    expect(r.code).toBe(0)
    expect(r.body.results).toEqual([{ runId: ids.failed, ok: true, status: 'pending' }])
    expect(sql(file, `SELECT status FROM runs WHERE id = '${ids.failed}'`)).toEqual([['pending']])
    // Mixed: one ok, one conflict → the conflict's exit code, both reported.
    const m = await json(['retry', ids.done, ids.failed], { db: file })
    expect(m.code).toBe(4)
    expect(m.body.results.map((x) => [x.runId, x.ok])).toEqual([
      [ids.done, false],
      [ids.failed, false],
    ])
  })

  it('cancel and delete, with conflicts', async () => {
    const file = tempDb('manage.db')
    fs.copyFileSync(db, file)
    expect((await cli(['delete', ids.pending], { db: file })).code).toBe(4)
    const c = await cli(['cancel', ids.pending], { db: file })
    expect(c.code).toBe(0)
    expect(c.stdout).toContain(`cancelled ${ids.pending} (cancelled)`)
    expect((await cli(['cancel', ids.pending], { db: file })).code).toBe(4)
    const del = await json(['delete', ids.pending, ids.done], { db: file })
    expect(del.code).toBe(0)
    expect(sql(file, `SELECT COUNT(*) FROM runs WHERE id IN ('${ids.pending}', '${ids.done}')`)).toEqual([[0]])
    expect(sql(file, `SELECT COUNT(*) FROM steps WHERE run_id = '${ids.done}'`)).toEqual([[0]])
    expect((await cli(['show', ids.done], { db: file })).code).toBe(3)
  })

  it('purge: --dry-run counts, then deletes only finished runs older than the duration', async () => {
    const file = tempDb('purge.db')
    fs.copyFileSync(db, file)
    const keep = await json(['purge', '--older-than', '1d', '--dry-run'], { db: file })
    expect(keep.body).toMatchObject({ dryRun: true, wouldDelete: 0 })
    await new Promise((r) => setTimeout(r, 20))
    const dry = await json(['purge', '--older-than', '10ms', '--dry-run'], { db: file })
    expect(dry.body.wouldDelete).toBe(3)
    expect(sql(file, 'SELECT COUNT(*) FROM runs')).toEqual([[4]])
    const real = await cli(['purge', '--older-than', '10ms'], { db: file })
    expect(real.code).toBe(0)
    expect(real.stdout).toMatch(/^deleted 3 run\(s\)/)
    expect(sql(file, 'SELECT id, status FROM runs')).toEqual([[ids.pending, 'pending']])
  })
})

describe('other processes', () => {
  it('a cancel from the CLI reaches a run executing in another process', async () => {
    const file = tempDb('cancel.db')
    const worker = spawnNode(WORKER, [file, 'hold'])
    try {
      const line = await until(() => worker.lines.find((l) => l.startsWith('waiting ')), { timeout: 20_000, what: 'the run to wait' })
      const runId = line.split(' ')[1]
      // `logs -f` follows the live run until it ends.
      const follow = cli(['logs', runId, '-f', '--json', '--interval', '50'], { db: file })
      let followEnded = false
      follow.then(() => (followEnded = true))
      await new Promise((r) => setTimeout(r, 600))
      expect(followEnded).toBe(false)
      const r = await cli(['cancel', runId], { db: file })
      expect(r.code).toBe(0)
      const followed = await follow
      expect(followed.code).toBe(0)
      expect(followed.stdout.trim().split('\n').map((l) => JSON.parse(l).message)).toEqual(['before done'])
      await until(() => worker.lines.includes(`aborted ${runId}`), { timeout: 10_000, what: 'the worker to see the cancel' })
      const shown = await json(['show', runId], { db: file })
      expect(shown.body.run.status).toBe('cancelled')
      const names = shown.body.steps.map((s) => s.name)
      expect(names[0]).toBe('before')
      expect(names).not.toContain('after')
      expect(worker.lines).not.toContain('after ran')
    } finally {
      worker.child.kill('SIGTERM')
      await worker.exited
    }
  })

  it('tail follows runs that another process triggers and executes', async () => {
    const file = tempDb('tail.db')
    const d = createDurably({ path: file })
    await d.migrate()
    await d.close()
    const { child: tailer, events, exit: tailExit } = tailJson(['--db', file])
    // Let tail take its first look before the other process starts.
    await new Promise((r) => setTimeout(r, 700))
    const worker = spawnNode(WORKER, [file, 'trigger'])
    try {
      await until(() => events.filter((e) => e.type === 'run:complete').length === 3, { timeout: 20_000, what: 'three completions' })
      const byRun = new Map()
      for (const e of events) byRun.set(e.runId, [...(byRun.get(e.runId) ?? []), e.type])
      expect(byRun.size).toBe(3)
      for (const types of byRun.values()) {
        expect(types[0]).toBe('run:trigger')
        expect(types.at(-1)).toBe('run:complete')
      }
      const done = events.filter((e) => e.type === 'run:complete')
      expect(done.every((e) => e.jobName === 'quick' && e.labels.from === 'child' && e.status === 'completed')).toBe(true)
      // A delete by yet another process (the CLI) shows up too.
      expect((await cli(['delete', done[0].runId], { db: file })).code).toBe(0)
      await until(() => events.some((e) => e.type === 'run:delete' && e.runId === done[0].runId), { what: 'run:delete' })
    } finally {
      worker.child.kill('SIGTERM')
      await worker.exited
      tailer.kill('SIGINT')
    }
    expect(await tailExit).toBe(0)
  })
})

describe('tail change detection', () => {
  it('names each observed transition', () => {
    const { changes } = cliCommands
    expect(changes(undefined, { status: 'pending' })).toEqual(['run:trigger'])
    expect(changes(undefined, { status: 'completed' })).toEqual(['run:trigger', 'run:complete'])
    expect(changes({ status: 'pending' }, { status: 'running' })).toEqual(['run:start'])
    expect(changes({ status: 'failed' }, { status: 'pending' })).toEqual(['run:retry'])
    expect(changes({ status: 'running' }, { status: 'pending' })).toEqual(['run:requeue'])
    expect(changes({ status: 'running', progress: null }, { status: 'running', progress: { current: 1 } })).toEqual(['run:progress'])
    expect(changes({ status: 'running', progress: null }, { status: 'running', progress: null })).toEqual([])
  })
})
