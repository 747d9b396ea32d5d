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

async function main() {
  const durably = createDurably({
    jobs: { importOrders },
    heartbeatInterval: 1000,
    staleThreshold: 3000, // a killed run is picked up again after 3 s
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
  if (unfinished.length > 0) {
    const run = unfinished[0]
    runId = run.id
    const done = (await durably.getSteps(run.id)).filter((s) => s.status === 'completed')
    console.log(`Resuming run ${run.id}: ${done.length} step(s) already committed will be replayed, not re-run.`)
    for (const s of done) console.log(`  ↺ ${s.name.padEnd(14)} replayed from the database`)
    if (run.status === 'running') {
      console.log('  (the previous process was killed; waiting up to 3 s for its lease to expire)')
    }
  } else {
    const run = await durably.jobs.importOrders.trigger({ shop: 'acme' })
    runId = run.id
    console.log(`Started run ${run.id} (${PAGES} pages + a report). Press Ctrl-C any time, then run me again.`)
  }

  // The recommended shutdown: on SIGTERM the job function gets up to 10 s to finish, then its run
  // is handed back to `pending`; Ctrl-C hands it back at once. Either way the next start resumes it
  // right away from its last committed step.
  const interrupt = (options) => async () => {
    console.log('\nInterrupted. Handing the run back; run `npm run demo` again to resume.')
    await durably.close(options)
    process.exit(130)
  }
  process.once('SIGINT', interrupt({ abort: true }))
  process.once('SIGTERM', interrupt({ timeout: 10_000 }))

  await durably.start()
  try {
    const run = await durably.waitForRun(runId)
    console.log(`Done: imported ${run.output.imported} orders; report sent at ${run.output.reportSentAt.toISOString()}.`)
    console.log(`Steps executed in this process: ${executed.size}. Run again to start a new import.`)
  } finally {
    await durably.close()
  }
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
