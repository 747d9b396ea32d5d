'use strict'
// CPU per 1,000 steps on PostgreSQL, of this Node process and of the server
// (every backend it used, its auxiliary processes), for one e2e scenario:
//
//   node bench/pgcpu.js <url> <maxConcurrentRuns> [runs=2000] [steps=10]
//   node bench/pgcpu.js <url> mp [runs=2000]
//
// `mp` is one multiprocess worker (bench/scenario.js's: maxConcurrentRuns 4,
// one-step runs over 32 concurrency keys) and reports also the CPU it and the
// server use per wall second: what one process takes of the machine's cores.
// The server must run on this machine (its processes are read from /proc):
// its CPU is the postmaster's own and reaped children's plus its live
// children's, before and after. ROOT=<dir> measures another checkout's build.
// CPU per step moves much less than wall time on a loaded machine.

const fs = require('node:fs')
const path = require('node:path')
const ROOT = process.env.ROOT || path.join(__dirname, '..')
const { createDurably, defineJob } = require(ROOT)
const { z } = require(path.join(__dirname, '..', 'node_modules', 'zod'))
const { sql, freshDatabase } = require('./pgserver.js')

const TICK = 100 // clock ticks per second of /proc/<pid>/stat (USER_HZ)

/** utime, stime, cutime, cstime (ticks) and ppid of a process, or null. */
function stat(pid) {
  let s
  try {
    s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
  } catch {
    return null
  }
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ')
  // fields from 3 (state): ppid is 4, utime 14, stime 15, cutime 16, cstime 17
  return { ppid: Number(f[1]), u: Number(f[11]), s: Number(f[12]), cu: Number(f[13]), cs: Number(f[14]) }
}

/** The server's CPU so far, in ms: the postmaster and all its children, live or reaped. */
function serverCpuMs(postmaster) {
  const pm = stat(postmaster)
  if (!pm) throw new Error(`no process ${postmaster} (is the server on this machine?)`)
  let ticks = pm.u + pm.s + pm.cu + pm.cs
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue
    const st = stat(e)
    if (st && st.ppid === postmaster) ticks += st.u + st.s
  }
  return (ticks * 1000) / TICK
}

function nodeCpuMs(c0) {
  const c = process.cpuUsage(c0)
  return (c.user + c.system) / 1000
}

async function main() {
  const [url, mode = '8', runsArg, stepsArg] = process.argv.slice(2)
  if (!url) throw new Error('usage: node bench/pgcpu.js <url> <maxConcurrentRuns|mp> [runs] [steps]')
  const mp = mode === 'mp'
  const mc = mp ? 4 : Number(mode)
  const n = Number(runsArg ?? 2000)
  const steps = mp ? 1 : Number(stepsArg ?? 10)
  const dataDir = sql(url, 'SHOW data_directory').trim()
  const postmaster = Number(fs.readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0])
  const db = freshDatabase(url, 'cpu')
  const job = defineJob({
    name: 'e2e',
    input: z.object({ i: z.number() }),
    run: async (ctx, input) => {
      for (let i = 0; i < steps; i++) await ctx.run(`s${i}`, () => ({ i: input.i }))
      return { steps }
    },
  })
  const d = createDurably({ url: db, maxConcurrentRuns: mc, jobs: { e2e: job } })
  await d.migrate()
  for (let b = 0; b < n; b += 500) {
    const items = Array.from({ length: Math.min(500, n - b) }, (_, j) => ({
      input: { i: b + j },
      ...(mp ? { options: { concurrencyKey: `k${(b + j) % 32}` } } : {}),
    }))
    await d.jobs.e2e.batchTrigger(items)
  }
  let done = 0
  let fin
  const all = new Promise((r) => (fin = r))
  d.on('run:complete', () => {
    if (++done === n) fin()
  })
  const c0 = process.cpuUsage()
  const s0 = serverCpuMs(postmaster)
  const t0 = performance.now()
  await d.start()
  await all
  const ms = performance.now() - t0
  const nodeMs = nodeCpuMs(c0)
  const serverMs = serverCpuMs(postmaster) - s0
  await d.close()
  const k = (n * steps) / 1000
  const r2 = (v) => Math.round(v * 100) / 100
  const out = {
    mode: mp ? 'mp (one worker process, mc 4, 32 keys, one step)' : `e2e mc ${mc}`,
    runs: n,
    steps,
    ms: Math.round(ms),
    stepsPerS: Math.round(((n * steps) / ms) * 1000),
    nodeCpuMsPer1kSteps: r2(nodeMs / k),
    serverCpuMsPer1kSteps: r2(serverMs / k),
    totalCpuMsPer1kSteps: r2((nodeMs + serverMs) / k),
  }
  if (mp) {
    out.runsPerS = Math.round((n / ms) * 1000)
    out.nodeCoresUsed = r2(nodeMs / ms)
    out.serverCoresUsed = r2(serverMs / ms)
    out.coresUsed = r2((nodeMs + serverMs) / ms)
  }
  console.log(JSON.stringify(out))
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
