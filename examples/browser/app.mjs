// A progress bar that survives a reload: the run lives in SQLite on OPFS,
// the worker resumes it when the page comes back, and the page finds the
// run again by its job name.
import { createDurably } from 'durably/browser'
import { importPhotos } from './jobs.mjs'

const $ = (id) => document.getElementById(id)
const durably = createDurably({ path: 'example.db', directory: 'durably-example', jobs: { importPhotos } })

function show(run) {
  const p = run.progress ?? { current: 0, total: 10 }
  $('bar').max = p.total ?? 10
  $('bar').value = p.current
  $('status').textContent = run.status === 'completed' ? `completed: ${run.output.photos} photos` : `${run.status}: ${p.message ?? 'starting'}`
}

async function follow(id) {
  $('start').disabled = true
  // The run's current state first, then its events until it ends.
  for await (const e of durably.subscribe(id)) {
    if (e.type === 'run:snapshot' || e.type === 'run:complete' || e.type === 'run:fail') show(await durably.getRun(id))
    else if (e.type === 'run:progress') show({ status: 'running', progress: e.progress })
  }
  const steps = await durably.getSteps(id)
  $('steps').textContent = `${steps.filter((s) => s.status === 'completed').length} steps stored`
  $('start').disabled = false
}

try {
  await durably.init()
  $('start').onclick = async () => {
    const run = await durably.jobs.importPhotos.trigger({ count: 10, stepMs: Number(new URLSearchParams(location.search).get('stepMs') ?? 500) })
    follow(run.id)
  }
  $('start').disabled = false
  // After a reload: the unfinished run (resumed by the worker) gets its bar back.
  const [open] = await durably.getRuns({ jobName: 'import-photos', status: ['pending', 'running'], limit: 1 })
  if (open) follow(open.id)
  else $('status').textContent = 'idle'
} catch (err) {
  $('status').textContent = `cannot start: ${err.message}`
}
