'use strict'
// `npm run bench -- --backend postgres [--quick] [--only a,b] [--url postgres://…] [--out file]`
// (issue 16): trigger, batch, e2e_mc1 and e2e_mc8 on one PostgreSQL server,
// durably (createDurably({ url })) side by side with @coji/durably 0.15 on
// its PostgreSQL dialect (kysely + pg, installed into bench/upstream-pg on
// first use), each scenario and library on a fresh database of that server
// (bench/pgserver.js), ours first then upstream so load hits both alike.
//
// The server: --url, else DURABLY_BENCH_PG_URL or DURABLY_TEST_PG_URL, else a
// throwaway one started with scripts/test-pg.sh (and stopped at the end).
// A library that cannot run a scenario (e.g. an addon built without
// PostgreSQL: POSTGRES_UNSUPPORTED) is reported with its error, not skipped.
// multiprocess (ours only): P = 1 and 4 worker processes on one schema, each
// maxConcurrentRuns 4, P × R one-step runs over 32 concurrency keys; reports
// each P's runs/s, the ratio to one process, and whether every run executed
// exactly once.
// Targets (issue 16): ours ≥ 5× upstream steps/s at mc 8; 4 processes ≥ 2.5× one.

const fs = require('node:fs')
const path = require('node:path')
const { spawnSync } = require('node:child_process')

const ROOT = path.join(__dirname, '..')
const UPSTREAM_PG = path.join(__dirname, 'upstream-pg')
const SCENARIOS = ['trigger', 'batch', 'e2e_mc1', 'e2e_mc8', 'multiprocess']
/** Scenarios upstream has no counterpart of (it runs one process here). */
const OURS_ONLY = new Set(['multiprocess'])

function parseArgs(argv) {
  const o = { quick: false, only: null, url: null, out: path.join(__dirname, 'results-pg.json') }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    const val = () => (a.includes('=') ? a.slice(a.indexOf('=') + 1) : argv[++i])
    if (a === '--backend' || a.startsWith('--backend=')) {
      const b = val()
      if (b !== 'postgres') throw new Error(`bench/pg.js runs --backend postgres only (got ${b})`)
    } else if (a === '--quick') o.quick = true
    else if (a === '--only' || a.startsWith('--only=')) o.only = val().split(',').map((s) => s.trim()).filter(Boolean)
    else if (a === '--url' || a.startsWith('--url=')) o.url = val()
    else if (a === '--out' || a.startsWith('--out=')) o.out = path.resolve(val())
    else throw new Error(`unknown flag ${a} with --backend postgres (known: --quick, --only, --url, --out)`)
  }
  if (o.only) {
    const bad = o.only.filter((s) => !SCENARIOS.includes(s))
    if (bad.length) throw new Error(`unknown PostgreSQL scenario(s) ${bad.join(', ')} (known: ${SCENARIOS.join(', ')})`)
  }
  return o
}

function run(cmd, args, cwd) {
  const r = spawnSync(cmd, args, { cwd, stdio: 'inherit' })
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} (in ${cwd}) failed with ${r.status ?? r.signal}`)
}

function ensureUpstreamPg() {
  if (fs.existsSync(path.join(UPSTREAM_PG, 'node_modules', 'pg'))) return
  console.error('bench: installing @coji/durably 0.15 + kysely + pg into bench/upstream-pg (minutes)')
  run('npm', ['install', '--no-audit', '--no-fund'], UPSTREAM_PG)
}

/** The server's URL and, when this run started it, how to stop it. */
function server(o) {
  const url = o.url || process.env.DURABLY_BENCH_PG_URL || process.env.DURABLY_TEST_PG_URL
  if (url) return { url, stop: () => {} }
  const script = path.join(ROOT, 'scripts', 'test-pg.sh')
  const state = path.join(require('node:os').tmpdir(), `pg-server-durably-bench-${process.pid}.env`)
  const env = { ...process.env, DURABLY_PG_STATE: state, DURABLY_PG_PORT: '54400' }
  const r = spawnSync('bash', [script, 'start'], { env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] })
  const m = /DURABLY_TEST_PG_URL=(\S+)/.exec(r.stdout || '')
  if (r.status !== 0 || !m) throw new Error('could not start a PostgreSQL server (scripts/test-pg.sh start); pass --url')
  return { url: m[1], stop: () => spawnSync('bash', [script, 'stop'], { env, stdio: 'inherit' }) }
}

function runScenario(name, impl, o, url) {
  const t0 = Date.now()
  process.stderr.write(`bench: ${name} / ${impl} on PostgreSQL … `)
  const args = { impl, quick: o.quick, backend: 'postgres', pgUrl: url }
  const r = spawnSync(process.execPath, [path.join(__dirname, 'scenario.js'), name, JSON.stringify(args)], {
    cwd: ROOT,
    env: { ...process.env, DURABLY_BENCH_ROOT: o.snapshot },
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    timeout: 20 * 60_000,
    maxBuffer: 16 * 1024 * 1024,
  })
  const line = (r.stdout || '').split('\n').reverse().find((l) => l.startsWith('RESULT '))
  let res
  try {
    res = line ? JSON.parse(line.slice(7)) : { error: `no result (exit ${r.status ?? r.signal})` }
  } catch (err) {
    res = { error: `bad result line: ${err.message}` }
  }
  if (r.status !== 0 && !res.error) res.error = `exit ${r.status ?? r.signal}`
  process.stderr.write(`${res.error ? `ERROR ${res.error}` : 'ok'} (${((Date.now() - t0) / 1000).toFixed(1)} s)\n`)
  return res
}

const METRIC = { trigger: 'runsPerS', batch: 'runsPerS', e2e_mc1: 'stepsPerS', e2e_mc8: 'stepsPerS' }
const TARGET = { e2e_mc8: 5, multiprocess: 2.5 }

/**
 * The multiprocess row: ours = runs/s of 4 processes, upstream = runs/s of
 * one (ours), ratio = 4 processes / 1; met only if every run executed once.
 */
function multiprocessRow(r) {
  const by = r?.byProcesses ?? {}
  const one = by[1]
  const four = by[4]
  const once = [one, four].every((x) => x && x.executedTwiceOrMore === 0 && x.neverExecuted === 0 && x.leftRunning === 0 && x.leftPending === 0)
  const ratio = one && four ? four.ofOneProcess : null
  const na = `n/a (${String(r?.error ?? 'no result').slice(0, 60)})`
  return {
    scenario: 'multiprocess',
    metric: 'runsPerS 4 proc vs 1',
    ours: four ? four.runsPerS : na,
    upstream: one ? one.runsPerS : na,
    ratio,
    target: TARGET.multiprocess,
    met: ratio === null ? null : ratio >= TARGET.multiprocess && once,
  }
}

/** Rows of the summary: { scenario, metric, ours, upstream, ratio, target, met }. */
function summarize(results) {
  return Object.keys(results).map((name) => {
    if (name === 'multiprocess') return multiprocessRow(results[name].durably)
    const metric = METRIC[name]
    const ours = results[name].durably?.[metric] ?? null
    const up = results[name].upstream?.[metric] ?? null
    const ratio = ours && up ? Math.round((ours / up) * 100) / 100 : null
    const target = TARGET[name] ?? null
    const na = (r) => `n/a (${String(r?.error ?? 'no result').slice(0, 60)})`
    return {
      scenario: name,
      metric,
      ours: ours ?? na(results[name].durably),
      upstream: up ?? na(results[name].upstream),
      ratio,
      target,
      met: target === null || ratio === null ? null : ratio >= target,
    }
  })
}

function main(argv) {
  const o = parseArgs(argv)
  ensureUpstreamPg()
  o.snapshot = ROOT
  const srv = server(o)
  const results = {}
  try {
    for (const name of o.only ?? SCENARIOS) {
      results[name] = { durably: runScenario(name, 'durably', o, srv.url) }
      if (!OURS_ONLY.has(name)) results[name].upstream = runScenario(name, 'upstream', o, srv.url)
    }
  } finally {
    srv.stop()
  }
  const rows = summarize(results)
  const out = { backend: 'postgres', quick: o.quick, at: new Date().toISOString(), results, summary: rows }
  fs.writeFileSync(o.out, `${JSON.stringify(out, null, 2)}\n`)
  console.log('\nPostgreSQL: durably vs @coji/durably 0.15 (PostgresDialect), same server, same run')
  if (results.multiprocess) console.log('(multiprocess: ours only; "upstream" column = our 1 process, ratio = 4 processes / 1)')
  console.table(rows)
  console.log(`written: ${path.relative(process.cwd(), o.out)}`)
  const failed = Object.entries(results).flatMap(([name, r]) =>
    Object.entries(r).filter(([, v]) => v.error).map(([impl, v]) => `${name}/${impl}: ${v.error}`),
  )
  if (failed.length) {
    console.error(`bench: ${failed.length} scenario(s) failed: ${failed.join('; ')}`)
    process.exitCode = 1
  }
  return out
}

module.exports = { main, parseArgs, summarize, SCENARIOS }

if (require.main === module) main(process.argv.slice(2))
