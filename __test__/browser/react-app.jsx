// The app of __test__/react.test.mjs: durably/react hooks in StrictMode,
// bundled by esbuild (React's development build, so StrictMode double-mounts).
import { StrictMode, useState } from 'react'
import { createRoot } from 'react-dom/client'
import { createDurablyClient } from 'durably/client'
import { DurablyProvider, useJob, useRun, useRuns, useLogs, useRunActions } from 'durably/react'

const client = createDurablyClient({ baseUrl: '/api/durably' })
const key = new URLSearchParams(location.search).get('key')

function RunDetail({ runId }) {
  const run = useRun(runId)
  const { logs } = useLogs(runId)
  return (
    <div>
      <span data-testid="detail-status">{run.status ?? '-'}</span>
      <span data-testid="detail-logs">{logs.map((l) => l.message).join('|')}</span>
    </div>
  )
}

function Steps() {
  const job = useJob(client.job('steps'))
  const [shown, setShown] = useState(false)
  return (
    <section>
      <button data-testid="start" onClick={() => job.trigger({ key, n: 3 }).then(() => setShown(true))}>
        start
      </button>
      <span data-testid="status">{job.status ?? 'idle'}</span>
      <span data-testid="running">{String(job.isRunning)}</span>
      <span data-testid="progress">{job.progress ? `${job.progress.current}/${job.progress.total}` : '-'}</span>
      <span data-testid="output">{job.output ? JSON.stringify(job.output) : '-'}</span>
      <span data-testid="logs">{job.logs.length}</span>
      <span data-testid="run-id">{job.runId ?? ''}</span>
      {shown && job.runId ? <RunDetail runId={job.runId} /> : null}
      {shown && job.runId ? <RunDetail runId={job.runId} /> : null}
    </section>
  )
}

function Flaky() {
  const job = useJob(client.job('flaky'))
  const actions = useRunActions()
  return (
    <section>
      <button data-testid="flaky-start" onClick={() => job.trigger({ key })}>
        start flaky
      </button>
      <button data-testid="flaky-retry" onClick={() => actions.retry(job.runId)}>
        retry
      </button>
      <span data-testid="flaky-status">{job.status ?? 'idle'}</span>
      <span data-testid="flaky-error">{job.error ?? '-'}</span>
      <span data-testid="flaky-output">{job.output ? JSON.stringify(job.output) : '-'}</span>
    </section>
  )
}

function List() {
  const { runs, isLoading } = useRuns({ jobName: 'steps', labels: undefined })
  return (
    <ul data-testid="runs" data-loading={String(isLoading)}>
      {runs.map((r) => (
        <li key={r.id}>{`${r.id}:${r.status}:${r.progress ? r.progress.current : 0}`}</li>
      ))}
    </ul>
  )
}

createRoot(document.getElementById('root')).render(
  <StrictMode>
    <DurablyProvider client={client}>
      <Steps />
      <Flaky />
      <List />
    </DurablyProvider>
  </StrictMode>,
)
