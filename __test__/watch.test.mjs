// Issue 15, step 4: waitForRun and subscribe (lib/watch.js) see an instance
// only through a narrow source; here a fake one, with no engine at all.
import { createRequire } from 'node:module'
import { describe, expect, it } from 'vitest'

const require = createRequire(import.meta.url)
const { waitForRun, subscribe } = require('../lib/watch.js')

/** A source over an in-memory run table and a listener list. */
function fakeSource(runs) {
  const listeners = new Set()
  return {
    getRunNow: (id) => runs.get(id) ?? null,
    onAny: (l) => (listeners.add(l), () => listeners.delete(l)),
    isClosed: () => false,
    noWorkerNote: () => ' (no worker here)',
    sequence: () => 7,
    emit: (e) => [...listeners].forEach((l) => l(e)),
    listeners,
  }
}

describe('lib/watch.js over a narrow source', () => {
  it('waitForRun settles from the source: completed, failed, cancelled, not found, timeout', async () => {
    const runs = new Map([
      ['a', { id: 'a', status: 'running' }],
      ['f', { id: 'f', status: 'failed', error: 'boom' }],
      ['c', { id: 'c', status: 'cancelled' }],
    ])
    const src = fakeSource(runs)
    const progress = []
    const done = waitForRun(src, 'a', { onProgress: (p) => progress.push(p) })
    src.emit({ type: 'run:progress', runId: 'a', progress: 1 })
    src.emit({ type: 'run:progress', runId: 'other', progress: 9 })
    runs.set('a', { id: 'a', status: 'completed', output: 42 })
    src.emit({ type: 'run:complete', runId: 'a' })
    expect(await done).toEqual({ id: 'a', status: 'completed', output: 42 })
    expect(progress).toEqual([1])
    expect(src.listeners.size).toBe(0) // unsubscribed once settled
    await expect(waitForRun(src, 'f')).rejects.toMatchObject({ name: 'RunFailedError', message: 'boom', runId: 'f' })
    await expect(waitForRun(src, 'c')).rejects.toMatchObject({ code: 'CANCELLED' })
    await expect(waitForRun(src, 'nope')).rejects.toMatchObject({ code: 'NOT_FOUND' })
    runs.set('slow', { id: 'slow', status: 'pending' })
    const err = await waitForRun(src, 'slow', { timeout: 20 }).catch((e) => e)
    expect(err.code).toBe('TIMEOUT')
    expect(err.message).toMatch(/within 20 ms \(no worker here\)/)
    await expect(waitForRun(src, 'slow', { timeout: -1 })).rejects.toMatchObject({ code: 'VALIDATION_ERROR' })
  })

  it('subscribe streams a snapshot, the run events, and closes after the terminal one', async () => {
    const runs = new Map([['a', { id: 'a', status: 'running', jobName: 'j', labels: {} }]])
    const src = fakeSource(runs)
    const reader = subscribe(src, 'a').getReader()
    expect((await reader.read()).value).toMatchObject({ type: 'run:snapshot', runId: 'a', sequence: 7, run: { status: 'running' } })
    src.emit({ type: 'step:complete', runId: 'a' })
    src.emit({ type: 'run:complete', runId: 'a' })
    expect((await reader.read()).value.type).toBe('step:complete')
    expect((await reader.read()).value.type).toBe('run:complete')
    expect((await reader.read()).done).toBe(true)
    expect(src.listeners.size).toBe(0)
  })

  it('a run in flight here is settled by its terminal event, not by a poll that sees the commit first', async () => {
    // On PostgreSQL the final write is visible to a poll before the execution
    // emits run:progress and run:complete (it does so when the write returns).
    const runs = new Map([['a', { id: 'a', status: 'running', jobName: 'j', labels: {} }]])
    const here = new Set(['a'])
    const src = { ...fakeSource(runs), executesHere: (id) => here.has(id) }
    const progress = []
    let settled = false
    const done = waitForRun(src, 'a', { onProgress: (p) => progress.push(p) }).then((r) => ((settled = true), r))
    runs.set('a', { id: 'a', status: 'completed', output: 1 })
    await new Promise((r) => setTimeout(r, 300)) // several polls
    expect(settled).toBe(false)
    src.emit({ type: 'run:progress', runId: 'a', progress: 2 })
    src.emit({ type: 'run:complete', runId: 'a' })
    expect(await done).toMatchObject({ status: 'completed' })
    expect(progress).toEqual([2])
    // Once it no longer runs here (lost, handed back, another process), polls settle it.
    runs.set('b', { id: 'b', status: 'running' })
    here.add('b')
    const b = waitForRun(src, 'b')
    runs.set('b', { id: 'b', status: 'failed', error: 'elsewhere' })
    here.delete('b')
    await expect(b).rejects.toMatchObject({ message: 'elsewhere' })
  })
})
