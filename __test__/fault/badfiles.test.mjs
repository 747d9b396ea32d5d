// Issue 5, fault suite 4: bad files give documented errors with `.code`,
// never a crash, and never damage what is already stored. Also: a schema
// newer than this library, and migrate() from 4 processes at once.
import fs from 'node:fs'
import path from 'node:path'
import crypto from 'node:crypto'
import { spawnSync } from 'node:child_process'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { createDurably, defineJob, DurablyError } from '../../index.js'
import helpers from '../helpers.js'
import { exitWithin, fixture, hasPython, sql } from './util.mjs'
import { createRequire } from 'node:module'

/** The schema versions this durably applies to a new file: 1, 2, … */
const VERSIONS = Array.from({ length: createRequire(import.meta.url)('../../binding.js').librarySchemaVersion() }, (_, i) => [i + 1])

const { ROOT, tempDir, spawnNode, until, sleep } = helpers

const open = []
afterEach(async () => {
  await Promise.allSettled(open.splice(0).map((d) => d.close()))
})
const cleanups = []
afterAll(() => {
  for (const f of cleanups.splice(0)) f()
})

const job = defineJob({ name: 'fault-bad', run: async (_ctx, input) => input })

/** createDurably + migrate + trigger + getRuns; resolves with the first error (or null). */
async function tryUse(dbPath, onWorkerError) {
  let d
  try {
    d = createDurably({ path: dbPath, jobs: { job }, pollingInterval: 20 })
    open.push(d)
    if (onWorkerError) d.on('worker:error', onWorkerError)
    await d.init()
    await d.getRuns()
    await d.jobs.job.trigger({ x: 1 })
    return null
  } catch (err) {
    return err
  }
}

const digest = (p) => crypto.createHash('sha256').update(fs.readFileSync(p)).digest('hex')
const snapshot = (p) => ({ sha: digest(p), size: fs.statSync(p).size, mtimeMs: fs.statSync(p).mtimeMs })

/** A real database with 200 runs, everything checkpointed into the main file. */
async function realDb(dir) {
  const p = path.join(dir, 'real.db')
  const d = createDurably({ path: p, jobs: { job } })
  await d.migrate()
  await d.jobs.job.batchTrigger(Array.from({ length: 200 }, (_, i) => ({ input: { i, pad: 'x'.repeat(300) } })))
  await d.close()
  // The last connection to close checkpoints the WAL into the file and removes it.
  await until(() => !fs.existsSync(`${p}-wal`), { timeout: 10_000, what: 'the WAL to be checkpointed' })
  expect(fs.statSync(p).size).toBeGreaterThan(60_000)
  return p
}

function expectCode(err, code) {
  expect(err, `expected a ${code} error`).toBeInstanceOf(DurablyError)
  expect(err.code).toBe(code)
  expect(typeof err.message).toBe('string')
}

describe('bad files', () => {
  it('a text file → DB_CORRUPT, and the file is left as it was', async () => {
    const dir = tempDir('durably-fault-bad-')
    for (const [name, text] of [
      ['notes.txt', 'hello\n'],
      ['config.json', JSON.stringify({ some: 'config', list: Array.from({ length: 500 }, (_, i) => i) })],
    ]) {
      const p = path.join(dir, name)
      fs.writeFileSync(p, text)
      const before = snapshot(p)
      const err = await tryUse(p)
      expectCode(err, 'DB_CORRUPT')
      expect(err.message).toMatch(/not a (SQLite )?database/i)
      expect(snapshot(p)).toEqual(before)
      expect(fs.readFileSync(p, 'utf8')).toBe(text)
    }
  })

  it('a truncated database → DB_CORRUPT at open, in-process and in a child that exits cleanly', async () => {
    const dir = tempDir('durably-fault-bad-')
    const real = await realDb(dir)
    const size = fs.statSync(real).size
    for (const cut of [3000, 4096, Math.floor(size / 2), size - 4096]) {
      const p = path.join(dir, `trunc-${cut}.db`)
      fs.copyFileSync(real, p)
      fs.truncateSync(p, cut)
      const before = snapshot(p)
      const err = await tryUse(p)
      expectCode(err, 'DB_CORRUPT')
      expect(err.message).toMatch(/malformed/)
      // Nothing was written to it (no migration over the remains).
      expect(snapshot(p)).toEqual(before)
    }
    const p = path.join(dir, 'trunc-child.db')
    fs.copyFileSync(real, p)
    fs.truncateSync(p, 3000)
    const w = spawnNode(fixture('fault-open.js'), [p])
    const ex = await exitWithin(w, 20_000)
    expect(ex && ex.code, w.stderr()).toBe(0)
    expect(JSON.parse(w.lines[0])).toMatchObject({ ok: false, stage: 'open', code: 'DB_CORRUPT', durably: true })
  })

  it('a damaged page inside a database → DB_CORRUPT from queries and worker:error, no crash', async () => {
    const dir = tempDir('durably-fault-bad-')
    const real = await realDb(dir)
    const pages = fs.statSync(real).size / 4096
    let seen = 0
    for (const page of [2, Math.floor(pages / 2), pages - 1]) {
      const p = path.join(dir, `damaged-${page}.db`)
      fs.copyFileSync(real, p)
      const fd = fs.openSync(p, 'r+')
      fs.writeSync(fd, Buffer.alloc(4096, 0x5a), 0, 4096, page * 4096)
      fs.closeSync(fd)
      const workerErrors = []
      const err = await tryUse(p, (e) => workerErrors.push(e.error))
      // Depending on the page hit, a query fails or only the worker's claims do.
      if (err) expectCode(err, 'DB_CORRUPT')
      else {
        await until(() => workerErrors.length > 0, { timeout: 5_000, what: 'a worker:error' })
        expectCode(workerErrors[0], 'DB_CORRUPT')
      }
      for (const e of workerErrors) expectCode(e, 'DB_CORRUPT')
      seen++
    }
    expect(seen).toBe(3)
  })

  it('a read-only database (immutable file, chattr +i) → DB_READONLY', async (ctx) => {
    const dir = tempDir('durably-fault-bad-')
    const real = await realDb(dir)
    const p = path.join(dir, 'ro.db')
    fs.copyFileSync(real, p)
    let how
    if (process.getuid && process.getuid() !== 0) {
      fs.chmodSync(p, 0o444)
      how = 'chmod 444 (not root)'
    } else {
      const r = spawnSync('chattr', ['+i', p], { encoding: 'utf8' })
      if (r.status !== 0) {
        const reason = `cannot make a file read-only for root here: chattr +i failed (${(r.stderr || r.error || '').toString().trim()}); needs CAP_LINUX_IMMUTABLE and ext2/3/4/xfs/btrfs — see the unprivileged-user case`
        console.log(`fault/badfiles SKIP read-only (chattr): ${reason}`)
        ctx.skip(reason)
        return
      }
      cleanups.push(() => spawnSync('chattr', ['-i', p]))
      how = 'chattr +i (root)'
    }
    try {
      const before = snapshot(p)
      const err = await tryUse(p)
      expectCode(err, 'DB_READONLY')
      expect(err.message).toMatch(/read-only/)
      expect(snapshot(p)).toEqual(before)
      console.log(`fault/badfiles read-only via ${how}: ${err.code}`)
    } finally {
      spawnSync('chattr', ['-i', p])
      fs.chmodSync(p, 0o644)
    }
  })

  it('a read-only database (opened by an unprivileged user) → DB_READONLY', async (ctx) => {
    const isRoot = process.getuid && process.getuid() === 0
    const nobody = 65534
    const probe = isRoot
      ? spawnSync(process.execPath, ['-e', `require(${JSON.stringify(ROOT)})`], { uid: nobody, gid: nobody })
      : null
    if (!isRoot || probe.status !== 0) {
      const reason = !isRoot
        ? 'not root: covered by the chmod case'
        : `cannot run a child as uid ${nobody} (${probe.error ? probe.error.message : `exit ${probe.status}`}; the repository must be world-readable)`
      console.log(`fault/badfiles SKIP read-only (unprivileged user): ${reason}`)
      ctx.skip(reason)
      return
    }
    const dir = tempDir('durably-fault-bad-')
    fs.chmodSync(dir, 0o755) // the user can enter it, not write in it
    const real = await realDb(dir)
    const p = path.join(dir, 'ro.db')
    fs.copyFileSync(real, p)
    fs.chmodSync(p, 0o444)
    const before = snapshot(p)
    // (spawnNode cannot change the uid: spawnSync can)
    const r = spawnSync(process.execPath, [fixture('fault-open.js'), p], {
      uid: nobody,
      gid: nobody,
      cwd: ROOT,
      encoding: 'utf8',
      timeout: 20_000,
    })
    expect(r.status, r.stderr).toBe(0)
    const out = JSON.parse(r.stdout.trim().split('\n')[0])
    expect(out).toMatchObject({ ok: false, stage: 'open', code: 'DB_READONLY', durably: true })
    expect(snapshot(p)).toEqual(before)
    expect(fs.existsSync(`${p}-wal`)).toBe(false)
  })

  it('a directory that does not exist → DB_CANTOPEN, and nothing is created', async () => {
    const dir = tempDir('durably-fault-bad-')
    const missing = path.join(dir, 'no', 'such', 'dir')
    const err = await tryUse(path.join(missing, 'x.db'))
    expectCode(err, 'DB_CANTOPEN')
    expect(err.message).toContain(missing)
    expect(fs.existsSync(path.join(dir, 'no'))).toBe(false)
  })

  it('a path that is a directory → DB_CANTOPEN', async () => {
    const dir = tempDir('durably-fault-bad-')
    const err = await tryUse(dir)
    expectCode(err, 'DB_CANTOPEN')
    expect(fs.readdirSync(dir)).toEqual([])
  })
})

describe('schema versions', () => {
  it('a file migrated by a newer durably → SCHEMA_TOO_NEW, and the file is unchanged', async (ctx) => {
    if (!hasPython()) {
      console.log('fault/badfiles SKIP schema-too-new: python3 with sqlite3 is needed to write a newer version row')
      ctx.skip('python3 missing')
      return
    }
    const dir = tempDir('durably-fault-bad-')
    const p = await realDb(dir)
    sql(p, "INSERT INTO schema_versions (version, applied_at) VALUES (99, '2099-01-01T00:00:00.000Z')")
    await until(() => !fs.existsSync(`${p}-wal`), { timeout: 10_000, what: 'python to close' })
    const before = snapshot(p)
    await sleep(20) // a write now would show in mtime
    const d = createDurably({ path: p, jobs: { job } })
    open.push(d)
    for (const attempt of [() => d.init(), () => d.migrate(), () => d.getRuns(), () => d.jobs.job.trigger({})]) {
      const err = await attempt().then(
        () => null,
        (e) => e,
      )
      expectCode(err, 'SCHEMA_TOO_NEW')
      expect(err.message).toMatch(/99.*newer/)
    }
    expect(snapshot(p)).toEqual(before)
    await d.close()
    open.length = 0
    await until(() => !fs.existsSync(`${p}-wal`), { timeout: 10_000, what: 'the engine to close' })
    expect(snapshot(p)).toEqual(before)
    expect(sql(p, 'SELECT version FROM schema_versions ORDER BY version')).toEqual([...VERSIONS, [99]])
  })

  it('migrate() from 4 processes at once on a new file: all succeed, one schema', async () => {
    const dir = tempDir('durably-fault-migrate-')
    for (let round = 0; round < 3; round++) {
      const p = path.join(dir, `new-${round}.db`)
      const go = path.join(dir, `go-${round}`)
      const ws = Array.from({ length: 4 }, () => spawnNode(fixture('fault-open.js'), [p, go]))
      await sleep(400) // let them all load and spin on the barrier
      fs.writeFileSync(go, '')
      const exits = await Promise.all(ws.map((w) => exitWithin(w, 30_000)))
      for (let i = 0; i < 4; i++) {
        expect(exits[i] && exits[i].code, ws[i].stderr()).toBe(0)
        const out = JSON.parse(ws[i].lines[0])
        expect(out, ws[i].lines.join('\n')).toMatchObject({ ok: true })
      }
      const d = createDurably({ path: p, jobs: { job } })
      open.push(d)
      const runs = await d.getRuns()
      expect(runs.map((r) => r.input.pid).sort()).toEqual(ws.map((w) => w.child.pid).sort())
      if (hasPython()) {
        expect(sql(p, 'SELECT version FROM schema_versions ORDER BY version')).toEqual(VERSIONS)
        expect(sql(p, "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name IN ('runs', 'steps', 'logs')")).toEqual([[3]])
      }
    }
  }, 60_000)
})
