// The browser side: durably/react hooks typed from the server's jobs.
import { StrictMode, useState } from 'react'
import { createRoot } from 'react-dom/client'
import { createDurablyClient } from 'durably/client'
import { DurablyProvider, useJob, useLogs, useRunActions, useRuns } from 'durably/react'
import type { jobs } from './jobs.mts'

const client = createDurablyClient<typeof jobs>({ baseUrl: '/api/durably' })

function Import() {
  const [failOnce, setFailOnce] = useState(false)
  const job = useJob(client.job('import-rows'))
  const { logs } = useLogs(job.runId)
  const { retry, isPending } = useRunActions()
  return (
    <section>
      <h2>Import 50 rows</h2>
      <label>
        <input type="checkbox" checked={failOnce} onChange={(e) => setFailOnce(e.target.checked)} /> fail once
      </label>{' '}
      <button data-testid="start" disabled={job.isRunning} onClick={() => job.trigger({ rows: 50, failOnce })}>
        Start
      </button>
      <p>
        status: <b data-testid="status">{job.status ?? 'idle'}</b>
        {job.progress ? ` — ${job.progress.message ?? ''}` : ''}
      </p>
      {job.progress ? <progress value={job.progress.current} max={job.progress.total} /> : null}
      {job.status === 'completed' ? <p data-testid="output">imported {job.output?.imported} rows</p> : null}
      {job.status === 'failed' ? (
        <p>
          <span data-testid="error">{job.error}</span>{' '}
          <button data-testid="retry" disabled={isPending} onClick={() => retry(job.runId!)}>
            Retry
          </button>
        </p>
      ) : null}
      <ul>
        {logs.map((l, i) => (
          <li key={i}>{l.message}</li>
        ))}
      </ul>
    </section>
  )
}

function Recent() {
  const { runs } = useRuns({ jobName: 'import-rows', limit: 5 }, { client })
  return (
    <section>
      <h2>Recent runs</h2>
      <ul>
        {runs.map((r) => (
          <li key={r.id}>
            {r.id.slice(-6)} {r.status} {r.output ? `(${r.output.imported} rows)` : ''}
          </li>
        ))}
      </ul>
    </section>
  )
}

createRoot(document.getElementById('root')!).render(
  <StrictMode>
    <DurablyProvider client={client}>
      <Import />
      <Recent />
    </DurablyProvider>
  </StrictMode>,
)
