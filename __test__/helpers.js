'use strict'
// Test helpers: temp databases, instances that are closed after each test,
// child Node processes.

const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { spawn, execFileSync } = require('node:child_process')
const { createDurably } = require('..')

const ROOT = path.resolve(__dirname, '..')

const tempDirs = []
process.once('exit', () => {
  for (const dir of tempDirs) fs.rmSync(dir, { recursive: true, force: true })
})

/** A fresh temp directory, removed at exit. */
function tempDir(prefix = 'durably-test-') {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix))
  tempDirs.push(dir)
  return dir
}

/** A path for a fresh database file in a temp directory. */
function tempDb(name = 'test.db') {
  return path.join(tempDir(), name)
}

/**
 * Whether this process runs the suites on PostgreSQL (the `postgres` vitest
 * project, vitest.config.mjs). A case that cannot apply there is skipped by
 * `it.skipIf(onPostgres)` with the reason in its title.
 */
const onPostgres = process.env.DURABLY_TEST_BACKEND === 'postgres'

const open = new Set()

/**
 * The store of a test instance: a temp SQLite file, or with
 * DURABLY_TEST_BACKEND=postgres a fresh schema on DURABLY_TEST_PG_URL (so any
 * suite built on makeDurably can be run on PostgreSQL; see __test__/pg.js).
 */
function testStore() {
  if (onPostgres) return require('./pg.js').pgOptions('suite')
  return { path: tempDb() }
}

/** createDurably on a temp store with fast test timings; closed by closeAll(). */
function makeDurably(options = {}) {
  const own = options.path !== undefined || options.url !== undefined
  const d = createDurably({
    ...(own ? {} : testStore()),
    pollingInterval: 50,
    heartbeatInterval: 100,
    staleThreshold: 1000,
    ...options,
  })
  open.add(d)
  return d
}

async function closeAll() {
  const list = [...open]
  open.clear()
  await Promise.allSettled(list.map((d) => d.close()))
}

/**
 * Spawns `node script args…` with stdout lines delivered to `onLine`.
 * Returns { child, exited: Promise<{code, signal}>, lines: string[] }.
 */
function spawnNode(script, args = [], { env = {}, onLine } = {}) {
  const child = spawn(process.execPath, [script, ...args], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const lines = []
  let buf = ''
  child.stdout.on('data', (chunk) => {
    buf += chunk
    let i
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i)
      buf = buf.slice(i + 1)
      lines.push(line)
      if (onLine) onLine(line)
    }
  })
  let stderr = ''
  child.stderr.on('data', (c) => (stderr += c))
  const exited = new Promise((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal, stderr })),
  )
  return { child, exited, lines, stderr: () => stderr }
}

/** Resolves when `pred()` is truthy, polling every `every` ms, or rejects after `timeout`. */
async function until(pred, { timeout = 10_000, every = 10, what = 'condition' } = {}) {
  const end = Date.now() + timeout
  for (;;) {
    const v = await pred()
    if (v) return v
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, every))
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

/**
 * Raw SQL on a database file from a test, through Python's sqlite3: an
 * independent view of what is stored, and a way to write as another tool
 * would. Autocommit (a write is committed at once); `script: true` runs
 * several statements (executescript) and returns []; otherwise returns the
 * rows of the statement. `timeout`: seconds to wait for a lock.
 */
function sql(dbPath, query, { script = false, timeout = 5 } = {}) {
  const out = execFileSync(
    'python3',
    [
      '-c',
      'import sqlite3,sys,json\n' +
        'c=sqlite3.connect(sys.argv[1], timeout=float(sys.argv[4]), isolation_level=None)\n' +
        'if sys.argv[3] == "1":\n  c.executescript(sys.argv[2]); print("[]")\n' +
        'else:\n  print(json.dumps([list(r) for r in c.execute(sys.argv[2])]))\n' +
        'c.close()',
      dbPath,
      query,
      script ? '1' : '0',
      String(timeout),
    ],
    { maxBuffer: 256 * 1024 * 1024 },
  )
  return JSON.parse(out.toString())
}

/** Options that open the store of instance `d` again (another instance on the same store). */
function sameStore(d) {
  const b = d._options.backend
  return b.kind === 'postgres' ? { url: b.url, schema: b.schema } : { path: d._options.path }
}

/** testStore() options as one argument for a child process (a path, or JSON). */
function storeArg(store) {
  return store.path ?? JSON.stringify(store)
}

/**
 * Rows of `query` (plain SQL both stores accept) on a store: `target` is an
 * instance or testStore() options. Through sql() on a SQLite file, or through
 * psql on a PostgreSQL schema. `json`: the positions of JSON columns, parsed
 * on SQLite (text there) as PostgreSQL's json columns come back, so that both
 * give the same rows (or select `CAST(col AS TEXT)` to compare the text).
 */
function storeSql(target, query, { json = [] } = {}) {
  const o = target._options ?? target
  const pg = o.backend ? (o.backend.kind === 'postgres' ? o.backend : null) : o.url !== undefined ? o : null
  if (pg !== null) {
    const out = require('./pg.js').sql(
      pg.url,
      `SET search_path TO "${pg.schema}"; SELECT coalesce(json_agg(row_to_json(t)), '[]') FROM (${query}) t`,
    )
    return JSON.parse(out).map((r) => Object.values(r))
  }
  return sql(o.path, query).map((r) => r.map((v, i) => (json.includes(i) && v !== null ? JSON.parse(v) : v)))
}

module.exports = { ROOT, onPostgres, storeSql, storeArg, sameStore, tempDir, tempDb, testStore, makeDurably, closeAll, spawnNode, until, sleep, sql }
