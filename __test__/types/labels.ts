// Type tests (issue 12): a `labels` schema types trigger options and run
// records; onError, WorkerErrorEvent.context, event sequences,
// completedStepCount, processUntilIdle({ maxRuns }), close({ timeout }).
// Checked by `tsc --noEmit` (types.test.js); never executed.

import { z } from 'zod'
import { createDurably, defineJob } from 'durably'
import type { Run, WorkerErrorContext } from 'durably'

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false
type Expect<T extends true> = T

const job = defineJob({ name: 'labelled', input: z.object({ n: z.number() }), run: async (_ctx, input) => input.n * 2 })

export async function labelled() {
  const durably = createDurably({
    path: ':memory:',
    jobs: { job },
    labels: z.object({ tenant: z.string(), region: z.enum(['eu', 'us']) }),
  })
  type L = { tenant: string; region: 'eu' | 'us' }

  const run = await durably.jobs.job.trigger({ n: 1 }, { labels: { tenant: 'acme', region: 'eu' } })
  type _runLabels = Expect<Equal<typeof run.labels, L>>
  type _count = Expect<Equal<typeof run.completedStepCount, number>>
  // @ts-expect-error region must be 'eu' | 'us'
  await durably.jobs.job.trigger({ n: 1 }, { labels: { tenant: 'acme', region: 'mars' } })
  // @ts-expect-error an unknown label key
  await durably.jobs.job.trigger({ n: 1 }, { labels: { tenant: 'acme', region: 'eu', team: 'x' } })
  await durably.jobs.job.batchTrigger([{ input: { n: 2 }, options: { labels: { tenant: 't', region: 'us' } } }])
  await durably.jobs.job.triggerAndWait({ n: 3 }, { labels: { tenant: 't', region: 'us' }, timeout: 1000 })

  const got = await durably.getRun(run.id)
  if (got) {
    type _got = Expect<Equal<typeof got.labels, L>>
  }
  const scoped = await durably.jobs.job.getRuns()
  type _scoped = Expect<Equal<(typeof scoped)[number]['labels'], L>>
  const again = await durably.retrigger(run.id)
  type _again = Expect<Equal<typeof again.labels, L>>

  // Without a schema, labels are any string record.
  const plain = createDurably({ path: ':memory:', jobs: { job } })
  const p = await plain.jobs.job.trigger({ n: 1 }, { labels: { anything: 'goes' } })
  type _plain = Expect<Equal<typeof p.labels, Record<string, string>>>
  const r: Run = p
  void r

  const off = durably.onError((e) => {
    type _ctx = Expect<Equal<typeof e.context, WorkerErrorContext>>
    type _seq = Expect<Equal<typeof e.sequence, number>>
    return e.error
  })
  off()
  durably.on('run:coalesced', (e) => e.skippedLabels.tenant)
  durably.on('step:complete', (e) => e.sequence + e.duration)
  const n: number = await durably.processUntilIdle({ maxRuns: 10 })
  void n
  await durably.close({ timeout: 10_000 })
  await durably.stop({ abort: true })
}
