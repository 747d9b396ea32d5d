// plainjob 0.0.14 (better-sqlite3 12) as a peer of `npm run bench -- --peers`:
//
//   node bench/peers/plainjob.mjs <scenario> '<json-args>'   (args: { quick?, sizes? })
//
// Same protocol as bench/scenario.js: progress on stderr, `RESULT <json>` as
// the last line of stdout, a fresh temp database per scenario. plainjob is a
// single-table queue with no steps, so it only has counterparts of the
// scenarios that need none:
//
//   trigger  `queue.add` one by one (5,000 after 50 warm-up adds), like `trigger()` awaited one by one
//   batch    `queue.addMany` in batches of 500 (20,000 jobs), like `batchTrigger`
//   onestep  20,000 jobs added with addMany, then one worker claims and
//            completes each (two commits per job: the claim transaction and
//            the done update), timed from worker.start() to the last
//            onCompleted, like `onestep`'s execution time
//
// plainjob sets WAL and synchronous NORMAL itself (`synchronous = 1`), as durably does.

import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import Database from 'better-sqlite3'
import { better, defineQueue, defineWorker } from 'plainjob'

const SIZES = {
  full: { trigger: 5000, batch: 20000, batchSize: 500, onestep: 20000 },
  quick: { trigger: 1000, batch: 5000, batchSize: 500, onestep: 2000 },
}

const quiet = { debug() {}, info() {}, warn: (...a) => console.error(...a), error: (...a) => console.error(...a) }
const round = (v, d = 2) => Math.round(v * 10 ** d) / 10 ** d

function version(pkg) {
  return JSON.parse(fs.readFileSync(new URL(`./node_modules/${pkg}/package.json`, import.meta.url), 'utf8')).version
}

const dirs = []
process.on('exit', () => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true })
})

function open() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'durably-bench-plainjob-'))
  dirs.push(dir)
  const sqlite = new Database(path.join(dir, 'bench.db'))
  const queue = defineQueue({ connection: better(sqlite), logger: quiet })
  return { sqlite, queue, info: { synchronous: sqlite.pragma('synchronous', { simple: true }), journalMode: sqlite.pragma('journal_mode', { simple: true }) } }
}

const scenarios = {
  trigger(sz) {
    const { queue, info } = open()
    for (let i = 0; i < 50; i++) queue.add('e2e', { i: -1 })
    const t0 = performance.now()
    for (let i = 0; i < sz.trigger; i++) queue.add('e2e', { i })
    const ms = performance.now() - t0
    queue.close()
    return { n: sz.trigger, ms: round(ms), runsPerS: Math.round((sz.trigger / ms) * 1000), info }
  },

  batch(sz) {
    const { queue, info } = open()
    queue.addMany('e2e', Array.from({ length: 10 }, (_, i) => ({ i })))
    const list = []
    for (let b = 0; b < sz.batch; b += sz.batchSize) {
      list.push(Array.from({ length: Math.min(sz.batchSize, sz.batch - b) }, (_, i) => ({ i: b + i })))
    }
    const t0 = performance.now()
    for (const b of list) queue.addMany('e2e', b)
    const ms = performance.now() - t0
    queue.close()
    return { n: sz.batch, batchSize: sz.batchSize, ms: round(ms), runsPerS: Math.round((sz.batch / ms) * 1000), info }
  },

  async onestep(sz) {
    const { queue, info } = open()
    const n = sz.onestep
    for (let b = 0; b < n; b += 500) queue.addMany('e2e', Array.from({ length: Math.min(500, n - b) }, (_, i) => ({ i: b + i })))
    let done = 0
    let failed = null
    let finish
    const finished = new Promise((r) => (finish = r))
    const worker = defineWorker('e2e', () => {}, {
      queue,
      logger: quiet,
      onCompleted: () => {
        if (++done === n) finish(performance.now())
      },
      onFailed: (job, error) => {
        failed = `job ${job.id} failed: ${error}`
        finish(performance.now())
      },
    })
    const t0 = performance.now()
    void worker.start()
    const t1 = await finished
    await worker.stop()
    if (failed) throw new Error(failed)
    const left = queue.countJobs({ status: 0 }) + queue.countJobs({ status: 1 })
    queue.close()
    if (left !== 0) throw new Error(`${left} jobs left pending or processing`)
    const ms = t1 - t0
    return { n, ms: round(ms), runsPerS: Math.round((n / ms) * 1000), info }
  },
}

async function main() {
  const [name, json = '{}'] = process.argv.slice(2)
  const args = JSON.parse(json)
  const fn = scenarios[name]
  if (!fn) throw new Error(`plainjob has no scenario ${name} (known: ${Object.keys(scenarios).join(', ')})`)
  const sz = { ...(args.quick ? SIZES.quick : SIZES.full), ...(args.sizes ?? {}) }
  const t0 = performance.now()
  const res = await fn(sz)
  const out = {
    scenario: name,
    impl: 'plainjob',
    library: `plainjob ${version('plainjob')}`,
    driver: `better-sqlite3 ${version('better-sqlite3')}`,
    ...res,
    scenarioWallMs: round(performance.now() - t0),
  }
  process.stdout.write(`RESULT ${JSON.stringify(out)}\n`)
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(`[${process.argv[2]}]`, err && err.stack ? err.stack : err)
    process.stdout.write(`RESULT ${JSON.stringify({ scenario: process.argv[2], error: String(err && err.message) })}\n`)
    process.exit(1)
  },
)
