// The `durably` CLI on a PostgreSQL database (`--db postgres://…`, `--schema`,
// DURABLY_DATABASE_URL), spawned for real against schemas filled by real
// runs: what it reads and changes, what it refuses (an unmigrated or newer
// schema, a server that does not answer, `--schema` with a file), that a
// password never shows, and runs that other processes execute (a cancel
// reaching their AbortSignal, tail). The SQLite side is cli.test.mjs.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import path from 'node:path'
import { getEventListeners } from 'node:events'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const { createDurably, defineJob, withLogPersistence } = require('..')
const { ROOT, until, spawnNode, tempDb } = require('./helpers.js')
const { postgresBackendSkipReason, pgSchema, pgUrl, dropSchemas, sql } = require('./pg.js')
const { sleep } = require('../lib/cli/commands.js')
const { cli, json, tailJson } = require('./cli-run.js')

const WORKER = path.join(ROOT, '__test__', 'fixtures', 'cli-worker.js')

const why = postgresBackendSkipReason()
if (why) console.warn(`cli-pg.test: PostgreSQL skipped: ${why}`)

afterAll(() => dropSchemas())

const jobs = {
  sync: defineJob({
    name: 'sync',
    run: async (ctx, input) => {
      ctx.log.info('starting', { org: input.org })
      await ctx.run('fetch', () => [1, 2])
      if (input.fail) await ctx.run('save', () => Promise.reject(new Error(`save failed for ${input.org}`)))
      return { synced: 2 }
    },
  }),
}

describe('sleep between looks (tail, logs -f)', () => {
  it('leaves no abort listener behind, and ends at once when aborted', async () => {
    const ac = new AbortController()
    for (let i = 0; i < 25; i++) await sleep(1, ac.signal)
    expect(getEventListeners(ac.signal, 'abort')).toHaveLength(0)
    const t0 = Date.now()
    const long = sleep(60_000, ac.signal)
    ac.abort()
    await long
    expect(Date.now() - t0).toBeLessThan(1000)
    expect(getEventListeners(ac.signal, 'abort')).toHaveLength(0)
    await sleep(60_000, ac.signal) // already aborted: resolves at once
  })
})

describe.skipIf(why)('on PostgreSQL', () => {
  let url
  let schema
  let db // the common arguments
  const ids = {}

  beforeAll(async () => {
    url = pgUrl()
    schema = pgSchema('cli')
    db = ['--db', url, '--schema', schema]
    const d = createDurably({ url, schema, jobs, pollingInterval: 50 })
    d.use(withLogPersistence())
    await d.init()
    ids.done = (await d.jobs.sync.triggerAndWait({ org: 'acme' }, { labels: { team: 'a' } })).id
    const failed = await d.jobs.sync.trigger({ org: 'globex', fail: true }, { labels: { team: 'b' } })
    await d.waitForRun(failed.id).catch(() => {})
    ids.failed = failed.id
    await d.stop()
    ids.pending = (await d.jobs.sync.trigger({ org: 'initech' })).id
    await d.close()
  })

  it('reads: runs (filters, --json), show, logs, stats', async () => {
    const r = await cli(['runs', ...db])
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout.split('\n')[0]).toMatch(/^ID\s+JOB\s+STATUS/)
    for (const id of Object.values(ids)) expect(r.stdout).toContain(id)
    const all = await json(['runs', ...db])
    expect(all.body.map((x) => x.id)).toEqual([ids.pending, ids.failed, ids.done])
    expect(all.body[1]).toMatchObject({ status: 'failed', labels: { team: 'b' }, error: 'save failed for globex' })
    expect((await json(['runs', ...db, '--status', 'failed'])).body.map((x) => x.id)).toEqual([ids.failed])
    expect((await json(['runs', ...db, '--label', 'team=a'])).body.map((x) => x.id)).toEqual([ids.done])

    const shown = await json(['show', ids.failed, ...db])
    expect(shown.body.run).toMatchObject({ id: ids.failed, status: 'failed' })
    expect(shown.body.steps.map((s) => [s.name, s.status])).toEqual([
      ['fetch', 'completed'],
      ['save', 'failed'],
    ])
    expect(shown.body.logs.map((l) => l.message)).toEqual(['starting'])
    expect((await cli(['logs', ids.done, ...db])).stdout).toContain('starting {"org":"acme"}')

    const stats = await json(['stats', ...db])
    expect(stats.body.byStatus).toEqual({ pending: 1, running: 0, completed: 1, failed: 1, cancelled: 0 })
    expect((await cli(['show', '01J00000000000000000000000', ...db])).code).toBe(3)
  })

  it('DURABLY_DATABASE_URL when neither --db nor DURABLY_DB is given; --db and DURABLY_DB win over it', async () => {
    const viaEnv = await json(['stats', '--schema', schema], { env: { DURABLY_DATABASE_URL: url } })
    expect(viaEnv.code).toBe(0)
    expect(viaEnv.body.total).toBe(3)
    // DURABLY_DB (a SQLite file) is taken before the URL: that file does not exist.
    const file = await cli(['stats'], { env: { DURABLY_DATABASE_URL: url }, db: '/nonexistent/durably.db' })
    expect(file.code).toBe(1)
    expect(file.stderr).toContain('no database file at /nonexistent/durably.db')
  })

  it('changes: retry --failed, then cancel and delete with their conflicts', async () => {
    const retried = await json(['retry', '--failed', ...db])
    expect(retried.code).toBe(0)
    expect(retried.body.results).toEqual([{ runId: ids.failed, ok: true, status: 'pending' }])
    expect((await cli(['retry', ids.done, ...db])).code).toBe(4)
    const cancelled = await json(['cancel', ids.failed, ids.pending, ...db])
    expect(cancelled.body.results.map((x) => x.status)).toEqual(['cancelled', 'cancelled'])
    expect((await cli(['delete', ids.failed, ...db])).code).toBe(0)
    expect((await cli(['show', ids.failed, ...db])).code).toBe(3)
    const left = sql(url, `SELECT id || ':' || status FROM "${schema}".runs ORDER BY id`).trim().split('\n')
    expect(left).toEqual([`${ids.done}:completed`, `${ids.pending}:cancelled`])
  })

  it('refuses an unmigrated schema, a newer schema, a dead server, --schema with a file; never shows a password', async () => {
    const empty = pgSchema('cli_empty')
    const r = await cli(['runs', '--db', url, '--schema', empty])
    expect(r.code).toBe(1)
    expect(r.stderr).toContain(`(schema ${empty}): it has no durably schema`)
    // Nothing was created: the CLI never migrates.
    expect(sql(url, `SELECT count(*) FROM pg_namespace WHERE nspname = '${empty}'`).trim()).toBe('0')

    const newer = pgSchema('cli_newer')
    const d = createDurably({ url, schema: newer })
    await d.migrate()
    await d.close()
    sql(url, `INSERT INTO "${newer}".schema_versions (version, applied_at) VALUES (999, now())`)
    const n = await json(['runs', '--db', url, '--schema', newer])
    expect(n.code).toBe(1)
    expect(n.body.error).toMatch(/schema version 999 is newer than this durably's \(\d+\): use a newer durably/)

    // A closed port, with a password in the URL: refused quickly, the password shown as ***.
    const dead = await cli(['runs', '--db', 'postgres://bob:hunter2@127.0.0.1:1/app'])
    expect(dead.code).toBe(1)
    expect(dead.stderr).toContain('cannot open postgres://bob:***@127.0.0.1:1/app (schema durably)')
    expect(dead.stderr).toMatch(/cannot connect to PostgreSQL/)
    expect(dead.stderr).not.toContain('hunter2')

    const bad = await cli(['runs', '--db', url, '--schema', 'Not-A-Schema'])
    expect(bad.code).toBe(2)
    expect(bad.stderr).toMatch(/--schema must be 1 to 48 lower-case letters/)
    const badUrl = await cli(['runs', '--db', 'postgres://'])
    expect(badUrl.code).toBe(2)
    expect(badUrl.stderr).toMatch(/--db names no host/)
    const onFile = await cli(['runs', '--db', tempDb('cli-pg.db'), '--schema', 'x'])
    expect(onFile.code).toBe(2)
    expect(onFile.stderr).toContain('--schema applies to a PostgreSQL database only')
  })

  it('a cancel from the CLI reaches a run executing in another process; tail follows it', async () => {
    const s = pgSchema('cli_live')
    const worker = spawnNode(WORKER, [url, 'hold', s])
    let tailer
    try {
      const line = await until(() => worker.lines.find((l) => l.startsWith('waiting ')), { timeout: 20_000, what: 'the run to wait' })
      const runId = line.split(' ')[1]
      const tail = tailJson(['--db', url, '--schema', s])
      tailer = tail.child
      const { events, exit: tailExit } = tail
      const follow = cli(['logs', runId, '-f', '--json', '--interval', '50', '--db', url, '--schema', s])
      await new Promise((r) => setTimeout(r, 600)) // tail's first look sees the run running
      const r = await cli(['cancel', runId, '--db', url, '--schema', s])
      expect(r.code, r.stderr).toBe(0)
      await until(() => worker.lines.includes(`aborted ${runId}`), { timeout: 10_000, what: 'the worker to see the cancel' })
      const followed = await follow
      expect(followed.code).toBe(0)
      expect(followed.stdout.trim().split('\n').map((l) => JSON.parse(l).message)).toEqual(['before done'])
      await until(() => events.some((e) => e.type === 'run:cancel' && e.runId === runId), { what: 'tail to print run:cancel' })
      const shown = await json(['show', runId, '--db', url, '--schema', s])
      expect(shown.body.run.status).toBe('cancelled')
      expect(shown.body.steps.map((x) => x.name)).not.toContain('after')
      expect(worker.lines).not.toContain('after ran')
      tailer.kill('SIGINT')
      expect(await tailExit).toBe(0)
    } finally {
      tailer?.kill('SIGINT')
      worker.child.kill('SIGTERM')
      await worker.exited
    }
  })
})
