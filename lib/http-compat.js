'use strict'
// `compat: 'upstream-0.15'`: what `@coji/durably-react` 0.15 expects of the
// handler. Upstream calls a running run `leased` (status and `run:leased`
// event), ignores `run:snapshot` (it wants the run's state replayed as
// events after connecting), names jobs by their register key, and lets
// EventSource reconnect whenever a stream ends.

const COMPAT_MODES = new Set(['upstream-0.15'])

// What EventSource waits before reconnecting to a stream that ended after
// its run's terminal event: a day, i.e. it does not come back (upstream's
// hooks read a closed EventSource as a connection error, so closing is no option).
const NO_RECONNECT = 'retry: 86400000'

/** `?status=leased` → `running` (before the usual parsing). */
function compatParams(params, jobName) {
  const out = new URLSearchParams()
  for (const [k, v] of params) {
    if (k === 'status') out.append(k, v.split(',').map((s) => (s === 'leased' ? 'running' : s)).join(','))
    else if (k === 'jobName') out.append(k, jobName(v))
    else out.append(k, v)
  }
  return out
}

function compatRun(run) {
  return run && run.status === 'running' ? { ...run, status: 'leased' } : run
}

function compatEvent(e) {
  if (e.type === 'run:start') return { ...e, type: 'run:leased', leaseOwner: '', leaseExpiresAt: '' }
  if (e.type === 'run:snapshot') return { ...e, run: compatRun(e.run) }
  return e
}

/**
 * Upstream's replay of a run's state as events, sent right after the
 * snapshot: `run:leased` (+ `run:progress`) while running, the terminal
 * event once ended, nothing while pending.
 */
function replayOf(snapshot) {
  const run = snapshot.run
  if (!run) return []
  const base = {
    runId: snapshot.runId,
    jobName: run.jobName,
    labels: run.labels,
    timestamp: snapshot.timestamp,
    sequence: snapshot.sequence,
  }
  switch (run.status) {
    case 'running':
    case 'leased': {
      const out = [{ ...base, type: 'run:leased', input: run.input, leaseOwner: '', leaseExpiresAt: '' }]
      if (run.progress) out.push({ ...base, type: 'run:progress', progress: run.progress })
      return out
    }
    case 'completed':
      return [{ ...base, type: 'run:complete', output: run.output, duration: 0 }]
    case 'failed':
      return [{ ...base, type: 'run:fail', error: run.error ?? 'Unknown error', failedStepName: '' }]
    case 'cancelled':
      return [{ ...base, type: 'run:cancel' }]
    default:
      return []
  }
}

module.exports = { COMPAT_MODES, NO_RECONNECT, compatParams, compatRun, compatEvent, replayOf }
