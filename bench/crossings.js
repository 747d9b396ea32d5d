'use strict'
// Per run: CPU time of this process and boundary crossings (calls of the
// binding's Engine methods, native → JS messages), for profiling (issue 19):
//
//   node bench/crossings.js <steps per run> <runs> <maxConcurrentRuns>
//
// Runs are triggered (batchTrigger) before start(); counted from start() to
// the last run:complete. ROOT=<dir> measures another checkout's build.
// CPU per run moves much less than wall time on a loaded machine.
const path = require('path')
const ROOT = process.env.ROOT || path.join(__dirname, '..')
const binding = require(path.join(ROOT, 'binding.js'))
const counts = {}
const P = binding.Engine.prototype
for (const k of Object.getOwnPropertyNames(P)) {
  if (k === 'constructor' || typeof P[k] !== 'function') continue
  const f = P[k]
  P[k] = function (...a) { counts[k] = (counts[k] || 0) + 1; return f.apply(this, a) }
}
const Orig = binding.Engine
let msgs = 0
binding.Engine = function (opts, cb) { return new Orig(opts, (...a) => { msgs++; return cb(...a) }) }
binding.Engine.prototype = P
const { createDurably, defineJob } = require(ROOT)
const { z } = require(path.join(__dirname, '..', 'node_modules', 'zod'))
const fs = require('fs'), os = require('os')
;(async () => {
  const [steps = 1, n = 10000, mc = 1] = process.argv.slice(2).map(Number)
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cnt-'))
  const job = defineJob({ name: 'e2e', input: z.object({ i: z.number() }), run: async (ctx) => { for (let i = 0; i < steps; i++) await ctx.run(`s${i}`, () => ({ i })); return { steps } } })
  const d = createDurably({ path: path.join(dir, 'b.db'), maxConcurrentRuns: mc, jobs: { e2e: job } })
  await d.migrate()
  for (let b = 0; b < n; b += 500) await d.jobs.e2e.batchTrigger(Array.from({ length: Math.min(500, n - b) }, (_, i) => ({ input: { i: b + i } })))
  for (const k in counts) delete counts[k]; msgs = 0
  let done = 0, fin; const all = new Promise((r) => (fin = r))
  d.on('run:complete', () => { if (++done === n) fin() })
  const t0 = performance.now(); const c0 = process.cpuUsage()
  await d.start(); await all
  const ms = performance.now() - t0; const cu = process.cpuUsage(c0); const cpuUsPerRun = Math.round((cu.user + cu.system) / n)
  console.log(JSON.stringify({ steps, n, mc, ms: Math.round(ms), runsPerS: Math.round(n / ms * 1000), cpuUsPerRun, perRun: Object.fromEntries(Object.entries(counts).map(([k, v]) => [k, +(v / n).toFixed(3)])), msgsPerRun: +(msgs / n).toFixed(3) }))
  await d.close(); fs.rmSync(dir, { recursive: true })
})()
