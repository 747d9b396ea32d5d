// The app of __test__/react.test.mjs for `@coji/durably-react` 0.15, unchanged,
// against a handler with `compat: 'upstream-0.15'`.
import { StrictMode } from 'react'
import { createRoot } from 'react-dom/client'
import { useJob, useJobRun, useRunActions, useRuns } from '@coji/durably-react'

const api = '/compat/durably'
const params = new URLSearchParams(location.search)
const key = params.get('key')
const doneRunId = params.get('done')

function Steps() {
  const job = useJob({ api, jobName: 'steps' })
  return (
    <section>
      <button data-testid="start" onClick={() => job.trigger({ key, n: 3 })}>
        start
      </button>
      <span data-testid="status">{job.status ?? 'idle'}</span>
      <span data-testid="progress">{job.progress ? `${job.progress.current}/${job.progress.total}` : '-'}</span>
      <span data-testid="output">{job.output ? JSON.stringify(job.output) : '-'}</span>
      <span data-testid="logs">{job.logs.map((l) => l.message).join('|')}</span>
      <span data-testid="run-id">{job.currentRunId ?? ''}</span>
    </section>
  )
}

function Done() {
  const run = useJobRun({ api, runId: doneRunId })
  return (
    <section>
      <span data-testid="done-status">{run.status ?? '-'}</span>
      <span data-testid="done-output">{run.output ? JSON.stringify(run.output) : '-'}</span>
    </section>
  )
}

function Flaky() {
  const job = useJob({ api, jobName: 'flaky' })
  const actions = useRunActions({ api })
  return (
    <section>
      <button data-testid="flaky-start" onClick={() => job.trigger({ key })}>
        start flaky
      </button>
      <span data-testid="flaky-status">{job.status ?? 'idle'}</span>
      <span data-testid="flaky-error">{job.error ?? '-'}</span>
      <span data-testid="flaky-output">{job.output ? JSON.stringify(job.output) : '-'}</span>
      <button data-testid="flaky-retrigger" onClick={() => actions.retrigger(job.currentRunId)}>
        retrigger
      </button>
    </section>
  )
}

function Running() {
  const { runs } = useRuns({ api, jobName: 'steps', status: 'leased' })
  return <span data-testid="leased">{runs.map((r) => r.status).join(',') || '-'}</span>
}

createRoot(document.getElementById('root')).render(
  <StrictMode>
    <Steps />
    {doneRunId ? <Done /> : null}
    <Flaky />
    <Running />
  </StrictMode>,
)
