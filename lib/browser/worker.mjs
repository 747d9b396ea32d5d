// The dedicated Worker of `durably/browser`: owns the database (SQLite on
// OPFS through the Rust store compiled to wasm) and does what the tokio loop
// does in Node, from timers: claims pending runs for the page, renews their
// leases, returns stale runs to pending. Job functions run in the page; it
// sends their writes here as the same tagged flush ops as in Node
// (lib/protocol.js). Messages: page → worker `{ id, op, args }`, answered by
// `{ id, ok: value }` or `{ id, error: { code, message } }`; worker → page
// `{ t: 'runs', text }` (claimed runs, JSON text), `{ t: 'lost', id, reason }`
// and `{ t: 'error', context, code, message }`. The decisions the native
// engine takes by policy (src/engine/policy.rs: free slots, whether to claim,
// a job timeout's message and outcome) come from the same Rust here.

import init, { installOpfs, BrowserStore, librarySchemaVersion, freeSlots, shouldClaim } from './durably_wasm.js'

let store = null
let cfg = null
let jobs = []
/** job name → its `timeout` in ms (jobs without one are absent) */
let timeouts = new Map()
let started = false
/** runs handed to the page and not yet released: id → { generation, timer } (timer: its job timeout) */
const inflight = new Map()
const timers = []
let claimScheduled = false

function fail(code, message) {
  const err = new Error(message)
  err.code = code
  return err
}

function report(context, err) {
  self.postMessage({ t: 'error', context, code: err?.code ?? 'INTERNAL', message: String(err?.message ?? err) })
}

function leases() {
  return JSON.stringify([...inflight].map(([id, f]) => [id, f.generation]))
}

/** Forgets a run in flight (and its timeout timer). */
function forget(id) {
  const f = inflight.get(id)
  if (f?.timer !== undefined) clearTimeout(f.timer)
  inflight.delete(id)
}

/**
 * Claims as many runs as there are free slots and hands them to the page.
 * `woken`: a trigger or a freed slot asked for it; otherwise the poll is due.
 */
function claimNow(woken = false) {
  if (woken) claimScheduled = false
  if (!started || !store || jobs.length === 0) return
  const free = freeSlots(cfg.maxConcurrentRuns, inflight.size, 0)
  if (!shouldClaim(woken, !woken, free)) return
  let text
  try {
    text = store.claim(free)
  } catch (err) {
    return report('claim', err)
  }
  if (text === '[]') return
  for (const r of JSON.parse(text)) {
    const timeout = timeouts.get(r.jobName)
    const f = { generation: r.leaseGeneration, timer: undefined }
    if (timeout !== undefined) f.timer = setTimeout(() => timedOut(r.id, f.generation, timeout), timeout)
    inflight.set(r.id, f)
  }
  self.postMessage({ t: 'runs', text })
}

/**
 * A run in flight passed its job's timeout: failed by a write fenced on its
 * lease generation (as the native worker does), its slot freed at once (the
 * page may be stuck in a step: its late writes are fenced), and the page told
 * (`timeout`, or `cancelled`/`lost` when the run was no longer ours).
 */
function timedOut(id, generation, timeout) {
  const f = inflight.get(id)
  if (!store || f?.generation !== generation) return
  let reason
  try {
    reason = store.failTimedOut(id, generation, timeout)
  } catch (err) {
    // Retried on the next heartbeat tick, like the native worker's timeout check.
    f.timer = setTimeout(() => timedOut(id, generation, timeout), cfg.heartbeatInterval)
    return report('timeout', err)
  }
  forget(id)
  self.postMessage({ t: 'lost', id, reason })
  wake()
}

function wake() {
  if (claimScheduled) return
  claimScheduled = true
  setTimeout(() => claimNow(true), 0)
}

function heartbeat() {
  if (!store || inflight.size === 0) return
  let lost
  try {
    lost = JSON.parse(store.heartbeat(leases()))
  } catch (err) {
    return report('heartbeat', err)
  }
  for (const [id, reason] of lost) {
    forget(id)
    self.postMessage({ t: 'lost', id, reason })
  }
  if (lost.length) wake()
}

function recover() {
  if (!store || jobs.length === 0) return
  try {
    if (store.recoverStale(cfg.staleThreshold, leases()) > 0) wake()
  } catch (err) {
    report('recover', err)
  }
}

/** Holds the database's Web Lock for the worker's life; resolves once held. */
function takeLock(name, waitMs) {
  return new Promise((resolve, reject) => {
    const signal = AbortSignal.timeout(waitMs)
    navigator.locks
      .request(name, { mode: 'exclusive', signal }, () => {
        resolve()
        return new Promise(() => {}) // held until this worker ends (its tab closes or reloads)
      })
      .catch((err) => {
        if (err?.name === 'TimeoutError' || err?.name === 'AbortError') {
          reject(
            fail(
              'DB_LOCKED',
              `the database '${cfg.path}' (OPFS directory '${cfg.directory}') is open in another tab ` +
                `(Web Lock '${name}' still held after ${waitMs} ms): one tab owns a durably directory at a time; ` +
                'close the other tab, or give this instance another `directory`',
            ),
          )
        } else reject(err)
      })
  })
}

// The wasm store answers in compact text (src/browser.rs); the page gets the
// shapes the Node addon's typed results have (see lib/protocol.js).

/** `c<id><createdAt>` | `i<run>` | `k<run>` → TriggerResult */
function triggerResult(r) {
  if (r[0] === 'c') return { kind: 'created', id: r.slice(1, 27), createdAt: r.slice(27) }
  return { kind: r[0] === 'i' ? 'idempotent' : 'coalesced', run: r.slice(1) }
}

const OP_RESULT = { 0: 'written', c: 'cancelled', l: 'lost', b: 'tooBig', e: 'failed' }

/** One status character per op, then (when an op failed) `\n[]\n[[index, code, message], …]` → FlushResult */
function flushResult(text) {
  const lines = text.split('\n')
  const statuses = [...lines[0]].map((c) => OP_RESULT[c])
  const errors = lines.length > 2 ? JSON.parse(lines[2]).map(([index, code, message]) => ({ index, code, message })) : null
  return { statuses, errors }
}

const ops = {
  async open(options) {
    cfg = options
    if (!self.isSecureContext) {
      throw fail('INSECURE_CONTEXT', 'durably/browser needs a secure context (https:// or http://localhost) for OPFS')
    }
    if (!navigator.storage?.getDirectory || !navigator.locks) {
      throw fail('UNSUPPORTED', 'durably/browser needs OPFS (navigator.storage.getDirectory) and Web Locks')
    }
    // The access handle pool of an OPFS directory has one owner: the lock is the directory's.
    await takeLock(`durably:opfs:${cfg.directory}`, cfg.lockTimeout)
    await init({ module_or_path: cfg.wasmUrl })
    await installOpfs(cfg.directory)
    store = new BrowserStore(cfg.path, cfg.synchronous)
    return { owner: store.owner(), schemaVersion: librarySchemaVersion() }
  },
  migrate: () => store.migrate(),
  /** `[[name, timeoutMs | null], …]` */
  setJobs(list) {
    jobs = list.map(([name]) => name)
    timeouts = new Map(list.filter(([, t]) => t != null).map(([name, t]) => [name, t]))
    store.setJobs(jobs)
  },
  start() {
    if (started) return
    started = true
    // This tab holds the database's Web Lock: no one else executes its runs,
    // so every running run (a reloaded or closed tab's) resumes now.
    const resumed = store.recoverStale(0, leases())
    timers.push(setInterval(() => claimNow(false), cfg.pollingInterval))
    timers.push(setInterval(heartbeat, cfg.heartbeatInterval))
    timers.push(setInterval(recover, Math.max(1000, Math.floor(cfg.staleThreshold / 2))))
    wake()
    return resumed
  },
  stop() {
    started = false
    for (const t of timers.splice(0)) clearInterval(t)
    for (const f of inflight.values()) if (f.timer !== undefined) clearTimeout(f.timer)
  },
  wake,
  release(id, generation) {
    if (inflight.get(id)?.generation === generation) forget(id)
    wake()
  },
  trigger: (job, input, idem, conc, coalesce, labels) => triggerResult(store.trigger(job, input, idem, conc, coalesce, labels)),
  flush: (text) => flushResult(store.flush(text)),
  getRun: (id) => store.getRun(id) ?? null,
  getRuns: (filter) => store.getRuns(filter),
  getSteps: (id) => store.getSteps(id),
  getLogs: (id) => store.getLogs(id),
  runCounts: () => store.runCounts(),
  cancel(id) {
    const { previous, run } = JSON.parse(store.cancel(id))
    return { previous, run: JSON.stringify(run) }
  },
  retry: (id) => store.retry(id),
  deleteRun: (id) => store.deleteRun(id),
  purge: (olderThan, limit) => store.purge(olderThan, limit),
  integrityCheck: () => store.integrityCheck(),
  close() {
    ops.stop()
    if (store) store.free()
    store = null
  },
}

// One message at a time, in order: `open` is asynchronous, and everything
// after it must wait for the database.
let queue = Promise.resolve()
self.onmessage = (e) => {
  queue = queue.then(() => handle(e.data))
}

async function handle({ id, op, args }) {
  try {
    const fn = ops[op]
    if (!fn) throw fail('VALIDATION_ERROR', `unknown worker op '${op}'`)
    if (op !== 'open' && !store) throw fail('CLOSED', 'durably instance is closed')
    const value = await fn(...(args ?? []))
    self.postMessage({ id, ok: value })
  } catch (err) {
    self.postMessage({ id, error: { code: err?.code ?? 'INTERNAL', message: String(err?.message ?? err) } })
  }
}
