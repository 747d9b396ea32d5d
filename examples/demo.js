'use strict'
// npm run demo — a job of several slow steps on the default embedded
// database (./durably.db). Interrupt it (Ctrl-C, or kill -9 <pid>) and run it
// again: finished steps are replayed from the database, not executed again.

const { createDurably, defineJob } = require('..')

const PAGES = 6
const sleep = (ms, signal) =>
  new Promise((resolve, reject) => {
    const t = setTimeout(resolve, ms)
    signal?.addEventListener('abort', () => (clearTimeout(t), reject(signal.reason)), { once: true })
  })

const importOrders = defineJob({
  name: 'import-orders',
  run: async (ctx, input) => {
    let total = 0
    for (let page = 1; page <= PAGES; page++) {
      const orders = await ctx.run(`fetch-page-${page}`, async (signal) => {
        await sleep(700, signal) // a slow API call
        return Array.from({ length: 25 }, (_, i) => ({ id: `${input.shop}-${page}-${i}`, cents: 100 * i }))
      })
      total += orders.length
      ctx.progress(page, PAGES, `page ${page}/${PAGES}`)
    }
    const receipt = await ctx.run('send-report', async (signal) => {
      await sleep(400, signal)
      return { sentAt: new Date() }
    })
    return { imported: total, reportSentAt: receipt.sentAt }
  },
})

const HEARTBEAT_MS = 1000
const STALE_MS = 3000
const POLL_MS = 1000

async function main() {
  const durably = createDurably({
    jobs: { importOrders },
    heartbeatInterval: HEARTBEAT_MS,
    staleThreshold: STALE_MS, // a killed run is picked up again after 3 s
    pollingInterval: POLL_MS,
  })
  await durably.migrate()

  const executed = new Set()
  durably.on('step:start', (e) => executed.add(e.stepName))
  durably.on('step:complete', (e) => console.log(`  ✓ ${e.stepName.padEnd(14)} ran now, result committed`))
  durably.on('run:progress', (e) => {
    const { current, total } = e.progress
    const bar = '█'.repeat(current) + '░'.repeat(total - current)
    console.log(`  [${bar}] ${current}/${total}`)
  })

  const unfinished = await durably.getRuns({ jobName: 'import-orders', status: ['pending', 'running'] })
  let runId
  let heldElsewhere = false
  if (unfinished.length > 0) {
    const run = unfinished[0]
    runId = run.id
    const done = (await durably.getSteps(run.id)).filter((s) => s.status === 'completed')
    if (run.status === 'running') {
      heldElsewhere = true
      console.log(`Found run ${run.id} marked running by another process, ${done.length} step(s) committed so far.`)
      console.log("  Alive, that process renews the run's heartbeat every second and keeps the run; killed, its")
      console.log('  heartbeat goes stale after 3 s and this process takes the run over. Watching…')
    } else {
      console.log(`Resuming run ${run.id}: ${done.length} step(s) already committed will be replayed, not re-run.`)
      for (const s of done) console.log(`  ↺ ${s.name.padEnd(14)} replayed from the database`)
    }
  } else {
    const run = await durably.jobs.importOrders.trigger({ shop: 'acme' })
    runId = run.id
    console.log(`Started run ${run.id} (${PAGES} pages + a report). Press Ctrl-C any time, then run me again.`)
  }

  // Who holds a running run is told by the lease itself: this process can
  // claim it (run:start here) only once the holder's heartbeat is stale. A
  // step committed by someone else, or no claim within staleThreshold + a
  // heartbeat + two polls (and a second of slack), means the holder is alive.
  let verdict = null
  const say = (v, text) => {
    if (verdict !== v) console.log(text)
    verdict = v
  }
  durably.on('run:start', (e) => {
    if (e.runId !== runId || !heldElsewhere) return
    say(
      'stale',
      '  Taking the run over: the process that held it stopped renewing its heartbeat (it was killed, or hung\n' +
        '  for 3 s). Committed steps are replayed; its unfinished step runs again here.',
    )
  })
  const alive = (why) =>
    say(
      'alive',
      `  Another process is still running this run: ${why}, so it was not killed.\n` +
        '  Waiting for it to finish (this process takes over only if that one dies). Ctrl-C to quit.',
    )
  let watching = heldElsewhere
  const watch = async () => {
    const deadline = Date.now() + STALE_MS + HEARTBEAT_MS + 2 * POLL_MS + 1000
    let last = (await durably.getRun(runId))?.currentStepIndex
    while (watching && verdict === null) {
      await sleep(250)
      const run = watching ? await durably.getRun(runId).catch(() => null) : null
      if (!run || run.status !== 'running' || verdict !== null) break
      // Our own claim does not move currentStepIndex, and our first new step
      // commits long after run:start: a move here is the other process's step.
      if (run.currentStepIndex > last) alive('it just committed a step')
      else if (Date.now() > deadline) alive('its heartbeat is still fresh after 3 s')
      last = run.currentStepIndex
    }
  }
  const watched = heldElsewhere ? watch() : Promise.resolve()

  // The recommended shutdown: on SIGTERM the job function gets up to 10 s to finish, then its run
  // is handed back to `pending`; Ctrl-C hands it back at once. Either way the next start resumes it
  // right away from its last committed step.
  const interrupt = (options) => async () => {
    watching = false
    console.log('\nInterrupted. Handing the run back; run `npm run demo` again to resume.')
    await durably.close(options)
    process.exit(130)
  }
  process.once('SIGINT', interrupt({ abort: true }))
  process.once('SIGTERM', interrupt({ timeout: 10_000 }))

  await durably.start()
  try {
    const run = await durably.waitForRun(runId)
    const by = executed.size > 0 ? 'imported' : 'the other process imported'
    console.log(`Done: ${by} ${run.output.imported} orders; report sent at ${run.output.reportSentAt.toISOString()}.`)
    console.log(`Steps executed in this process: ${executed.size}. Run again to start a new import.`)
  } finally {
    watching = false
    await watched
    await durably.close()
  }
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
