// A consumer project's ES module: compiled against the packed package only
// (no @types/node of its own, no `types` in its tsconfig). See types.test.js.
import { createDurably, createDurablyHandler, defineJob, toNodeHandler, ValidationError } from 'durably'
import type { Run, SubscribeEvent } from 'durably'

const job = defineJob({
  name: 'consumer-job',
  run: async (ctx, input) => {
    ctx.log.info('input', { input })
    return ctx.run('step', (signal: AbortSignal) => (signal.aborted ? 0 : 1))
  },
})
const durably = createDurably({ path: ':memory:', jobs: { job } })
durably.on('run:fail', (e) => e.failedStepName)
const run: Run = await durably.jobs.job.trigger()
const stream: ReadableStream<SubscribeEvent> = durably.subscribe(run.id)
const handler = createDurablyHandler(durably)
const response: Response = await handler.handle(new Request('http://localhost/api/runs'), '/api')
const node = toNodeHandler(handler, '/api')
export { job, stream, response, node, ValidationError }
