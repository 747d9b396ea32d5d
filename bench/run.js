'use strict'
// The benchmark of issue 7: `npm run bench [-- flags]`.
//
//   --only a,b     run only these scenarios (names below)
//   --repeat N     run each scenario N times, the libraries alternating
//                  (ours, upstream, plainjob, ours, …), and keep the run with
//                  the median figure, all runs' figures in `repeats` (not
//                  latency, latency_xp, cold_commit, loop, after_big_value:
//                  once, their own samples are their spread)
//   --quick        smaller sizes (a smoke run, figures not comparable)
//   --runs N       runs of the e2e scenarios and their loops (default 2,000):
//                  a longer process shows the speed after the JIT's warm-up
//   --upstream     also run @coji/durably 0.15 + better-sqlite3 12 (installed
//                  into bench/upstream/node_modules on first use) and print
//                  ours/upstream ratios against the issue's targets
//   --peers        also run plainjob 0.0.14 + better-sqlite3 12 (installed
//                  into bench/peers/node_modules on first use) where it has a
//                  counterpart (trigger, batch, onestep)
//   --out file     where to write the JSON (default bench/results.json)
//   --svg file     where to write the bar chart (default bench/results.svg)
//   --backend postgres   trigger, batch, e2e_mc1, e2e_mc8 on a PostgreSQL server
//                  against @coji/durably 0.15 on PostgresDialect (bench/pg.js)
//
// Needs the release addon: builds it (`npm run build`) when it is missing, is
// a debug build, or is older than the Rust sources, then measures a copy of
// the package taken at start (see snapshot()). Every scenario runs in its own
// child process (bench/scenario.js) on a fresh temp database (WAL,
// synchronous 'normal' unless stated); for each scenario ours runs first, then
// upstream, so load changes on a shared machine hit both alike. The
// references (ceiling, ceiling_group, ceiling_rows, ceiling_full, cold_commit) are plain
// rusqlite loops in bench/ceiling.rs, a cargo example built on demand
// (`cargo build --release --example ceiling`), never part of the addon.
// At the end: the JSON, the table against upstream, the table of issue 19
// (each ratio against its reference in this same invocation) and an SVG chart.

const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { spawnSync } = require('node:child_process')

const ROOT = path.join(__dirname, '..')
const ADDON = path.join(ROOT, 'durably.linux-x64-gnu.node')
const UPSTREAM = path.join(__dirname, 'upstream')
const PEERS = path.join(__dirname, 'peers')
const CEILING = path.join(ROOT, 'target', 'release', 'examples', 'ceiling')
const report = require('./report.js')

// Each ceiling runs right after the scenario it bounds, so both meet the same machine load.
const SCENARIOS = [
  'trigger',
  'batch',
  'ceiling_rows',
  'onestep',
  'e2e_mc1',
  'ceiling',
  'e2e_mc8',
  'ceiling_group',
  'latency',
  'cold_commit',
  'latency_xp',
  'payload1k',
  'full',
  'ceiling_full',
  'loop',
  'multiprocess',
  'after_big_value',
]
/** The plain-rusqlite references: measured once, filed under durably's results. */
const REFERENCES = new Set(['ceiling', 'ceiling_group', 'ceiling_rows', 'ceiling_full', 'cold_commit'])
/** Not run on upstream: its 20,000 one-step runs take ~4 minutes, and issue 19 compares onestep with plainjob. */
const NOT_UPSTREAM = new Set(['onestep'])
/** Scenarios that plainjob (--peers) has a counterpart of. */
const PLAINJOB = new Set(['trigger', 'batch', 'onestep'])
/** Scenarios that measure durably alone. */
const OURS_ONLY = new Set(['ceiling', 'ceiling_full', 'multiprocess', 'after_big_value'])

function parseArgs(argv) {
  const o = { only: null, repeat: 1, runs: null, quick: false, upstream: false, peers: false, out: path.join(__dirname, 'results.json'), svg: path.join(__dirname, 'results.svg') }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    const val = () => (a.includes('=') ? a.slice(a.indexOf('=') + 1) : argv[++i])
    if (a === '--quick') o.quick = true
    else if (a === '--upstream') o.upstream = true
    else if (a === '--peers') o.peers = true
    else if (a === '--svg' || a.startsWith('--svg=')) o.svg = path.resolve(val())
    else if (a === '--repeat' || a.startsWith('--repeat=')) {
      const v = val()
      o.repeat = Number(v)
      if (!Number.isInteger(o.repeat) || o.repeat < 1 || o.repeat > 50) throw new Error(`--repeat takes a whole number of runs from 1 to 50 (got ${v})`)
    }
    else if (a === '--runs' || a.startsWith('--runs=')) {
      const v = val()
      o.runs = Number(v)
      if (!Number.isInteger(o.runs) || o.runs < 10 || o.runs > 1_000_000) throw new Error(`--runs takes a whole number of runs from 10 to 1000000 (got ${v})`)
    }
    else if (a === '--only' || a.startsWith('--only=')) o.only = val().split(',').map((s) => s.trim()).filter(Boolean)
    else if (a === '--out' || a.startsWith('--out=')) o.out = path.resolve(val())
    else if (a === '--backend' || a.startsWith('--backend=')) val() // sqlite (postgres goes to bench/pg.js)
    else if (a === '--help' || a === '-h') {
      console.log(fs.readFileSync(__filename, 'utf8').split('\n').slice(1, 23).map((l) => l.slice(3)).join('\n'))
      process.exit(0)
    } else throw new Error(`unknown flag ${a}`)
  }
  if (o.only) {
    const bad = o.only.filter((s) => !SCENARIOS.includes(s))
    if (bad.length) throw new Error(`unknown scenario(s) ${bad.join(', ')} (known: ${SCENARIOS.join(', ')})`)
  }
  return o
}

// ---- prerequisites -------------------------------------------------------------

/** True if the ELF file has a .debug_info section (a debug build of the addon). */
function hasDebugInfo(buf) {
  if (buf.length < 64 || buf.readUInt32BE(0) !== 0x7f454c46 || buf[4] !== 2 || buf[5] !== 1) return false
  const shoff = Number(buf.readBigUInt64LE(0x28))
  const shentsize = buf.readUInt16LE(0x3a)
  const shnum = buf.readUInt16LE(0x3c)
  const shstrndx = buf.readUInt16LE(0x3e)
  if (shoff === 0 || shoff + shnum * shentsize > buf.length) return false
  const strtab = Number(buf.readBigUInt64LE(shoff + shstrndx * shentsize + 0x18))
  for (let i = 0; i < shnum; i++) {
    const start = strtab + buf.readUInt32LE(shoff + i * shentsize)
    if (buf.toString('latin1', start, buf.indexOf(0, start)) === '.debug_info') return true
  }
  return false
}

/** mtime (ms) of the newest file the addon is built from. */
function newestSource() {
  let newest = 0
  const visit = (p) => {
    let st
    try {
      st = fs.statSync(p)
    } catch {
      return
    }
    if (st.isDirectory()) for (const e of fs.readdirSync(p)) visit(path.join(p, e))
    else newest = Math.max(newest, st.mtimeMs)
  }
  for (const p of ['src', 'Cargo.toml', 'Cargo.lock', 'build.rs']) visit(path.join(ROOT, p))
  return newest
}

function run(cmd, args, cwd) {
  const r = spawnSync(cmd, args, { cwd, stdio: 'inherit' })
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} (in ${cwd}) failed with ${r.status ?? r.signal}`)
}

function ensureRelease() {
  let why = null
  if (!fs.existsSync(ADDON) || !fs.existsSync(path.join(ROOT, 'binding.js'))) why = 'is missing'
  else {
    const buf = fs.readFileSync(ADDON)
    if (hasDebugInfo(buf)) why = 'is a debug build'
    else if (newestSource() > fs.statSync(ADDON).mtimeMs) why = 'is older than the Rust sources'
  }
  if (!why) return
  console.error(`bench: the addon ${why}: npm run build (release; takes a few minutes)`)
  run('npm', ['run', 'build'], ROOT)
}

/**
 * Copies the package as it is now (JS + the release addon) to a temp dir that
 * every scenario loads (DURABLY_BENCH_ROOT), so the whole run measures one
 * build even if someone rebuilds the working tree (e.g. a debug build) meanwhile.
 */
function snapshot() {
  for (let attempt = 0; ; attempt++) {
    ensureRelease()
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'durably-bench-snap-'))
    for (const f of ['package.json', 'index.js', 'binding.js', path.basename(ADDON)]) {
      fs.copyFileSync(path.join(ROOT, f), path.join(dir, f))
    }
    fs.cpSync(path.join(ROOT, 'lib'), path.join(dir, 'lib'), { recursive: true })
    const buf = fs.readFileSync(path.join(dir, path.basename(ADDON)))
    if (!hasDebugInfo(buf)) {
      ensureCeiling()
      fs.copyFileSync(CEILING, path.join(dir, 'ceiling'))
      fs.chmodSync(path.join(dir, 'ceiling'), 0o755)
      return dir
    }
    fs.rmSync(dir, { recursive: true, force: true })
    if (attempt > 0) throw new Error('the addon keeps changing under the benchmark (someone is building): try again later')
  }
}

/** Builds bench/ceiling.rs (the plain-rusqlite references) when it is missing or older than its sources. */
function ensureCeiling() {
  let why = null
  if (!fs.existsSync(CEILING)) why = 'is not built'
  // .cargo/config.toml holds SQLite's compile options, which the addon and the references must share.
  else if (Math.max(...['bench/ceiling.rs', 'Cargo.toml', 'Cargo.lock', '.cargo/config.toml'].map((f) => fs.statSync(path.join(ROOT, f)).mtimeMs)) > fs.statSync(CEILING).mtimeMs) {
    why = 'is older than its sources'
  }
  if (!why) return
  console.error(`bench: the ceiling example ${why}: cargo build --release --example ceiling`)
  run('cargo', ['build', '--release', '--example', 'ceiling'], ROOT)
}

function ensurePeers() {
  if (fs.existsSync(path.join(PEERS, 'node_modules', 'plainjob'))) return
  console.error('bench: installing plainjob 0.0.14 + better-sqlite3 12 into bench/peers (compiles better-sqlite3: minutes)')
  run('npm', ['install', '--no-audit', '--no-fund'], PEERS)
}

function ensureUpstream() {
  if (fs.existsSync(path.join(UPSTREAM, 'node_modules'))) return
  console.error('bench: installing @coji/durably 0.15 + better-sqlite3 12 into bench/upstream (compiles better-sqlite3: minutes)')
  run('npm', ['install', '--no-audit', '--no-fund'], UPSTREAM)
}

// ---- the machine ---------------------------------------------------------------------

function sh(cmd) {
  const r = spawnSync('sh', ['-c', cmd], { encoding: 'utf8' })
  return r.status === 0 ? r.stdout.trim() : null
}

/** Median ms of 4 KB write + fsync in the temp dir (what each 'full' commit pays at least). */
function fsyncLatency() {
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'durably-bench-fsync-')), 'f')
  const fd = fs.openSync(file, 'w')
  const buf = Buffer.alloc(4096, 1)
  const times = []
  try {
    for (let i = 0; i < 30; i++) {
      const t0 = performance.now()
      fs.writeSync(fd, buf, 0, buf.length, i * 4096)
      fs.fsyncSync(fd)
      times.push(performance.now() - t0)
    }
  } finally {
    fs.closeSync(fd)
    fs.rmSync(path.dirname(file), { recursive: true, force: true })
  }
  times.sort((a, b) => a - b)
  return Math.round(times[times.length >> 1] * 1000) / 1000
}

function machine() {
  const cpus = os.cpus()
  let disk = null
  const df = sh(`df -PT ${os.tmpdir()} | tail -1`)
  if (df) {
    const [dev, type] = df.split(/\s+/)
    const name = path.basename(dev).replace(/\d+$/, '')
    const model = sh(`cat /sys/block/${name}/device/model 2>/dev/null`)
    const vendor = sh(`cat /sys/block/${name}/device/vendor 2>/dev/null`)
    const kind = vendor === '0x1af4' ? 'virtio-blk' : model || vendor
    disk = `${dev} (${type}${kind ? `, ${kind}` : ''})`
  }
  return {
    nproc: cpus.length,
    fsyncMs: fsyncLatency(),
    cpu: cpus[0] ? cpus[0].model : null,
    memGB: Math.round(os.totalmem() / 2 ** 30),
    kernel: os.release(),
    disk,
    tmpdir: os.tmpdir(),
    node: process.version,
  }
}

/** What the snapshot holds: HEAD (read-only `git rev-parse`; the tree may have uncommitted edits) and the addon's build time. */
function source() {
  let addonBuiltAt = null
  try {
    addonBuiltAt = fs.statSync(ADDON).mtime.toISOString()
  } catch {}
  const commit = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' })
  return { commit: commit.status === 0 ? commit.stdout.trim() : null, addonBuiltAt }
}

// ---- running ---------------------------------------------------------------------------

function runScenario(name, impl, opts) {
  const t0 = Date.now()
  const load = os.loadavg()[0]
  process.stderr.write(`bench: ${name} / ${impl} (load ${load.toFixed(2)}) … `)
  const script = impl === 'plainjob' ? path.join(PEERS, 'plainjob.mjs') : path.join(__dirname, 'scenario.js')
  const r = spawnSync(process.execPath, [script, name, JSON.stringify({ impl, quick: opts.quick, ...(opts.runs ? { sizes: { runs: opts.runs } } : {}) })], {
    cwd: ROOT,
    env: { ...process.env, DURABLY_BENCH_ROOT: opts.snapshot, DURABLY_BENCH_CEILING: path.join(opts.snapshot, 'ceiling') },
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
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
  res.load1 = Math.round(load * 100) / 100
  process.stderr.write(`${res.error ? `ERROR ${res.error}` : 'ok'} (${((Date.now() - t0) / 1000).toFixed(1)} s)\n`)
  return res
}

// ---- summary ------------------------------------------------------------------------------

const get = (o, ...keys) => keys.reduce((v, k) => (v == null ? undefined : v[k]), o)

/**
 * Rows: [label, ours, upstream, kind, target]. kind 'ratio' → target is a
 * minimum ours/upstream; 'max' → ours must be below target; 'atMost' → ≤;
 * 'minFraction' → ours must be ≥ target; null → no target.
 */
function summarize(R) {
  const o = R.durably || {}
  const u = R.upstream || {}
  const ceiling = get(o, 'ceiling', 'writesPerS')
  const mc1 = get(o, 'e2e_mc1', 'stepsPerS')
  return [
    { key: 'trigger', label: 'trigger, runs/s', ours: get(o, 'trigger', 'runsPerS'), up: get(u, 'trigger', 'runsPerS'), kind: 'ratio', target: 10 },
    { key: 'batch', label: 'batchTrigger, runs/s', ours: get(o, 'batch', 'runsPerS'), up: get(u, 'batch', 'runsPerS'), kind: 'ratio', target: 30 },
    { key: 'e2e_mc1', label: 'e2e mc1, steps/s', ours: mc1, up: get(u, 'e2e_mc1', 'stepsPerS'), kind: 'ratio', target: 20 },
    { key: 'e2e_mc1_runs', label: 'e2e mc1, runs/s', ours: get(o, 'e2e_mc1', 'runsPerS'), up: get(u, 'e2e_mc1', 'runsPerS'), kind: null },
    { key: 'e2e_mc8', label: 'e2e mc8, steps/s', ours: get(o, 'e2e_mc8', 'stepsPerS'), up: get(u, 'e2e_mc8', 'stepsPerS'), kind: 'ratio', target: 40 },
    { key: 'e2e_mc8_runs', label: 'e2e mc8, runs/s', ours: get(o, 'e2e_mc8', 'runsPerS'), up: get(u, 'e2e_mc8', 'runsPerS'), kind: null },
    { key: 'full', label: "full (sync 'full') mc1, steps/s", ours: get(o, 'full', 'stepsPerS'), up: get(u, 'full', 'stepsPerS'), kind: 'ratio', target: 20 },
    { key: 'payload1k', label: 'payload1k, runs/s', ours: get(o, 'payload1k', 'runsPerS'), up: get(u, 'payload1k', 'runsPerS'), kind: null },
    { key: 'latency_p50', label: 'latency same process p50, ms', ours: get(o, 'latency', 'p50Ms'), up: get(u, 'latency', 'p50Ms'), kind: 'max', target: 1 },
    { key: 'latency_p99', label: 'latency same process p99, ms', ours: get(o, 'latency', 'p99Ms'), up: get(u, 'latency', 'p99Ms'), kind: null },
    { key: 'latency_xp_p50', label: 'latency other process p50, ms', ours: get(o, 'latency_xp', 'p50Ms'), up: get(u, 'latency_xp', 'p50Ms'), kind: 'max', target: 50 },
    { key: 'latency_xp_p99', label: 'latency other process p99, ms', ours: get(o, 'latency_xp', 'p99Ms'), up: get(u, 'latency_xp', 'p99Ms'), kind: null },
    { key: 'loop_p99', label: 'loop: event-loop p99 lag, ms', ours: get(o, 'loop', 'loop', 'eldP99LagMs'), up: get(u, 'loop', 'loop', 'eldP99LagMs'), kind: 'max', target: 20 },
    { key: 'loop_max', label: 'loop: event-loop max lag, ms', ours: lagMax(o), up: lagMax(u), kind: null },
    { key: 'rss', label: 'peak RSS e2e mc1, MB', ours: get(o, 'e2e_mc1', 'peakRssMB'), up: get(u, 'e2e_mc1', 'peakRssMB'), kind: 'atMost', target: 80 },
    { key: 'db', label: 'DB + WAL after e2e mc1, MB', ours: get(o, 'e2e_mc1', 'dbMB'), up: get(u, 'e2e_mc1', 'dbMB'), kind: null },
    { key: 'ceiling', label: 'ceiling (Rust step writes), writes/s', ours: ceiling, up: undefined, kind: null },
    {
      key: 'ceiling_full',
      label: "ceiling with sync 'full', writes/s",
      ours: get(o, 'ceiling_full', 'writesPerS'),
      up: undefined,
      kind: null,
    },
    {
      key: 'full_of_ceiling',
      label: "full steps/s / ceiling with sync 'full'",
      ours: fraction(get(o, 'full', 'stepsPerS'), get(o, 'ceiling_full', 'writesPerS')),
      up: fraction(get(u, 'full', 'stepsPerS'), get(o, 'ceiling_full', 'writesPerS')),
      kind: null,
    },
    {
      key: 'of_ceiling',
      label: 'e2e mc1 steps/s / ceiling',
      ours: fraction(mc1, ceiling),
      up: fraction(get(u, 'e2e_mc1', 'stepsPerS'), ceiling),
      kind: 'minFraction',
      target: 0.5,
    },
    { key: 'mp1', label: 'multiprocess P=1, runs/s', ours: get(o, 'multiprocess', 'byProcesses', '1', 'runsPerS'), up: undefined, kind: null },
    {
      key: 'mp8_cpu',
      label: 'multiprocess P=8, runs per CPU-second / P=1 (load-independent)',
      ours: get(o, 'multiprocess', 'byProcesses', '8', 'cpuEfficiencyOfOneProcess'),
      up: undefined,
      kind: null,
    },
    ...[2, 4].map((p) => ({
      key: `mp${p}_cpu`,
      label: `multiprocess P=${p}, runs per CPU-second / P=1 (load-independent)`,
      ours: get(o, 'multiprocess', 'byProcesses', String(p), 'cpuEfficiencyOfOneProcess'),
      up: undefined,
      kind: null,
    })),
    ...[2, 4, 8].flatMap((p) => [
      {
        key: `mp${p}_runs`,
        label: `multiprocess P=${p}, aggregate runs/s (wall clock)`,
        ours: get(o, 'multiprocess', 'byProcesses', String(p), 'runsPerS'),
        up: undefined,
        kind: null,
      },
      {
        key: `mp${p}`,
        label: `multiprocess P=${p}, runs/s / P=1`,
        ours: get(o, 'multiprocess', 'byProcesses', String(p), 'ofOneProcess'),
        up: undefined,
        kind: 'minFraction',
        target: 0.8,
      },
      {
        key: `mp${p}_faults`,
        label: `multiprocess P=${p}: DB_BUSY + runs not run exactly once + left running`,
        ours: mpFaults(get(o, 'multiprocess', 'byProcesses', String(p))),
        up: undefined,
        kind: 'atMost',
        target: 0,
      },
    ]),
    {
      key: 'after_big_value',
      label: 'small steps/s after a 100 MB step / before',
      ours: get(o, 'after_big_value', 'afterOfBefore'),
      up: undefined,
      kind: 'minFraction',
      target: 0.8,
    },
  ].map((row) => {
    const ratio = typeof row.ours === 'number' && typeof row.up === 'number' && row.up > 0 ? row.ours / row.up : null
    let met = null
    if (row.kind === 'ratio') met = ratio === null ? null : ratio >= row.target
    else if (row.kind === 'max') met = typeof row.ours === 'number' ? row.ours < row.target : null
    else if (row.kind === 'atMost') met = typeof row.ours === 'number' ? row.ours <= row.target : null
    else if (row.kind === 'minFraction') met = typeof row.ours === 'number' ? row.ours >= row.target : null
    const targetText =
      row.kind === 'ratio'
        ? `≥ ${row.target}×`
        : row.kind === 'max'
          ? `< ${row.target}`
          : row.kind === 'atMost'
            ? `≤ ${row.target}`
            : row.kind === 'minFraction'
              ? `≥ ${row.target * 100} %`
              : ''
    return {
      key: row.key,
      metric: row.label,
      durably: row.ours ?? null,
      upstream: row.up ?? null,
      ratio: ratio === null ? null : Number(ratio.toPrecision(4)),
      target: targetText,
      met,
    }
  })
}

function mpFaults(r) {
  if (!r) return undefined
  return r.dbBusy + r.executedTwiceOrMore + r.neverExecuted + r.leftRunning + r.leftPending
}

function fraction(a, b) {
  return typeof a === 'number' && typeof b === 'number' && b > 0 ? Math.round((a / b) * 1000) / 1000 : undefined
}

function lagMax(r) {
  const v = get(r, 'loop', 'loop', 'eldMaxMs')
  return typeof v === 'number' ? Math.round((v - 5) * 100) / 100 : undefined
}

function fmtNum(v) {
  if (v === null || v === undefined) return '–'
  if (typeof v !== 'number') return String(v)
  if (Math.abs(v) >= 100) return Math.round(v).toLocaleString('en-US')
  if (Math.abs(v) >= 10) return v.toFixed(1)
  if (v !== 0 && Math.abs(v) < 0.01) return v.toPrecision(2)
  return String(Math.round(v * 1000) / 1000)
}

function table(rows, withUpstream) {
  const head = ['metric', 'durably']
  if (withUpstream) head.push('upstream', 'ours/upstream')
  head.push('target', 'met')
  const body = rows.map((r) => {
    const cells = [r.metric, fmtNum(r.durably)]
    if (withUpstream) cells.push(fmtNum(r.upstream), r.ratio === null ? '–' : `${fmtNum(r.ratio)}×`)
    cells.push(r.target || '', r.met === null ? (r.target ? 'n/a' : '') : r.met ? 'yes' : 'NO')
    return cells
  })
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((c) => c[i].length)))
  const line = (cells) => `| ${cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join(' | ')} |`
  return [line(head), `|${widths.map((w, i) => (i === 0 ? ` ${'-'.repeat(w)} ` : ` ${'-'.repeat(w - 1)}: `)).join('|')}|`, ...body.map(line)].join('\n')
}

// ---- main ---------------------------------------------------------------------------------------

function main() {
  const opts = parseArgs(process.argv.slice(2))
  if (opts.upstream) ensureUpstream()
  if (opts.peers) ensurePeers()
  opts.snapshot = snapshot()
  const measured = source() // what the snapshot holds
  process.on('exit', () => fs.rmSync(opts.snapshot, { recursive: true, force: true }))
  const list = opts.only ? SCENARIOS.filter((s) => opts.only.includes(s)) : SCENARIOS
  const impls = ['durably', ...(opts.upstream ? ['upstream'] : []), ...(opts.peers ? ['plainjob'] : [])]
  const startedAt = new Date().toISOString()
  const loadStart = os.loadavg()
  const results = { durably: {}, upstream: opts.upstream ? {} : undefined, plainjob: opts.peers ? {} : undefined }
  for (const name of list) {
    const these = impls.filter(
      (impl) =>
        !((OURS_ONLY.has(name) || REFERENCES.has(name)) && impl !== 'durably') &&
        !(impl === 'plainjob' && !PLAINJOB.has(name)) &&
        !(impl === 'upstream' && NOT_UPSTREAM.has(name)),
    )
    // Rounds alternate the libraries, so a change of load hits them alike.
    const rounds = report.repeated(name) ? opts.repeat : 1
    const runs = Object.fromEntries(these.map((impl) => [impl, []]))
    for (let i = 0; i < rounds; i++) {
      for (const impl of these) runs[impl].push(runScenario(name, impl, opts))
    }
    for (const impl of these) results[impl][name] = report.medianRun(name, runs[impl])
  }
  const rows = summarize(results)
  const out = {
    bench: 'durably npm run bench (issue 7)',
    startedAt,
    finishedAt: new Date().toISOString(),
    flags: { quick: opts.quick, runs: opts.runs, upstream: opts.upstream, peers: opts.peers, only: opts.only, repeat: opts.repeat },
    machine: machine(),
    source: measured,
    loadavg: { start: loadStart.map((v) => Math.round(v * 100) / 100), end: os.loadavg().map((v) => Math.round(v * 100) / 100) },
    summary: rows,
    issue19: report.issueRows(results),
    results,
  }
  fs.writeFileSync(opts.out, `${JSON.stringify(out, null, 2)}\n`)
  console.log(JSON.stringify(out))
  console.log('')
  console.log(table(rows.filter((r) => r.durably !== null || r.upstream !== null), opts.upstream))
  console.log('')
  console.log('Issue 19: durably against the physical limit and the fastest peer, same invocation')
  console.log(report.issueTable(out.issue19))
  console.log('')
  const spread = report.spreadLines(results)
  if (spread.length) {
    console.log(`Median of ${opts.repeat} alternating runs (min–max):`)
    for (const l of spread) console.log(`  ${l}`)
    console.log('')
  }
  fs.writeFileSync(opts.svg, report.chartSvg(results, out))
  console.log(`chart written to ${path.relative(process.cwd(), opts.svg) || opts.svg}`)
  console.log(
    `${out.machine.nproc} × ${out.machine.cpu}; node ${out.machine.node}; load ${out.loadavg.start.join(' ')} → ${out.loadavg.end.join(' ')}` +
      `${opts.quick ? '; --quick sizes' : ''}${opts.repeat > 1 ? `; median of ${opts.repeat} alternating runs (figures of each in \`repeats\`)` : ''}; written to ${path.relative(process.cwd(), opts.out) || opts.out}`,
  )
  const failed = Object.entries(results).flatMap(([impl, r]) =>
    r ? Object.entries(r).filter(([, v]) => v.error).map(([k, v]) => `${k}/${impl}: ${v.error}`) : [],
  )
  if (failed.length) {
    console.error(`bench: ${failed.length} scenario(s) failed: ${failed.join('; ')}`)
    process.exitCode = 1
  }
}

try {
  const argv = process.argv.slice(2)
  const backend = argv.find((a, i) => a.startsWith('--backend=') || argv[i - 1] === '--backend')
  const name = backend && (backend.startsWith('--backend=') ? backend.slice(10) : backend)
  if (name === 'postgres') require('./pg.js').main(argv) // PostgreSQL: bench/pg.js
  else if (name && name !== 'sqlite') throw new Error(`unknown --backend ${name} (known: sqlite, postgres)`)
  else main()
} catch (err) {
  console.error(`bench: ${err.message}`)
  process.exitCode = 1
}
