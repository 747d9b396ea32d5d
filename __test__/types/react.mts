// durably/react inference: a job handle types trigger's input and the output.
import { createElement } from 'react'
import { createDurablyClient } from 'durably/client'
import { DurablyProvider, useJob, useRun, useRuns, useLogs, useRunActions } from 'durably/react'
import type { UseJobResult, LiveLog } from 'durably/react'
import { defineJob } from 'durably'
import { z } from 'zod'

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false
type Expect<T extends true> = T

const report = defineJob({
  name: 'report',
  input: z.object({ month: z.string() }),
  run: async () => ({ rows: 3 }),
})
const jobs = { report }
const client = createDurablyClient<typeof jobs>({ baseUrl: '/api/durably' })

export function Report() {
  const job = useJob(client.job('report'))
  type _out = Expect<Equal<typeof job.output, { rows: number } | null>>
  type _logs = Expect<Equal<typeof job.logs, LiveLog[]>>
  void job.trigger({ month: '2026-11' })
  // @ts-expect-error month is required
  void job.trigger({})
  if (job.run) {
    type _jobName = Expect<Equal<typeof job.run.jobName, 'report'>>
  }
  const byName: UseJobResult = useJob('report')
  void byName.trigger({ anything: true })
  const run = useRun<{ rows: number }>(job.runId)
  const rows: number | undefined = run.output?.rows
  const { runs } = useRuns({ jobName: 'report', status: 'failed' }, { client })
  if (runs[0]) {
    type _r = Expect<Equal<typeof runs[0]['jobName'], 'report'>>
  }
  const { logs } = useLogs(job.runId)
  const actions = useRunActions()
  void actions.retry('r').then((r) => r.runId)
  return createElement('p', null, String(rows), logs.length, run.isRunning ? 'busy' : 'idle')
}

export const app = createElement(DurablyProvider, { client }, createElement(Report))
