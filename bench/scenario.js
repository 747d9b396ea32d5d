'use strict'
// One benchmark scenario, alone in this process, on a fresh temp database:
//
//   node bench/scenario.js <name> '<json-args>'
//
// args: { impl: 'durably' | 'upstream', quick?: boolean, backend?: 'sqlite' | 'postgres',
//         pgUrl?: string (the server, with backend 'postgres'), ...size overrides }
// Prints progress to stderr and, as the last line of stdout,
// `RESULT <json>`. bench/run.js runs every scenario this way.
//
// Both libraries run the same job code (`ctx.run` and upstream's `step.run`
// share a signature) with the same Zod input schema, and completion is
// counted from in-process `run:complete` events, so no polling of the store
// distorts the timing.

const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { fork, spawnSync } = require('node:child_process')
const { pathToFileURL } = require('node:url')
const { monitorEventLoopDelay, createHistogram } = require('node:perf_hooks')

// The package under test: bench/run.js points this at a snapshot of the tree.
const ROOT = process.env.DURABLY_BENCH_ROOT || path.join(__dirname, '..')

/** Default sizes (the issue's) and the `--quick` ones. */
const SIZES = {
  full: { trigger: 5000, batch: 20000, batchSize: 500, runs: 2000, steps: 10, samples: 50, payloadRuns: 2000, mpRuns: 2000, smallSteps: 300 },
  quick: { trigger: 1000, batch: 5000, batchSize: 500, runs: 300, steps: 10, samples: 10, payloadRuns: 300, mpRuns: 300, smallSteps: 300 },
}

const hrNow = () => performance.timeOrigin + performance.now()
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const log = (...a) => console.error(`[${process.argv[2]}]`, ...a)

/** Deterministic gaps, the same sequence for both libraries. */
function prng(seed) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

function percentile(sorted, p) {
  if (sorted.length === 0) return null
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[i]
}

const round = (v, d = 2) => (v === null || v === undefined ? null : Math.round(v * 10 ** d) / 10 ** d)
const mb = (bytes) => round(bytes / 1024 / 1024, 1)

function fileSize(p) {
  try {
    return fs.statSync(p).size
  } catch {
    return 0
  }
}

// ---- the two libraries behind one interface ---------------------------------

function makeOurs() {
  const { createDurably, defineJob } = require(ROOT)
  const { z } = require('zod')
  return {
    impl: 'durably',
    describe: () => ({ impl: 'durably', library: `durably ${require(path.join(ROOT, 'package.json')).version}` }),
    create({ path: file, url, synchronous = 'normal', maxConcurrentRuns = 1, jobs, maxValueBytes }) {
      const defs = {}
      for (const [key, j] of Object.entries(jobs)) defs[key] = defineJob({ name: j.name, input: j.input(z), run: j.run })
      // On PostgreSQL (a url): no file and no synchronous (the server's durability).
      const opts = url ? { url, maxConcurrentRuns, jobs: defs } : { path: file, synchronous, maxConcurrentRuns, jobs: defs }
      if (maxValueBytes !== undefined) opts.maxValueBytes = maxValueBytes
      const d = createDurably(opts)
      return {
        info: { synchronous },
        job: (key) => d.jobs[key],
        batchItem: (input) => ({ input }),
        migrate: () => d.migrate(),
        start: () => d.start(),
        on: (type, fn) => d.on(type, fn),
        close: () => d.close(),
      }
    },
  }
}

async function loadImpl(name) {
  if (name === 'durably') return makeOurs()
  if (name === 'upstream' && BACKEND === 'postgres') {
    const dir = path.join(__dirname, 'upstream-pg')
    if (!fs.existsSync(path.join(dir, 'node_modules'))) {
      throw new Error('bench/upstream-pg/node_modules is missing: run `npm run bench -- --backend postgres` (installs it)')
    }
    return import(pathToFileURL(path.join(dir, 'adapter.mjs')).href)
  }
  if (name === 'upstream') {
    const file = path.join(__dirname, 'upstream', 'adapter.mjs')
    if (!fs.existsSync(path.join(__dirname, 'upstream', 'node_modules'))) {
      throw new Error('bench/upstream/node_modules is missing: run `npm run bench -- --upstream` (installs it)')
    }
    return import(pathToFileURL(file).href)
  }
  throw new Error(`unknown impl ${name}`)
}

// ---- jobs (identical code for both libraries) --------------------------------

function stepsJob(steps) {
  return {
    name: 'e2e',
    input: (z) => z.object({ i: z.number() }),
    run: async (ctx) => {
      for (let i = 0; i < steps; i++) await ctx.run(`s${i}`, () => ({ i }))
      return { steps }
    },
  }
}

/** ~1 KB of typical API data (as in bench/values.js). */
function kbObject(n) {
  const o = {
    id: `run_01HZX3K5Q8W9E2R4T6Y8U0I2O4_${n}`,
    owner: { id: 17, login: 'octo', email: 'octo@example.com', verified: true },
    createdAt: '2024-05-01T10:00:00.000Z',
    items: [],
    meta: { page: 1, perPage: 20, total: 1234, next: 'https://api.example.com/items?page=2' },
  }
  for (let i = 0; i < 8; i++) o.items.push({ sku: `SKU-${1000 + i}`, qty: i + 1, price: 9.99 * (i + 1), ok: true })
  o.note = 'x'.repeat(Math.max(0, 1024 - JSON.stringify(o).length - 10))
  return o
}

function payloadJob() {
  return {
    name: 'payload',
    input: (z) => z.object({ i: z.number() }),
    run: async (ctx, input) => {
      await ctx.run('fetch', () => kbObject(input.i))
      return { ok: true }
    },
  }
}

let onLatency = null
function latencyJob() {
  return {
    name: 'latency',
    input: (z) => z.object({ hr: z.number(), t: z.number() }),
    run: async (_ctx, input) => {
      const at = hrNow() // first line of the job
      if (onLatency) onLatency(at - input.hr, input)
      return { ok: true }
    },
  }
}

// ---- helpers -----------------------------------------------------------------

const tempDirs = []
/** 'sqlite', or 'postgres' (set by main() from the args). */
let BACKEND = 'sqlite'
let PG_URL = null

/** A fresh temp database: a file, and on PostgreSQL also a fresh database's `url`. */
function tempDb() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'durably-bench-'))
  tempDirs.push(dir)
  const url = BACKEND === 'postgres' ? require('./pgserver.js').freshDatabase(PG_URL) : undefined
  return { dir, file: path.join(dir, 'bench.db'), url }
}
process.on('exit', () => {
  for (const d of tempDirs) fs.rmSync(d, { recursive: true, force: true })
})

/** Resolves when `n` runs completed; rejects on the first failed run. */
function completions(inst, n) {
  let done = 0
  let resolve
  let reject
  const promise = new Promise((res, rej) => {
    resolve = res
    reject = rej
  })
  const at = { t: null }
  inst.on('run:complete', () => {
    if (++done === n) {
      at.t = performance.now()
      resolve()
    }
  })
  inst.on('run:fail', (e) => reject(new Error(`run ${e.runId} failed: ${e.error}`)))
  return { promise, at, count: () => done }
}

function withDeadline(promise, ms, what) {
  let t
  return Promise.race([
    promise,
    new Promise((_, rej) => {
      t = setTimeout(() => rej(new Error(`${what} did not finish within ${ms} ms`)), ms)
      t.unref()
    }),
  ]).finally(() => clearTimeout(t))
}

function batches(inst, n, size, make) {
  const out = []
  for (let b = 0; b < n; b += size) {
    out.push(Array.from({ length: Math.min(size, n - b) }, (_, i) => inst.batchItem(make(b + i))))
  }
  return out
}

// ---- scenarios -----------------------------------------------------------------

const scenarios = {}

scenarios.trigger = async (lib, sz) => {
  const { file, url } = tempDb()
  const inst = lib.create({ path: file, url, jobs: { e2e: stepsJob(sz.steps) } })
  await inst.migrate()
  const job = inst.job('e2e')
  for (let i = 0; i < 50; i++) await job.trigger({ i: -1 }) // warm-up
  const t0 = performance.now()
  for (let i = 0; i < sz.trigger; i++) await job.trigger({ i })
  const ms = performance.now() - t0
  await inst.close()
  return { n: sz.trigger, ms: round(ms), runsPerS: Math.round((sz.trigger / ms) * 1000), info: inst.info }
}

scenarios.batch = async (lib, sz) => {
  const { file, url } = tempDb()
  const inst = lib.create({ path: file, url, jobs: { e2e: stepsJob(sz.steps) } })
  await inst.migrate()
  const job = inst.job('e2e')
  await job.batchTrigger(batches(inst, 10, 10, (i) => ({ i }))[0]) // warm-up
  const list = batches(inst, sz.batch, sz.batchSize, (i) => ({ i }))
  const t0 = performance.now()
  for (const b of list) await job.batchTrigger(b)
  const ms = performance.now() - t0
  await inst.close()
  return { n: sz.batch, batchSize: sz.batchSize, ms: round(ms), runsPerS: Math.round((sz.batch / ms) * 1000), info: inst.info }
}

/**
 * `runs` runs of `steps` steps: all triggered with batchTrigger (batches of
 * 500) BEFORE start(); timed from the first batchTrigger call to the last
 * run:complete event.
 */
async function endToEnd(lib, sz, { mc = 1, synchronous = 'normal', loop = false, payload = false } = {}) {
  const { file, url } = tempDb()
  const n = payload ? sz.payloadRuns : sz.runs
  const steps = payload ? 1 : sz.steps
  const jobs = payload ? { e2e: payloadJob() } : { e2e: stepsJob(steps) }
  const inst = lib.create({ path: file, url, synchronous, maxConcurrentRuns: mc, jobs })
  await inst.migrate()
  const job = inst.job('e2e')
  const done = completions(inst, n)
  const list = batches(inst, n, sz.batchSize, (i) => ({ i }))
  const baseRss = process.memoryUsage().rss
  let eld = null
  let lagHist = null
  let ticker = null
  if (loop) {
    eld = monitorEventLoopDelay({ resolution: 5 })
    lagHist = createHistogram()
    let last = performance.now()
    ticker = setInterval(() => {
      const now = performance.now()
      lagHist.record(Math.max(1, Math.round((now - last - 5) * 1e3))) // µs beyond the 5 ms period
      last = now
    }, 5)
    eld.enable()
    await sleep(25) // the histogram records from its second tick on
  }
  const t0 = performance.now()
  for (const b of list) await job.batchTrigger(b)
  const t1 = performance.now()
  await inst.start()
  await withDeadline(done.promise, 600_000, `${n} runs`)
  const t2 = done.at.t
  if (loop) {
    // Let pending timers fire: a loop that was blocked until now records its
    // whole stall in this tick (a library that never yields has no other sample).
    await sleep(20)
    eld.disable()
    clearInterval(ticker)
  }
  const dbBytes = fileSize(file)
  const walBytes = fileSize(`${file}-wal`)
  const peakRss = process.resourceUsage().maxRSS * 1024
  await inst.close()
  const total = t2 - t0
  const out = {
    n,
    steps,
    maxConcurrentRuns: mc,
    synchronous,
    triggered: 'batchTrigger (batches of 500) before start(); timed from the first trigger to the last run:complete',
    triggerMs: round(t1 - t0),
    execMs: round(t2 - t1),
    totalMs: round(total),
    runsPerS: Math.round((n / total) * 1000),
    stepsPerS: Math.round(((n * steps) / total) * 1000),
    execStepsPerS: Math.round(((n * steps) / (t2 - t1)) * 1000),
    peakRssMB: mb(peakRss),
    baseRssMB: mb(baseRss),
    dbBytes,
    walBytes,
    dbMB: mb(dbBytes + walBytes),
    dbMBAfterClose: mb(fileSize(file) + fileSize(`${file}-wal`)),
    info: inst.info,
  }
  if (payload) out.payloadBytes = JSON.stringify(kbObject(0)).length
  if (loop) {
    // monitorEventLoopDelay records whole timer intervals (resolution included).
    const ms = (ns) => round(ns / 1e6)
    out.loop = {
      eldP50Ms: ms(eld.percentile(50)),
      eldP99Ms: ms(eld.percentile(99)),
      eldMaxMs: ms(eld.max),
      eldP99LagMs: round(Math.max(0, eld.percentile(99) / 1e6 - 5)),
      intervalTicks: lagHist.count,
      intervalLagP50Ms: round(lagHist.percentile(50) / 1e3),
      intervalLagP99Ms: round(lagHist.percentile(99) / 1e3),
      intervalLagMaxMs: round(lagHist.max / 1e3),
    }
  }
  return out
}

scenarios.e2e_mc1 = (lib, sz) => endToEnd(lib, sz, { mc: 1 })
scenarios.e2e_mc8 = (lib, sz) => endToEnd(lib, sz, { mc: 8 })
scenarios.full = (lib, sz) => endToEnd(lib, sz, { mc: 1, synchronous: 'full' })
scenarios.loop = (lib, sz) => endToEnd(lib, sz, { mc: 1, loop: true })
scenarios.payload1k = (lib, sz) => endToEnd(lib, sz, { mc: 1, payload: true })

/**
 * 20,000 runs of one tiny step (2,000 with --quick), mc 1, triggered before
 * start(). `runsPerS` counts the execution only (start() to the last
 * run:complete), as plainjob's worker is timed; `totalRunsPerS` includes the
 * batchTrigger calls.
 */
scenarios.onestep = async (lib, sz, args) => {
  const n = sz.onestep ?? (args.quick ? 2000 : 20000)
  const r = await endToEnd(lib, { ...sz, runs: n, steps: 1 }, { mc: 1 })
  return { ...r, runsPerS: Math.round((n / r.execMs) * 1000), totalRunsPerS: r.runsPerS }
}

/**
 * trigger → first line of the job with the worker idle and the default
 * pollingInterval. Between samples a pseudo-random pause in [0, 1000) ms
 * (the polling period of both libraries) so a polling worker is met at every
 * phase. `cross`: a child process on the same file triggers, with its
 * high-resolution wall clock (`performance.timeOrigin + performance.now()`,
 * i.e. Date.now() with µs) in the input.
 */
async function latency(lib, sz, cross, implName) {
  const { file } = tempDb()
  const inst = lib.create({ path: file, jobs: { latency: latencyJob() } })
  await inst.migrate()
  let child = null
  let trigger
  if (cross) {
    child = fork(__filename, ['_trigger_child', JSON.stringify({ impl: implName, file })], {
      stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
    })
    const waiters = []
    child.on('message', (m) => {
      const w = waiters.shift()
      if (!w) return
      if (m && m.error) w.reject(new Error(m.error))
      else w.resolve(m)
    })
    child.on('exit', (code) => {
      for (const w of waiters.splice(0)) w.reject(new Error(`trigger child exited with ${code}`))
    })
    const next = () => new Promise((resolve, reject) => waiters.push({ resolve, reject }))
    await withDeadline(next(), 60_000, 'trigger child start')
    trigger = async () => {
      const p = next()
      child.send('go')
      await p
    }
  } else {
    const job = inst.job('latency')
    trigger = () => job.trigger({ hr: hrNow(), t: Date.now() })
  }
  await inst.start()
  const done = completions(inst, sz.samples + 1)
  await sleep(1000) // the worker settles into idle
  const rand = prng(7)
  const lat = []
  // One warm-up sample (not counted), then the samples.
  for (let k = 0; k <= sz.samples; k++) {
    await sleep(rand() * 1000)
    const seen = new Promise((resolve) => {
      onLatency = (ms) => {
        onLatency = null
        resolve(ms)
      }
    })
    const before = done.count()
    await trigger()
    const ms = await withDeadline(seen, 30_000, 'latency sample')
    while (done.count() === before) await sleep(1) // the run finished: worker idle again
    if (k > 0) lat.push(ms)
  }
  if (child) child.kill()
  await inst.close()
  const sorted = [...lat].sort((a, b) => a - b)
  return {
    samples: lat.length,
    from: cross ? 'another process' : 'same process',
    pollingInterval: 'default (1000 ms)',
    p50Ms: round(percentile(sorted, 50), 3),
    p99Ms: round(percentile(sorted, 99), 3),
    meanMs: round(lat.reduce((a, b) => a + b, 0) / lat.length, 3),
    minMs: round(sorted[0], 3),
    maxMs: round(sorted[sorted.length - 1], 3),
  }
}

scenarios.latency = (lib, sz, args) => latency(lib, sz, false, args.impl)
scenarios.latency_xp = (lib, sz, args) => latency(lib, sz, true, args.impl)

/** The same step writes, 8 steps (of 8 runs) per commit: the bound of e2e_mc8. */
scenarios.ceiling_group = async (lib, sz) => {
  if (lib.impl !== 'durably') return { skipped: 'ours only' }
  return reference('group', ['--group', '8', '--runs', String(sz.runs), '--steps', String(sz.steps)])
}

/** The rows of `batch` inserted by a plain loop (50 per statement, 500 per commit): SQLite's share of batch. */
scenarios.ceiling_rows = async (lib, sz) => {
  if (lib.impl !== 'durably') return { skipped: 'ours only' }
  return reference('rows', ['--runs', String(sz.batch), '--batch', String(sz.batchSize)])
}

/** One plain insert after 0–1000 ms idle (the latency scenario's pauses): the bound of `latency`. */
scenarios.cold_commit = async (lib, sz) => {
  if (lib.impl !== 'durably') return { skipped: 'ours only' }
  return reference('cold', ['--samples', String(sz.samples)])
}

/**
 * The plain-rusqlite references (bench/ceiling.rs, a cargo example that
 * bench/run.js builds and passes in DURABLY_BENCH_CEILING): `mode` is step
 * (one commit per step), group (8 steps per commit), rows (the runs of a
 * batch) or cold (one insert after idle). They measure no library, so they
 * run once, under impl 'durably'.
 */
function reference(mode, flags) {
  const bin = process.env.DURABLY_BENCH_CEILING
  if (!bin || !fs.existsSync(bin)) throw new Error('DURABLY_BENCH_CEILING does not name the built ceiling example: run through `npm run bench`')
  const { file } = tempDb()
  const t0 = performance.now()
  const r = spawnSync(bin, [mode, file, ...flags], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] })
  if (r.status !== 0) throw new Error(`ceiling ${mode} failed (${r.status ?? r.signal})`)
  return { ...JSON.parse(r.stdout), wallMs: round(performance.now() - t0), dbBytes: fileSize(file), walBytes: fileSize(`${file}-wal`) }
}

/** One commit per step (update the run row + insert the step row): the bound of e2e_mc1. */
scenarios.ceiling = async (lib, sz, args) => {
  if (lib.impl !== 'durably') return { skipped: 'ours only' }
  return reference('step', ['--sync', args.synchronous ?? 'normal', '--runs', String(sz.runs), '--steps', String(sz.steps)])
}

/** The same with synchronous 'full': the physical limit of the `full` scenario. */
scenarios.ceiling_full = (lib, sz, args) => scenarios.ceiling(lib, sz, { ...args, synchronous: 'full' })

/**
 * Issue 13: P worker processes on one file. P × R one-step runs, spread over
 * 32 concurrency keys, all triggered (batchTrigger) before any worker starts;
 * each worker has maxConcurrentRuns 4. Timed from the parent's `go` to the
 * last run:complete reported by any worker; the workers then close cleanly.
 * Checked per P: every run executed exactly once (each worker reports the
 * ids its step functions ran for), no DB_BUSY (or any worker:error), nothing
 * left `running` or `pending` after every worker closed. P = 1 is the base.
 * With `sizes.mpSeparate` (a reference, not in `npm run bench`) each worker
 * has a file of its own with its R runs: the same processes without the
 * sharing (`node bench/scenario.js multiprocess '{"sizes":{"mpSeparate":true}}'`).
 */
scenarios.multiprocess = async (lib, sz) => {
  if (lib.impl !== 'durably') return { skipped: 'ours only' }
  const R = sz.mpRuns
  // On PostgreSQL (issue 16): 1 and 4 processes (target: 4 ≥ 2.5× one).
  const counts = sz.mpProcesses ?? (BACKEND === 'postgres' ? [1, 4] : [1, 2, 4, 8])
  const separate = sz.mpSeparate === true
  if (separate && BACKEND === 'postgres') throw new Error('mpSeparate is for SQLite files')
  const out = { backend: BACKEND, runsPerProcess: R, keys: 32, maxConcurrentRuns: 4, ...(separate ? { separateFiles: true } : {}), byProcesses: {} }
  for (const P of counts) {
    out.byProcesses[P] = await multiprocessOnce(lib, P, R, separate)
    log(`P=${P}: ${JSON.stringify(out.byProcesses[P])}`)
  }
  const base = out.byProcesses[1] ? out.byProcesses[1].runsPerS : null
  const baseCpu = out.byProcesses[1] ? out.byProcesses[1].runsPerCpuS : null
  for (const P of counts) {
    const r = out.byProcesses[P]
    r.ofOneProcess = base ? round(r.runsPerS / base, 3) : null
    r.cpuEfficiencyOfOneProcess = baseCpu ? round(r.runsPerCpuS / baseCpu, 3) : null
  }
  return out
}

async function multiprocessOnce(lib, P, R, separate) {
  // One file for every worker, or (separate) one file each with its R runs.
  const dbs = Array.from({ length: separate ? P : 1 }, () => tempDb())
  const n = P * R
  for (const { file, url } of dbs) {
    const runs = separate ? R : n
    const inst = lib.create({ path: file, url, jobs: { mp: mpJob() } })
    await inst.migrate()
    const job = inst.job('mp')
    for (let b = 0; b < runs; b += 500) {
      await job.batchTrigger(
        Array.from({ length: Math.min(500, runs - b) }, (_, j) => ({
          input: { i: b + j },
          options: { concurrencyKey: `k${(b + j) % 32}` },
        })),
      )
    }
    await inst.close()
  }
  const kids = []
  for (let p = 0; p < P; p++) {
    const child = fork(__filename, ['_mp_child', JSON.stringify(dbs[separate ? p : 0])], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
    const k = { child, done: 0, report: null, exited: new Promise((r) => child.on('exit', (code) => r(code))) }
    k.ready = new Promise((resolve, reject) => {
      child.on('message', (m) => {
        if (m.ready) resolve()
        if (m.done !== undefined) k.done = m.done
        if (m.report) k.report = m.report
        if (m.error) reject(new Error(`worker ${p}: ${m.error}`))
      })
      child.on('exit', (code) => reject(new Error(`worker ${p} exited (${code}) before it was ready`)))
    })
    kids.push(k)
  }
  await Promise.all(kids.map((k) => k.ready))
  const t0 = performance.now()
  for (const k of kids) k.child.send({ go: true })
  const deadline = t0 + 300_000
  while (kids.reduce((s, k) => s + k.done, 0) < n) {
    if (performance.now() > deadline) break
    await sleep(2)
  }
  const ms = performance.now() - t0
  const completed = kids.reduce((s, k) => s + k.done, 0)
  for (const k of kids) k.child.send({ close: true })
  const codes = await Promise.all(kids.map((k) => k.exited))
  // Every run's step function, across all workers.
  const seen = new Map()
  const errors = {}
  for (const k of kids) {
    for (const id of k.report ? k.report.executed : []) seen.set(id, (seen.get(id) ?? 0) + 1)
    for (const [code, c] of Object.entries(k.report ? k.report.errors : {})) errors[code] = (errors[code] ?? 0) + c
  }
  const cpuMs = kids.reduce((sum, k) => sum + (k.report ? k.report.cpuMs : 0), 0)
  const left = { pending: 0, running: 0, failed: 0 }
  for (const { file, url } of dbs) {
    const check = lib.create({ path: file, url, jobs: { mp: mpJob() } })
    for (const status of Object.keys(left)) left[status] += (await check.job('mp').getRuns({ status })).length
    await check.close()
  }
  return {
    processes: P,
    runs: n,
    completed,
    ms: round(ms),
    runsPerS: Math.round((completed / ms) * 1000),
    // Load-independent: runs per second of CPU the workers used (includes their idle polling until close).
    cpuMs: round(cpuMs),
    runsPerCpuS: Math.round((completed / cpuMs) * 1000),
    executedOnce: [...seen.values()].filter((c) => c === 1).length,
    executedTwiceOrMore: [...seen.values()].filter((c) => c > 1).length,
    neverExecuted: n - seen.size,
    dbBusy: errors.DB_BUSY ?? 0,
    workerErrors: errors,
    leftRunning: left.running,
    leftPending: left.pending,
    failed: left.failed,
    exitCodes: codes,
    ...(dbs[0].url ? {} : { walMBAtEnd: mb(dbs.reduce((sum, { file }) => sum + fileSize(`${file}-wal`), 0)) }),
  }
}

function mpJob() {
  return {
    name: 'mp',
    input: (z) => z.object({ i: z.number() }),
    run: async (ctx, input) => {
      await ctx.run('only', () => {
        if (mpExecuted) mpExecuted.push(ctx.runId)
        return input.i
      })
      return { i: input.i }
    },
  }
}
let mpExecuted = null

/**
 * Issue 13: one giant value must cost its own write and nothing after it.
 * One instance (mc 1): a run of `smallSteps` tiny steps (the rate before),
 * a run whose one step returns a 100 MB string, then another run of tiny
 * steps (the rate after). Also records the WAL size at each point.
 */
scenarios.after_big_value = async (lib, sz) => {
  if (lib.impl !== 'durably') return { skipped: 'ours only' }
  const { file } = tempDb()
  const bigMB = sz.bigMB ?? 100
  const jobs = {
    small: {
      name: 'small',
      input: (z) => z.object({ n: z.number() }),
      run: async (ctx, input) => {
        for (let i = 0; i < input.n; i++) await ctx.run(`s${i}`, () => ({ i }))
        return { n: input.n }
      },
    },
    big: {
      name: 'big',
      input: (z) => z.object({ mb: z.number() }),
      run: async (ctx, input) => {
        const v = await ctx.run('big', () => 'x'.repeat(input.mb * 1024 * 1024))
        return { length: v.length }
      },
    },
  }
  // (over the 64 MB default of maxValueBytes)
  const inst = lib.create({ path: file, jobs, maxValueBytes: (bigMB + 1) * 1024 * 1024 })
  await inst.migrate()
  await inst.start()
  const timed = async (key, input) => {
    const t0 = performance.now()
    await withDeadline(inst.job(key).triggerAndWait(input), 600_000, key)
    return performance.now() - t0
  }
  const median = (xs) => xs.slice().sort((a, b) => a - b)[xs.length >> 1]
  const rate = (ms) => Math.round((sz.smallSteps / ms) * 1000)
  // Warm-up: runs of the same size until the JIT has compiled the step path
  // (a 20-step warm-up left the first "before" runs ~2x slower than later
  // ones, which flattered the ratio).
  for (let i = 0; i < 5; i++) await timed('small', { n: sz.smallSteps })
  // Cycles of: the rate before (median of three runs), one big step, the
  // first run right after it (the worst case). One 300-step run lasts ~15 ms
  // and moves ±30 % on a shared machine, so the ratio is the median over the
  // cycles; each cycle's own ratio is reported too.
  const cycles = []
  let walBefore = 0
  let walAfterBig = 0
  let walAfter = 0
  for (let c = 0; c < (sz.bigCycles ?? 5); c++) {
    const beforeMs = median([
      await timed('small', { n: sz.smallSteps }),
      await timed('small', { n: sz.smallSteps }),
      await timed('small', { n: sz.smallSteps }),
    ])
    walBefore = fileSize(`${file}-wal`)
    const bigMs = await timed('big', { mb: bigMB })
    walAfterBig = fileSize(`${file}-wal`)
    const afterMs = await timed('small', { n: sz.smallSteps })
    walAfter = fileSize(`${file}-wal`)
    cycles.push({ before: rate(beforeMs), bigMs: round(bigMs), after: rate(afterMs) })
  }
  const laterMs = [await timed('small', { n: sz.smallSteps }), await timed('small', { n: sz.smallSteps })]
  const walLater = fileSize(`${file}-wal`)
  const rssMB = mb(process.memoryUsage().rss)
  await inst.close()
  const ratios = cycles.map((c) => round(c.after / c.before, 3))
  return {
    smallSteps: sz.smallSteps,
    bigMB,
    beforeStepsPerS: median(cycles.map((c) => c.before)),
    bigStepMs: median(cycles.map((c) => c.bigMs)),
    afterStepsPerS: median(cycles.map((c) => c.after)),
    afterOfBefore: median(ratios),
    afterOfBeforeByCycle: ratios,
    laterStepsPerS: laterMs.map(rate),
    walMBLater: mb(walLater),
    walMBBefore: mb(walBefore),
    walMBAfterBig: mb(walAfterBig),
    walMBAfter: mb(walAfter),
    rssMBAtEnd: rssMB,
    dbMB: mb(fileSize(file)),
  }
}

/** Child of multiprocess: one worker process (maxConcurrentRuns 4). */
async function mpChild(args) {
  const lib = makeOurs()
  mpExecuted = []
  const errors = {}
  const inst = lib.create({ path: args.file, url: args.url, maxConcurrentRuns: 4, jobs: { mp: mpJob() } })
  let done = 0
  inst.on('run:complete', () => done++)
  inst.on('worker:error', (e) => {
    const code = (e.error && e.error.code) || 'UNKNOWN'
    errors[code] = (errors[code] ?? 0) + 1
  })
  let last = -1
  let cpu0 = null
  const ticker = setInterval(() => {
    if (done !== last) process.send({ done: (last = done) })
  }, 5)
  process.on('message', async (m) => {
    if (m.go) {
      cpu0 = process.cpuUsage()
      await inst.start()
    }
    if (m.close) {
      clearInterval(ticker)
      // CPU (all threads: JS, worker, SQLite) from the start signal to the close request.
      const cpu = process.cpuUsage(cpu0)
      await inst.close()
      process.send({ done, report: { executed: mpExecuted, errors, cpuMs: (cpu.user + cpu.system) / 1000 } }, () => process.exit(0))
    }
  })
  process.on('disconnect', () => process.exit(1)) // the parent is gone
  process.send({ ready: true })
}

/** Child of latency_xp: triggers on the parent's signal. */
async function triggerChild(args) {
  const lib = await loadImpl(args.impl)
  const inst = lib.create({ path: args.file, jobs: { latency: latencyJob() } })
  await inst.migrate()
  const job = inst.job('latency')
  process.on('message', async () => {
    try {
      await job.trigger({ hr: hrNow(), t: Date.now() })
      process.send({ ok: true })
    } catch (err) {
      process.send({ error: String(err && err.stack) })
    }
  })
  process.on('disconnect', () => process.exit(0))
  process.send({ ready: true })
}

// ---- main ------------------------------------------------------------------------

/** The scenarios that run on PostgreSQL (`--backend postgres`, issue 16). */
const PG_SCENARIOS = new Set(['trigger', 'batch', 'e2e_mc1', 'e2e_mc8', 'multiprocess'])

async function main() {
  const [name, json = '{}'] = process.argv.slice(2)
  const args = JSON.parse(json)
  if (name === '_trigger_child') return triggerChild(args)
  if (name === '_mp_child') return mpChild(args)
  const fn = scenarios[name]
  if (!fn) throw new Error(`unknown scenario ${name} (known: ${Object.keys(scenarios).join(', ')})`)
  const impl = args.impl ?? 'durably'
  if (args.backend === 'postgres') {
    if (!PG_SCENARIOS.has(name)) throw new Error(`scenario ${name} has no PostgreSQL variant (known: ${[...PG_SCENARIOS].join(', ')})`)
    if (!args.pgUrl) throw new Error('backend postgres needs pgUrl')
    BACKEND = 'postgres'
    PG_URL = args.pgUrl
  }
  const sz = { ...(args.quick ? SIZES.quick : SIZES.full), ...(args.sizes ?? {}) }
  const lib = await loadImpl(impl)
  const t0 = performance.now()
  const res = await fn(lib, sz, { ...args, impl })
  const out = { scenario: name, ...lib.describe(), ...res, scenarioWallMs: round(performance.now() - t0) }
  process.stdout.write(`RESULT ${JSON.stringify(out)}\n`)
}

main().then(
  () => {
    if (!process.argv[2].startsWith('_')) process.exit(0)
  },
  (err) => {
    log(err && err.stack ? err.stack : err)
    process.stdout.write(`RESULT ${JSON.stringify({ scenario: process.argv[2], error: String(err && err.message) })}\n`)
    process.exit(1)
  },
)
