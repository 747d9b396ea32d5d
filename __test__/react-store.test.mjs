// durably/react's state outside React: the event reducer, the log merge, and
// the shared per-run entry (one stream for many listeners, kept across a
// StrictMode-style release + re-subscribe).

import { describe, it, expect } from 'vitest'
import { reduce, mergeLogs, RunStore, EMPTY_RUN_STATE } from '../lib/react-store.mjs'

const run = (status, extra = {}) => ({ id: 'r', jobName: 'j', status, progress: null, output: null, error: null, isTerminal: false, isActive: true, ...extra })

describe('reduce', () => {
  it('follows a run from snapshot to completion, and back to pending on retry', () => {
    let s = reduce(EMPTY_RUN_STATE, { type: 'run:snapshot', run: run('pending') })
    expect(s.status).toBe('pending')
    s = reduce(s, { type: 'run:start' })
    s = reduce(s, { type: 'run:progress', progress: { current: 1, total: 2 } })
    s = reduce(s, { type: 'log:write', stepName: 'a', level: 'info', message: 'hi', data: null, timestamp: 't', sequence: 3 })
    expect(s).toMatchObject({ status: 'running', progress: { current: 1, total: 2 }, run: { status: 'running', progress: { current: 1, total: 2 } } })
    expect(s.logs.map((l) => l.message)).toEqual(['hi'])
    s = reduce(s, { type: 'run:fail', error: 'boom' })
    expect(s).toMatchObject({ status: 'failed', error: 'boom', run: { status: 'failed', isTerminal: true, isActive: false } })
    s = reduce(s, { type: 'run:retry' })
    expect(s).toMatchObject({ status: 'pending', error: null, run: { isTerminal: false } })
    s = reduce(s, { type: 'run:complete', output: { ok: 1 } })
    expect(s).toMatchObject({ status: 'completed', output: { ok: 1 } })
    // Unknown events leave the very same state object (no re-render).
    expect(reduce(s, { type: 'step:start' })).toBe(s)
    expect(reduce(s, { type: 'run:delete' })).toMatchObject({ run: null, status: null })
  })
})

describe('mergeLogs', () => {
  const line = (message, ms, level = 'info') => ({ level, message, stepName: null, timestamp: new Date(1_700_000_000_000 + ms).toISOString() })

  it('drops live lines already persisted, wherever they start', () => {
    const p = [line('a', 0), line('b', 1), line('c', 2)]
    expect(mergeLogs(p, [line('c', 3), line('d', 4)]).map((l) => l.message)).toEqual(['a', 'b', 'c', 'd'])
    expect(mergeLogs(p, [line('b', 1), line('c', 2)]).map((l) => l.message)).toEqual(['a', 'b', 'c'])
    expect(mergeLogs(p, [line('d', 5)]).map((l) => l.message)).toEqual(['a', 'b', 'c', 'd'])
    expect(mergeLogs([], [line('x', 0)]).map((l) => l.message)).toEqual(['x'])
    expect(mergeLogs(p, []).map((l) => l.message)).toEqual(['a', 'b', 'c'])
  })

  it('live lines with a gap (a retry replayed before the stream reopened) are still matched one by one', () => {
    const p = [line('a', 0), line('b', 150), line('a', 700), line('b', 700), line('c', 850)]
    const live = [line('a', 0), line('b', 150), line('c', 850), line('d', 900)]
    expect(mergeLogs(p, live).map((l) => l.message)).toEqual(['a', 'b', 'a', 'b', 'c', 'd'])
  })

  it('the same message logged again later is a new line', () => {
    const p = [line('tick', 0)]
    expect(mergeLogs(p, [line('tick', 500)]).map((l) => l.message)).toEqual(['tick', 'tick'])
  })
})

describe('RunStore', () => {
  /** A fake client whose subscribe() counts opened streams and yields what the test pushes. */
  function fakeClient() {
    const streams = []
    return {
      streams,
      subscribe(runId, { signal }) {
        const queue = []
        let wake = null
        const stream = { runId, signal, push: (e) => (queue.push(e), wake && wake()) }
        streams.push(stream)
        return {
          async *[Symbol.asyncIterator]() {
            while (!signal.aborted) {
              if (queue.length) {
                const e = queue.shift()
                yield e
                if (['run:complete', 'run:fail'].includes(e.type)) return
              } else await new Promise((r) => (wake = r))
            }
          },
        }
      },
    }
  }

  it('one stream per run for any number of listeners; a release followed by a re-subscribe keeps it', async () => {
    const client = fakeClient()
    const store = new RunStore(client)
    let calls = 0
    const offA = store.subscribe('r', () => calls++)
    const offB = store.subscribe('r', () => calls++)
    expect(client.streams).toHaveLength(1)
    // StrictMode: unmount and mount again at once.
    offA()
    offB()
    const offC = store.subscribe('r', () => calls++)
    expect(client.streams).toHaveLength(1)
    expect(client.streams[0].signal.aborted).toBe(false)
    client.streams[0].push({ type: 'run:snapshot', run: run('running') })
    await new Promise((r) => setTimeout(r, 0))
    expect(store.get('r').status).toBe('running')
    expect(calls).toBe(1)
    // The last listener gone: the stream closes after a moment.
    offC()
    await new Promise((r) => setTimeout(r, 400))
    expect(client.streams[0].signal.aborted).toBe(true)
    expect(store.get('r')).toBe(EMPTY_RUN_STATE)
  })

  it('revive() reopens the stream of a run whose stream ended (after a retry)', async () => {
    const client = fakeClient()
    const store = new RunStore(client)
    const off = store.subscribe('r', () => {})
    client.streams[0].push({ type: 'run:snapshot', run: run('running') })
    client.streams[0].push({ type: 'run:fail', error: 'x' })
    await new Promise((r) => setTimeout(r, 0))
    expect(store.get('r').status).toBe('failed')
    store.revive('r')
    expect(store.get('r').status).toBe('pending')
    expect(client.streams).toHaveLength(2)
    client.streams[1].push({ type: 'run:complete', output: 1 })
    await new Promise((r) => setTimeout(r, 0))
    expect(store.get('r')).toMatchObject({ status: 'completed', output: 1 })
    off()
  })
})
