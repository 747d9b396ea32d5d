'use strict'
// The JS side of a run alone (issue 19): Runner, Execution and Writer of two
// checkouts' lib/ driven in one process over a fake engine whose flush
// answers at once (and hands over the next claimed run with each
// completion, as a flush does), alternating, so the two are compared under
// the same load and JIT state. CPU per run, the native side left out:
//
//   BASE_LIB=<other checkout>/lib [STEPS=1] [ROUNDS=12] node bench/jspath.js
//
// (BASE_LIB defaults to this checkout's lib/, which compares it with itself.)
const path = require('path')
const libs = { base: process.env.BASE_LIB || path.join(__dirname, '..', 'lib'), new: path.join(__dirname, '..', 'lib') }
const W = ['written', 'written', 'written', 'written', 'written', 'written', 'written', 'written']
const STEPS = Number(process.env.STEPS || 1)
function make(dir) {
  const { Runner } = require(path.join(dir, 'runner.js'))
  const { Execution } = require(path.join(dir, 'execution.js'))
  const { Events } = require(path.join(dir, 'events.js'))
  const { Writer } = require(path.join(dir, 'writer.js'))
  const { defineJob } = require(path.join(dir, 'job.js'))
  const jobDef = defineJob({ name: 'e2e', run: async (ctx) => { for (let i = 0; i < STEPS; i++) await ctx.run(`s${i}`, () => ({ i })); return { steps: STEPS } } })
  const job = { name: 'e2e', def: jobDef }
  let left = 0, done, seq = 0
  const claimedText = () => `[{"id":"01KB${String(++seq).padStart(22, '0')}","jobName":"e2e","input":{"i":1},"status":"running","labels":{},"progress":null,"leaseGeneration":1,"startedAt":"${new Date().toISOString()}","steps":[]}]`
  const engine = {
    start() {}, stop() {}, loopAlive: () => false, wake() {}, release() {},
    flush(text) {
      const isComplete = text.includes('{"complete"')
      let claimed = null
      if (isComplete) { if (--left === 0) setImmediate(done); else claimed = claimedText() }
      return { statuses: W, claimed, errors: null }
    },
  }
  let runner
  const writer = new Writer(engine, { alwaysAsync: false, onClaimed: (t) => runner.onClaimed(t) })
  const events = new Events()
  const host = {
    events, publish: null, write: (op) => writer.push(op), maxValueBytes: () => 1 << 26, persistLogs: () => false,
    progressWritten() {}, workerError: (e) => { throw e }, takeCancelEmitted: () => false,
  }
  runner = new Runner({ engine, writer, job: () => job, execution: (j, c, t) => new Execution(host, j, c, t), workerError: (e) => { console.error(e); process.exit(1) }, isClosed: () => false })
  runner.start()
  return (n) => new Promise((r) => { left = n; done = r; runner.onClaimed(claimedText()) })
}
;(async () => {
  const run = { base: make(libs.base), new: make(libs.new) }
  const N = 5000, ROUNDS = Number(process.env.ROUNDS || 12)
  const res = { base: [], new: [] }
  for (let r = 0; r < ROUNDS; r++) {
    for (const k of r % 2 ? ['new', 'base'] : ['base', 'new']) {
      const c0 = process.cpuUsage(); await run[k](N); const c = process.cpuUsage(c0)
      if (r >= 2) res[k].push((c.user + c.system) / N)
    }
  }
  for (const k of ['base', 'new']) { const s = res[k].sort((a, b) => a - b); console.log(k, 'µs/run min', s[0].toFixed(2), 'med', s[s.length >> 1].toFixed(2)) }
})()
