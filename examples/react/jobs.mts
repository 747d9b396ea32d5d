// Server-side job definitions. The browser imports only their *types*
// (`import type { jobs } from './jobs'`), so none of this reaches its bundle.
import { defineJob } from 'durably'
import { z } from 'zod'

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** Imports `rows` rows in steps of 10, reporting progress; fails once when asked to. */
export const importRows = defineJob({
  name: 'import-rows',
  input: z.object({ rows: z.number().int().min(1).max(1000), failOnce: z.boolean().default(false) }),
  output: z.object({ imported: z.number() }),
  run: async (ctx, input) => {
    for (let from = 0; from < input.rows; from += 10) {
      const to = Math.min(from + 10, input.rows)
      await ctx.run(`rows-${from}-${to}`, async () => {
        await sleep(150)
        // A retry replays the finished batches and runs this one again.
        if (input.failOnce && from === 20 && !failedOnce.has(ctx.runId)) {
          failedOnce.add(ctx.runId)
          throw new Error('the upstream API answered 503')
        }
        // Inside the step: a replayed step does not log again.
        ctx.log.info(`imported rows ${from + 1}–${to}`)
        return to - from
      })
      ctx.progress(to, input.rows, `${to} of ${input.rows}`)
    }
    return { imported: input.rows }
  },
})

const failedOnce = new Set<string>()

export const jobs = { importRows }
