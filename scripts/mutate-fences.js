#!/usr/bin/env node
'use strict'
// Mutation check of the lease fence (issue 22): removes each guard of each
// fenced write of a store in turn, runs that store's contract suite
// (`cargo test --lib store::contract::<backend>`) and requires that at least
// one test fails. A mutation that survives is a guard no test would miss.
//
// It finds the guards itself, so a new fenced write is covered without
// editing this file:
// - every SQL string literal (in the backend's sources, tests excluded) that
//   fences on the lease, `lease_generation = ?N` (or `$N`, or a column
//   `<alias>.generation` of the ops' own rows, as PostgreSQL's one statement
//   for a batch's steps joins them), gives two
//   mutations: the generation guard becomes `(lease_generation = ?N OR TRUE)`,
//   and its status guard `status = 'running'` (which the same literal must
//   have, or the script fails) becomes `(status = 'running' OR TRUE)`;
// - a fence written once as a macro (the SQLite store's `lease_fence!`) is
//   mutated in its definition and, one guard at a time, at each use (see
//   findMutations);
// - every row-count guard `if changed > 0`, the Rust half of the fence (the
//   step row is written, and an op reported as written, only when the
//   fenced UPDATE matched), becomes `if changed > 0 || true`.
// It fails if it finds fewer guards than the backend had when it was added
// here (a guard renamed out of the pattern would otherwise go unchecked).
//
// Backends (BACKENDS below): the SQLite store (src/store), and the
// PostgreSQL store (src/pg, when present), whose suite needs a server:
// DURABLY_TEST_PG_URL (scripts/test-pg.sh start); without it the backend is
// skipped, except under CI=true, where that is an error.
//
// Every mutated file is restored afterwards, also on failure or Ctrl-C.
// Usage: node scripts/mutate-fences.js [--list] [backend…]
//   --list: print the mutations only; backend names (sqlite, postgres) pick some.

const fs = require('node:fs')
const path = require('node:path')
const { spawn } = require('node:child_process')

const ROOT = path.resolve(__dirname, '..')

const BACKENDS = [
  {
    name: 'sqlite',
    dir: 'src/store',
    cargo: [],
    filter: 'store::contract::sqlite',
    // 6 flush ops and the heartbeat; the step row's and the op status's row-count guards.
    minStatements: 7,
    minRowGuards: 2,
  },
  {
    name: 'postgres',
    dir: 'src/pg',
    cargo: ['--features', 'postgres'],
    filter: 'store::contract::postgres',
    // The cases wait on the server, not the CPU: more at once halves the run.
    testArgs: ['--test-threads', '8'],
    // The same 7 writes, plus the statements of a group of step results
    // and of a group of completions (src/pg/flush.rs STEPS_SQL,
    // COMPLETES_SQL); the step row is fenced inside its statement, so one
    // row-count guard.
    minStatements: 9,
    minRowGuards: 1,
    needs: () => (process.env.DURABLY_TEST_PG_URL ? null : 'DURABLY_TEST_PG_URL is not set (scripts/test-pg.sh start)'),
  },
]

const GENERATION = /\blease_generation\s*=\s*(\?\d*|:\w+|\$\d+|\w+\.generation\b)/g
const STATUS = /\bstatus\s*=\s*'running'/g
const ROW_COUNT = /\bif changed > 0\b/g
const MACRO_DEF = /macro_rules!\s*(\w+)\s*\{/g

/** A backend's sources that are not tests (no contract/, tests*.rs, migrations). */
function sourceFiles(dir) {
  const out = []
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name)
    if (entry.isDirectory()) {
      if (entry.name !== 'contract' && entry.name !== 'migrations') out.push(...sourceFiles(p))
    } else if (entry.name.endsWith('.rs') && !/^tests?(_\w+)?\.rs$/.test(entry.name)) {
      out.push(p)
    }
  }
  return out.sort()
}

/**
 * The string literals of Rust source `src`: [{ start, end }] (offsets of the
 * contents, quotes excluded). Skips comments, char literals and lifetimes.
 */
function stringLiterals(src) {
  const out = []
  let i = 0
  const ident = (c) => c !== undefined && /[A-Za-z0-9_]/.test(c)
  while (i < src.length) {
    const c = src[i]
    if (c === '/' && src[i + 1] === '/') {
      i = src.indexOf('\n', i)
      if (i < 0) break
    } else if (c === '/' && src[i + 1] === '*') {
      i = src.indexOf('*/', i + 2)
      if (i < 0) break
      i += 2
    } else if (c === "'") {
      if (src[i + 1] === '\\') i = src.indexOf("'", i + 3) + 1 // '\n', '\'', '\u{..}'
      else if (src[i + 2] === "'") i += 3 // 'x'
      else i += 1 // a lifetime
    } else if (c === 'r' && !ident(src[i - 1]) && /^r#*"/.test(src.slice(i, i + 260))) {
      const hashes = /^r(#*)"/.exec(src.slice(i))[1]
      const start = i + 2 + hashes.length
      const end = src.indexOf('"' + hashes, start)
      out.push({ start, end })
      i = end + 1 + hashes.length
    } else if (c === '"') {
      let j = i + 1
      while (j < src.length && src[j] !== '"') j += src[j] === '\\' ? 2 : 1
      out.push({ start: i + 1, end: j })
      i = j + 1
    } else {
      i += 1
    }
  }
  return out
}

const lineOf = (src, offset) => src.slice(0, offset).split('\n').length

/** What the literal does, for the table: its SQL's first words. */
function label(sql) {
  const flat = sql.replace(/\\\n\s*/g, '').replace(/\s+/g, ' ').trim()
  return flat.length > 48 ? `${flat.slice(0, 45)}...` : flat
}

/** Whether `offset` of `src` is inside a line or block comment. */
function inComment(src, offset) {
  const lineStart = src.lastIndexOf('\n', offset) + 1
  if (/\/\//.test(src.slice(lineStart, offset).replace(/"[^"]*"/g, ''))) return true
  const open = src.lastIndexOf('/*', offset)
  return open >= 0 && src.lastIndexOf('*/', offset) < open
}

/** The weakened forms of a fence's SQL, one guard each: [{ guard, sql }]. */
function weakenings(sql) {
  const out = []
  for (const [guard, re] of [
    ['generation', GENERATION],
    ['status', STATUS],
  ]) {
    for (const m of sql.matchAll(re)) {
      out.push({ guard, sql: sql.slice(0, m.index) + `(${m[0]} OR TRUE)` + sql.slice(m.index + m[0].length) })
    }
  }
  return out
}

/**
 * The backend's mutations: { file, rel, line, what, guard, apply(text) → mutated text }.
 * A fence written once as a macro (`macro_rules! NAME { () => { "…" } }`
 * whose literal fences on the lease, like the SQLite store's `lease_fence!`)
 * is mutated in its definition (both guards: every use at once) and at each
 * use `NAME!()` in turn, replaced by the fence's literal with one guard
 * weakened; each use counts as a fenced statement, the definition does not.
 */
function findMutations(backend) {
  const mutations = []
  const errors = []
  let statements = 0
  let rowGuards = 0
  const files = sourceFiles(path.join(ROOT, backend.dir)).map((file) => {
    const src = fs.readFileSync(file, 'utf8')
    return { file, rel: path.relative(ROOT, file), src, literals: stringLiterals(src) }
  })
  // Fence macros: name → the SQL of their literal, and where they are defined.
  const fences = new Map()
  const macroSpans = new Map() // file → [[start, end]]
  for (const { file, src, literals } of files) {
    for (const m of src.matchAll(MACRO_DEF)) {
      const end = src.indexOf('\n}', m.index)
      const lit = literals.find((l) => l.start > m.index && l.end < end)
      if (!lit || !new RegExp(GENERATION.source).test(src.slice(lit.start, lit.end))) continue
      fences.set(m[1], src.slice(lit.start, lit.end))
      macroSpans.set(file, [...(macroSpans.get(file) ?? []), [m.index, end]])
    }
  }
  for (const { file, rel, src, literals } of files) {
    const spans = macroSpans.get(file) ?? []
    for (const lit of literals) {
      const sql = src.slice(lit.start, lit.end)
      const gens = [...sql.matchAll(GENERATION)]
      if (gens.length === 0) continue
      const inMacro = spans.some(([a, b]) => lit.start > a && lit.start < b)
      if (!inMacro) statements++
      const line = lineOf(src, lit.start)
      const what = label(sql)
      const statuses = [...sql.matchAll(STATUS)]
      if (statuses.length === 0) errors.push(`${rel}:${line} fences on lease_generation without status = 'running': ${what}`)
      const at = (m, replacement) => (text) =>
        text.slice(0, lit.start + m.index) + replacement + text.slice(lit.start + m.index + m[0].length)
      const kind = inMacro ? ' (def)' : ''
      for (const m of gens) {
        mutations.push({ file, rel, line, what, guard: `generation${kind}`, apply: at(m, `(${m[0]} OR TRUE)`) })
      }
      for (const m of statuses) {
        mutations.push({ file, rel, line, what, guard: `status${kind}`, apply: at(m, `(${m[0]} OR TRUE)`) })
      }
    }
    // Each use of a fence macro: that statement's own fence, weakened.
    for (const [name, sql] of fences) {
      for (const m of src.matchAll(new RegExp(`\\b${name}!\\(\\)`, 'g'))) {
        if (inComment(src, m.index) || literals.some((l) => m.index >= l.start && m.index < l.end)) continue
        statements++
        const line = lineOf(src, m.index)
        const before = literals.filter((l) => l.end < m.index).pop()
        const what = `${name}!() in ${before ? label(src.slice(before.start, before.end)) : '?'}`.slice(0, 48)
        for (const w of weakenings(sql)) {
          mutations.push({
            file,
            rel,
            line,
            what,
            guard: `${w.guard} (use)`,
            apply: (text) => text.slice(0, m.index) + JSON.stringify(w.sql) + text.slice(m.index + m[0].length),
          })
        }
      }
    }
    for (const m of src.matchAll(ROW_COUNT)) {
      if (literals.some((l) => m.index >= l.start && m.index < l.end)) continue
      rowGuards++
      const line = lineOf(src, m.index)
      mutations.push({
        file,
        rel,
        line,
        what: label(src.slice(m.index).split('\n')[0]),
        guard: 'row count',
        apply: (text) => text.slice(0, m.index) + `${m[0]} || true` + text.slice(m.index + m[0].length),
      })
    }
  }
  if (statements < backend.minStatements) {
    errors.push(`found ${statements} fenced statements in ${backend.dir}, expected at least ${backend.minStatements}`)
  }
  if (rowGuards < backend.minRowGuards) {
    errors.push(
      `found ${rowGuards} row-count guards (if changed > 0) in ${backend.dir}, expected at least ${backend.minRowGuards}`,
    )
  }
  return { mutations, errors, statements, rowGuards }
}

// ---- restoring files, whatever happens ---------------------------------------

const originals = new Map() // file → its text before any mutation
let child = null // the cargo process running now
function restoreAll() {
  for (const [file, text] of originals) fs.writeFileSync(file, text)
  originals.clear()
}
process.on('exit', restoreAll)
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    if (child) child.kill('SIGKILL')
    restoreAll()
    console.log(`\n${sig}: restored the mutated files`)
    process.exit(130)
  })
}

/** Runs cargo (asynchronously, so a signal is handled at once). */
function cargo(args) {
  const t0 = Date.now()
  return new Promise((resolve, reject) => {
    // Incremental builds: each mutant recompiles only this crate, in seconds.
    const env = { ...process.env, CARGO_INCREMENTAL: '1' }
    child = spawn('cargo', args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    child.stdout.on('data', (c) => (out += c))
    child.stderr.on('data', (c) => (out += c))
    child.on('error', reject)
    child.on('close', (code) => {
      child = null
      resolve({ code, out, secs: (Date.now() - t0) / 1000 })
    })
  })
}

/** Builds the backend's test binary; then runs its contract suite. */
async function runSuite(backend) {
  const build = await cargo(['test', '--lib', '--no-run', '-q', ...backend.cargo])
  if (build.code !== 0) return { result: 'build error', out: build.out, secs: build.secs }
  const test = await cargo(['test', '--lib', '-q', ...backend.cargo, backend.filter, '--', ...(backend.testArgs || [])])
  const failed = [...test.out.matchAll(/^ {4}(store::contract::\S+)$/gm)].map((m) => m[1])
  const ran = /test result: \w+\. (\d+) passed; (\d+) failed/.exec(test.out)
  return {
    result: test.code === 0 ? 'passed' : failed.length ? 'failed' : 'error',
    failed,
    ran: ran ? Number(ran[1]) + Number(ran[2]) : 0,
    out: test.out,
    secs: build.secs + test.secs,
  }
}

/** Mutates, tests and restores each guard of one backend; returns its failures. */
async function check(backend, list) {
  const { mutations, errors, statements, rowGuards } = findMutations(backend)
  console.log(
    `\n== ${backend.name} (${backend.dir}): ${statements} fenced statements, ${rowGuards} row-count guards, ` +
      `${mutations.length} mutations`,
  )
  if (list) {
    for (const m of mutations) console.log(`  ${m.rel}:${m.line}  ${m.guard.padEnd(10)}  ${m.what}`)
    for (const e of errors) console.log(`ERROR ${e}`)
    return errors.length
  }
  if (errors.length) {
    for (const e of errors) console.log(`ERROR ${e}`)
    return errors.length
  }
  const base = await runSuite(backend)
  if (base.result !== 'passed' || base.ran === 0) {
    console.log(base.out)
    console.log(`ERROR the ${backend.name} contract suite does not pass unmutated (${base.result}, ${base.ran} tests)`)
    return 1
  }
  console.log(`baseline: ${base.ran} contract tests pass (${base.secs.toFixed(1)} s)`)

  let bad = 0
  for (const m of mutations) {
    const text = fs.readFileSync(m.file, 'utf8')
    originals.set(m.file, text)
    const mutated = m.apply(text)
    if (mutated === text) throw new Error(`mutation of ${m.rel}:${m.line} changed nothing`)
    fs.writeFileSync(m.file, mutated)
    let r
    try {
      r = await runSuite(backend)
    } finally {
      restoreAll()
    }
    const status = r.result === 'failed' ? 'killed' : r.result === 'passed' ? 'SURVIVED' : r.result.toUpperCase()
    if (status !== 'killed') bad++
    const by = r.failed && r.failed.length ? `${r.failed.length} failing, e.g. ${r.failed[0].replace('store::contract::', '')}` : ''
    console.log(
      `${status.padEnd(11)} ${`${m.rel}:${m.line}`.padEnd(24)} ${m.guard.padEnd(10)} ${m.what.padEnd(48)} ${r.secs.toFixed(1).padStart(5)} s  ${by}`,
    )
    if (r.result !== 'failed' && r.result !== 'passed') console.log(r.out)
  }
  // Rebuild the unmutated binary so later cargo commands start from the real code.
  const back = await runSuite(backend)
  console.log(`${backend.name}: ${mutations.length - bad}/${mutations.length} mutations killed; restored build ${back.result}`)
  return bad + (back.result === 'passed' ? 0 : 1)
}

async function main() {
  const t0 = Date.now()
  const args = process.argv.slice(2)
  const list = args.includes('--list')
  const names = args.filter((a) => !a.startsWith('--'))
  for (const n of names) {
    if (!BACKENDS.some((b) => b.name === n)) throw new Error(`unknown backend ${n} (known: ${BACKENDS.map((b) => b.name).join(', ')})`)
  }
  let failures = 0
  for (const backend of BACKENDS) {
    if (names.length && !names.includes(backend.name)) continue
    if (!fs.existsSync(path.join(ROOT, backend.dir))) {
      if (names.includes(backend.name)) throw new Error(`${backend.dir} does not exist`)
      continue
    }
    const missing = !list && backend.needs && backend.needs()
    if (missing) {
      if (process.env.CI) {
        console.log(`\nERROR ${backend.name}: ${missing}`)
        failures++
      } else {
        console.log(`\n== ${backend.name}: SKIPPED, ${missing}`)
      }
      continue
    }
    failures += await check(backend, list)
  }
  const verdict = failures ? `FAILED: ${failures} problem(s)` : list ? 'listed' : 'every fence guard is killed by a test'
  console.log(`\n${verdict}; total ${((Date.now() - t0) / 1000).toFixed(0)} s`)
  return failures ? 1 : 0
}

main().then(
  (code) => (process.exitCode = code),
  (err) => {
    restoreAll()
    console.error(err)
    process.exitCode = 1
  },
)
