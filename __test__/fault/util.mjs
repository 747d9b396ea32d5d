// Shared helpers of the fault suites (issue 5): an independent view of the
// database through Python's sqlite3, side-log parsing, child bookkeeping.
import fs from 'node:fs'
import path from 'node:path'
import { spawn, spawnSync } from 'node:child_process'
import helpers from '../helpers.js'

export const FIXTURES = path.join(helpers.ROOT, '__test__', 'fixtures')
export const fixture = (name) => path.join(FIXTURES, name)

/** An integer from the environment, or `dflt`. */
export function envInt(name, dflt) {
  const v = process.env[name]
  if (v === undefined || v === '') return dflt
  const n = Number(v)
  if (!Number.isInteger(n) || n < 0) throw new Error(`${name} must be a non-negative integer (got ${v})`)
  return n
}

let python
/** True when `python3` with its sqlite3 module can be run. */
export function hasPython() {
  if (python === undefined) {
    const r = spawnSync('python3', ['-c', 'import sqlite3'], { stdio: 'ignore' })
    python = r.status === 0
  }
  return python
}

/** Raw SQL on a database file (the one test helper, see __test__/helpers.js). */
export const sql = helpers.sql

/**
 * Audit tables filled by SQLite triggers inside the engine's own
 * transactions: every step row written (insert or update) and every run
 * reaching a terminal status. Exact, unlike anything a killed process logs.
 */
export const AUDIT_SQL = `
CREATE TABLE IF NOT EXISTS fault_step_audit (run_id TEXT, name TEXT, status TEXT, output TEXT);
CREATE TRIGGER IF NOT EXISTS fault_steps_ins AFTER INSERT ON steps BEGIN
  INSERT INTO fault_step_audit VALUES (new.run_id, new.name, new.status, new.output);
END;
CREATE TRIGGER IF NOT EXISTS fault_steps_upd AFTER UPDATE ON steps BEGIN
  INSERT INTO fault_step_audit VALUES (new.run_id, new.name, new.status, new.output);
END;
CREATE TABLE IF NOT EXISTS fault_run_audit (run_id TEXT, status TEXT, output TEXT, lease_generation INTEGER);
CREATE TRIGGER IF NOT EXISTS fault_runs_end AFTER UPDATE OF status ON runs
  WHEN new.status IN ('completed', 'failed', 'cancelled') BEGIN
  INSERT INTO fault_run_audit VALUES (new.id, new.status, new.output, new.lease_generation);
END;
`

/** Lines of a side log split on spaces (a torn last line, impossible with single writes, is dropped). */
export function readSideLog(file) {
  if (!fs.existsSync(file)) return []
  const text = fs.readFileSync(file, 'utf8')
  const lines = text.split('\n')
  lines.pop() // '' after the final newline (or a torn line)
  return lines.map((l) => l.split(' '))
}

/** Groups items by key(item). */
export function groupBy(items, key) {
  const m = new Map()
  for (const it of items) {
    const k = key(it)
    let list = m.get(k)
    if (!list) m.set(k, (list = []))
    list.push(it)
  }
  return m
}

export const rand = (lo, hi) => lo + Math.floor(Math.random() * (hi - lo + 1))

/** Resolves with the child's exit, or with null after `ms`. */
export function exitWithin(w, ms) {
  let t
  return Promise.race([w.exited, new Promise((r) => (t = setTimeout(() => r(null), ms)))]).finally(() =>
    clearTimeout(t),
  )
}

/** Resolves when `w` printed a line matching `re` (with that line), or null if it exited first / after `ms`. */
export function lineWithin(w, re, ms, from = 0) {
  return new Promise((resolve) => {
    let done = false
    const finish = (v) => {
      if (done) return
      done = true
      clearInterval(iv)
      clearTimeout(t)
      resolve(v)
    }
    const check = () => {
      for (let i = from; i < w.lines.length; i++) if (re.test(w.lines[i])) return finish(w.lines[i])
    }
    const iv = setInterval(check, 2)
    const t = setTimeout(() => finish(null), ms)
    w.exited.then(() => {
      check()
      finish(null)
    })
    check()
  })
}

/** Kills a child we started (by its pid) and waits for it to be gone. */
export async function killChild(w, signal = 'SIGKILL') {
  try {
    w.child.kill(signal)
  } catch {
    // already gone
  }
  return w.exited
}

/**
 * Another process (Python's sqlite3) holds the write lock of `db`
 * (BEGIN EXCLUSIVE) for `ms`, then rolls back. Returns { child, locked, released }.
 */
export function holdWriteLock(db, ms) {
  const child = spawn(
    'python3',
    [
      '-c',
      'import sqlite3,sys,time\n' +
        'c=sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)\n' +
        'c.execute("BEGIN EXCLUSIVE")\n' +
        'print("locked", flush=True)\n' +
        'time.sleep(float(sys.argv[2]) / 1000)\n' +
        'c.execute("ROLLBACK")\n' +
        'c.close()\n' +
        'print("released", flush=True)',
      db,
      String(ms),
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  )
  let out = ''
  const waiters = []
  child.stdout.on('data', (c) => {
    out += c
    for (const w of waiters) w()
  })
  const seen = (word) =>
    new Promise((resolve, reject) => {
      const check = () => out.includes(word) && resolve(Date.now())
      waiters.push(check)
      check()
      child.on('exit', (code) => {
        check()
        reject(new Error(`lock holder exited (${code}) before '${word}'`))
      })
    })
  return { child, locked: seen('locked'), released: seen('released') }
}
