#!/usr/bin/env node
'use strict'
// Mutation check of the lease fence (issue 22): removes each guard of each
// fenced write in src/store/ in turn, runs the store contract suite
// (`cargo test --lib store::contract`) and requires that at least one test
// fails. A mutation that survives is a guard no test would miss.
//
// It finds the guards itself, so a new fenced write is covered without
// editing this file:
// - every SQL string literal (in src/store/*.rs, test files excluded) that
//   fences on the lease, `lease_generation = ?N`, gives two mutations: the
//   generation guard becomes `(lease_generation = ?N OR 1)`, and its status
//   guard `status = 'running'` (which the same literal must have, or the
//   script fails) becomes `(status = 'running' OR 1)`;
// - every row-count guard `if changed > 0`, the Rust half of the fence (the
//   step row is written, and an op reported as written, only when the
//   fenced UPDATE matched), becomes `if changed > 0 || true`.
// It fails if it finds fewer than MIN_FENCED_STATEMENTS / MIN_ROW_COUNT_GUARDS
// (a guard renamed out of the pattern would otherwise go unchecked).
//
// Every mutated file is restored afterwards, also on failure or Ctrl-C.
// Usage: node scripts/mutate-fences.js [--list]   (--list: print the mutations only)

const fs = require('node:fs')
const path = require('node:path')
const { spawn } = require('node:child_process')

const ROOT = path.resolve(__dirname, '..')
const STORE = path.join(ROOT, 'src', 'store')
const FILTER = 'store::contract'
/** Fenced statements on main when this check was written: 6 flush ops and the heartbeat. */
const MIN_FENCED_STATEMENTS = 7
/** The step row's guard and the op status's guard in flush.rs. */
const MIN_ROW_COUNT_GUARDS = 2

const GENERATION = /\blease_generation\s*=\s*(\?\d*|:\w+|\$\d+)/g
const STATUS = /\bstatus\s*=\s*'running'/g
const ROW_COUNT = /\bif changed > 0\b/g

/** Store sources that are not tests. */
function sourceFiles(dir = STORE) {
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

/** Every mutation: { file, line, what, guard, apply(text) → mutated text }. */
function findMutations() {
  const mutations = []
  const errors = []
  let statements = 0
  let rowGuards = 0
  for (const file of sourceFiles()) {
    const src = fs.readFileSync(file, 'utf8')
    const rel = path.relative(ROOT, file)
    for (const lit of stringLiterals(src)) {
      const sql = src.slice(lit.start, lit.end)
      const gens = [...sql.matchAll(GENERATION)]
      if (gens.length === 0) continue
      statements++
      const line = lineOf(src, lit.start)
      const what = label(sql)
      const statuses = [...sql.matchAll(STATUS)]
      if (statuses.length === 0) errors.push(`${rel}:${line} fences on lease_generation without status = 'running': ${what}`)
      const at = (m, replacement) => (text) =>
        text.slice(0, lit.start + m.index) + replacement + text.slice(lit.start + m.index + m[0].length)
      for (const m of gens) {
        mutations.push({ file, rel, line, what, guard: 'generation', apply: at(m, `(${m[0]} OR 1)`) })
      }
      for (const m of statuses) {
        mutations.push({ file, rel, line, what, guard: 'status', apply: at(m, `(${m[0]} OR 1)`) })
      }
    }
    for (const m of src.matchAll(ROW_COUNT)) {
      if (stringLiterals(src).some((l) => m.index >= l.start && m.index < l.end)) continue
      rowGuards++
      const line = lineOf(src, m.index)
      const what = src.slice(m.index).split('\n')[0].trim()
      mutations.push({
        file,
        rel,
        line,
        what: what.length > 48 ? `${what.slice(0, 45)}...` : what,
        guard: 'row count',
        apply: (text) => text.slice(0, m.index) + `${m[0]} || true` + text.slice(m.index + m[0].length),
      })
    }
  }
  if (statements < MIN_FENCED_STATEMENTS) {
    errors.push(`found ${statements} fenced statements in src/store, expected at least ${MIN_FENCED_STATEMENTS}`)
  }
  if (rowGuards < MIN_ROW_COUNT_GUARDS) {
    errors.push(`found ${rowGuards} row-count guards (if changed > 0) in src/store, expected at least ${MIN_ROW_COUNT_GUARDS}`)
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

/** Builds the test binary; then runs the contract suite. */
async function runSuite() {
  const build = await cargo(['test', '--lib', '--no-run', '-q'])
  if (build.code !== 0) return { result: 'build error', out: build.out, secs: build.secs }
  const test = await cargo(['test', '--lib', '-q', FILTER])
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

async function main() {
  const t0 = Date.now()
  const { mutations, errors, statements, rowGuards } = findMutations()
  console.log(`fence mutations: ${statements} fenced statements, ${rowGuards} row-count guards, ${mutations.length} mutations`)
  if (process.argv.includes('--list')) {
    for (const m of mutations) console.log(`  ${m.rel}:${m.line}  ${m.guard.padEnd(10)}  ${m.what}`)
    for (const e of errors) console.log(`ERROR ${e}`)
    return errors.length ? 1 : 0
  }
  if (errors.length) {
    for (const e of errors) console.log(`ERROR ${e}`)
    return 1
  }

  const base = await runSuite()
  if (base.result !== 'passed' || base.ran === 0) {
    console.log(base.out)
    console.log(`ERROR the contract suite does not pass unmutated (${base.result}, ${base.ran} tests)`)
    return 1
  }
  console.log(`baseline: ${base.ran} contract tests pass (${base.secs.toFixed(1)} s)`)

  const rows = []
  for (const m of mutations) {
    const text = fs.readFileSync(m.file, 'utf8')
    originals.set(m.file, text)
    const mutated = m.apply(text)
    if (mutated === text) throw new Error(`mutation of ${m.rel}:${m.line} changed nothing`)
    fs.writeFileSync(m.file, mutated)
    let r
    try {
      r = await runSuite()
    } finally {
      restoreAll()
    }
    const status = r.result === 'failed' ? 'killed' : r.result === 'passed' ? 'SURVIVED' : r.result.toUpperCase()
    rows.push({ m, status, r })
    const by = r.failed && r.failed.length ? `${r.failed.length} failing, e.g. ${r.failed[0].replace('store::contract::', '')}` : ''
    console.log(
      `${status.padEnd(11)} ${`${m.rel}:${m.line}`.padEnd(24)} ${m.guard.padEnd(10)} ${m.what.padEnd(48)} ${r.secs.toFixed(1).padStart(5)} s  ${by}`,
    )
    if (r.result !== 'failed' && r.result !== 'passed') console.log(r.out)
  }
  // Rebuild the unmutated binary so later cargo commands start from the real code.
  const back = await runSuite()
  const bad = rows.filter((x) => x.status !== 'killed')
  console.log(
    `\n${rows.length - bad.length}/${rows.length} mutations killed, ${bad.length} not killed; ` +
      `restored build ${back.result}; total ${((Date.now() - t0) / 1000).toFixed(0)} s`,
  )
  if (back.result !== 'passed') return 1
  return bad.length ? 1 : 0
}

main().then(
  (code) => (process.exitCode = code),
  (err) => {
    restoreAll()
    console.error(err)
    process.exitCode = 1
  },
)
