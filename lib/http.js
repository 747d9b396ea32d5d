'use strict'
// HTTP handler over the public Durably API: web Request → Response routes,
// SSE streams of run events, and auth hooks that scope every route.

const { DurablyError, ValidationError } = require('./errors')
const { randomBytes } = require('node:crypto')
const { SseChannel, stringify } = require('./http-sse')
const { RunFeed, Feeds, resumeCursor } = require('./http-resume')
const { COMPAT_MODES, NO_RECONNECT, compatParams, compatRun, compatEvent, replayOf } = require('./http-compat')
const { toNodeHandler, normalizeBase, routePath } = require('./http-node')
const { checkUiOption, isReadOnly, uiResponse } = require('./ui/serve')
const { tallyStats } = require('./checks')
const {
  HttpError,
  readJsonObject,
  actionRunId,
  checkTriggerRequest,
  oneParam,
  subscribeFilter,
  runsFilter,
  runMatches,
  eventMatches,
} = require('./http-request')

const { TERMINAL } = require('./status')
const { pick, CLIENT_RUN_FIELDS } = require('./records')
const OPTION_KEYS = new Set(['auth', 'onRequest', 'sseThrottleMs', 'maxBodyBytes', 'onError', 'ui', 'sseResumeMs', 'compat'])
const AUTH_HOOKS = new Set(['authenticate', 'onTrigger', 'onRunAccess', 'scopeRuns', 'scopeRunsSubscribe'])
const STATUS_BY_CODE = { VALIDATION_ERROR: 400, NOT_FOUND: 404, CONFLICT: 409, DB_BUSY: 503, CLOSED: 503 }
const JSON_HEADERS = { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' }

// What a read-only dashboard refuses (403), whoever calls.
const MUTATING = new Set(['POST /trigger', 'POST /retry', 'POST /retrigger', 'POST /cancel', 'DELETE /run'])
// Runs counted per page when scoped stats must go through getRuns.
const STATS_PAGE = 1000

const notFound = () => new HttpError(404, 'Run not found')

function json(body, status = 200, extraHeaders) {
  const text = stringify(body)
  return new Response(text, {
    status,
    headers: { ...JSON_HEADERS, 'content-length': String(Buffer.byteLength(text)), ...extraHeaders },
  })
}

/** A web Response, also one from another realm or polyfill. */
function isResponse(v) {
  if (v instanceof Response) return true
  return v !== null && typeof v === 'object' && typeof v.status === 'number' && !!v.headers && typeof v.arrayBuffer === 'function'
}

/** The run as a browser may see it: no keys, no stack trace, plus isTerminal/isActive. */
function toClientRun(run) {
  if (!run) return null
  const out = pick(run, CLIENT_RUN_FIELDS)
  out.isTerminal = TERMINAL.has(run.status)
  out.isActive = !out.isTerminal
  return out
}

function toClientLog(l) {
  return {
    id: l.id,
    runId: l.runId,
    stepName: l.stepName,
    level: l.level,
    message: l.message,
    data: l.data,
    timestamp: l.timestamp,
  }
}

function toClientStep(s) {
  return {
    id: s.id,
    runId: s.runId,
    name: s.name,
    index: s.index,
    status: s.status,
    output: s.output,
    error: s.error,
    startedAt: s.startedAt,
    completedAt: s.completedAt,
  }
}

/** Full event for `/subscribe` (snapshot run in client shape, no stacks). */
function toClientEvent(e) {
  if (e.type === 'run:snapshot') return { ...e, run: toClientRun(e.run) }
  if ('errorStack' in e) {
    const { errorStack, ...rest } = e
    return rest
  }
  return e
}

/** Slim event for `/runs/subscribe`: what a run list needs, no inputs/outputs. */
function toSlimEvent(e) {
  const out = { type: e.type, runId: e.runId, jobName: e.jobName, labels: e.labels, timestamp: e.timestamp }
  switch (e.type) {
    case 'run:coalesced':
      out.skippedInput = e.skippedInput
      out.skippedLabels = e.skippedLabels
      break
    case 'run:start':
      out.attempt = e.attempt
      break
    case 'run:progress':
      out.progress = e.progress
      break
    case 'run:fail':
      out.error = e.error
      out.failedStepName = e.failedStepName
      break
    case 'step:start':
    case 'step:complete':
    case 'step:cancel':
    case 'step:fail':
      out.stepName = e.stepName
      out.stepIndex = e.stepIndex
      if (e.type === 'step:fail') out.error = e.error
      break
    case 'log:write':
      out.stepName = e.stepName
      out.level = e.level
      out.message = e.message
      out.data = e.data
      break
  }
  return out
}

// ---- options ------------------------------------------------------------------------

function checkOptions(durably, options) {
  if (!durably || typeof durably.getRun !== 'function' || typeof durably.getJob !== 'function') {
    throw new ValidationError('createDurablyHandler(durably, options): durably must be a Durably instance')
  }
  const o = options ?? {}
  if (typeof o !== 'object') throw new ValidationError('createDurablyHandler: options must be an object')
  for (const k of Object.keys(o)) {
    if (!OPTION_KEYS.has(k)) throw new ValidationError(`createDurablyHandler: unknown option ${k}`)
  }
  const { auth, onRequest, onError, sseThrottleMs = 100, maxBodyBytes = 1024 * 1024, sseResumeMs = 30_000, compat } = o
  if (auth !== undefined) {
    if (auth === null || typeof auth !== 'object') throw new ValidationError('createDurablyHandler: auth must be an object of hooks')
    for (const [k, v] of Object.entries(auth)) {
      // A misspelt scoping hook would silently leave runs unscoped: refuse it.
      if (!AUTH_HOOKS.has(k)) throw new ValidationError(`createDurablyHandler: unknown auth hook ${k}`)
      if (v !== undefined && typeof v !== 'function') throw new ValidationError(`createDurablyHandler: auth.${k} must be a function`)
    }
    if (typeof auth.authenticate !== 'function') {
      throw new ValidationError('createDurablyHandler: auth.authenticate(request) is required when auth is given')
    }
  }
  for (const [k, v] of [['onRequest', onRequest], ['onError', onError]]) {
    if (v !== undefined && typeof v !== 'function') throw new ValidationError(`createDurablyHandler: ${k} must be a function`)
  }
  if (typeof sseThrottleMs !== 'number' || !Number.isFinite(sseThrottleMs) || sseThrottleMs < 0) {
    throw new ValidationError('createDurablyHandler: sseThrottleMs must be a non-negative number of ms')
  }
  if (!Number.isInteger(maxBodyBytes) || maxBodyBytes < 1) {
    throw new ValidationError('createDurablyHandler: maxBodyBytes must be a positive integer')
  }
  if (typeof sseResumeMs !== 'number' || !Number.isFinite(sseResumeMs) || sseResumeMs < 0) {
    throw new ValidationError('createDurablyHandler: sseResumeMs must be a non-negative number of ms')
  }
  if (compat !== undefined && !COMPAT_MODES.has(compat)) {
    throw new ValidationError(`createDurablyHandler: compat must be one of ${[...COMPAT_MODES].map((m) => `'${m}'`).join(', ')}`)
  }
  return { auth, onRequest, onError, sseThrottleMs, maxBodyBytes, ui: checkUiOption(o.ui), sseResumeMs, compat }
}

// ---- the handler --------------------------------------------------------------------

/**
 * Creates `{ handle(request, basePath) }` serving durably over web
 * Request/Response (see notes/http-readme.md for routes and hooks).
 */
function createDurablyHandler(durably, options) {
  const { auth, onRequest, onError, sseThrottleMs, maxBodyBytes, ui, sseResumeMs, compat } = checkOptions(durably, options)
  // Names this handler's event ids, so a resume cursor from another process
  // (or an earlier one) is never taken for one of ours.
  const epoch = randomBytes(4).toString('hex')
  const idOf = (e) => (typeof e.sequence === 'number' ? `${epoch}.${e.sequence}` : null)
  const feeds = new Feeds(sseResumeMs)
  const upstream = compat === 'upstream-0.15'
  const clientRun = upstream ? (r) => compatRun(toClientRun(r)) : toClientRun
  const clientEvent = upstream ? (e) => compatEvent(toClientEvent(e)) : toClientEvent
  const slimEvent = upstream ? (e) => compatEvent(toSlimEvent(e)) : toSlimEvent
  /** Upstream names jobs by their register key: accept a key where no job has that name. */
  const jobNameOf = (name) => {
    if (!upstream || durably.getJob(name)) return name
    const handle = Object.hasOwn(durably.jobs, name) ? durably.jobs[name] : undefined
    return handle && typeof handle.name === 'string' ? handle.name : name
  }

  const onAny = (fn) =>
    typeof durably._events?.onAny === 'function'
      ? durably._events.onAny(fn)
      : (() => {
          const offs = require('./events').EVENT_TYPES.map((t) => durably.on(t, fn))
          return () => offs.forEach((off) => off())
        })()

  /** Per-request state: the auth context and the memoized scope filter. */
  class Call {
    constructor(request, url, ctx) {
      this.request = request
      this.url = url
      this.params = upstream ? compatParams(url.searchParams, jobNameOf) : url.searchParams
      this.ctx = ctx
      this.scope = undefined
    }

    /** The filter every single-run route checks runs against. */
    async runScope() {
      if (this.scope === undefined) {
        const hook = auth && (auth.scopeRuns || auth.scopeRunsSubscribe)
        this.scope = hook ? ((await hook(this.ctx, {})) ?? null) : null
      }
      return this.scope
    }

    async visible(run) {
      return runMatches(run, await this.runScope())
    }

    /** Scope check (out of scope = not found), then onRunAccess. */
    async allow(run, operation) {
      if (!run || !(await this.visible(run))) throw notFound()
      if (auth && auth.onRunAccess) {
        const ok = await auth.onRunAccess(this.ctx, run, { operation })
        if (ok === false) throw notFound()
      }
      return run
    }

    async run(operation) {
      const runId = oneParam(this.params, 'runId', true)
      return this.allow(await durably.getRun(runId), operation)
    }

    /** The run of a POST action: runId from the query or a JSON body. */
    async actionRun(operation) {
      const runId = await actionRunId(this.request, this.params, maxBodyBytes)
      return this.allow(await durably.getRun(runId), operation)
    }
  }

  const routes = new Map([
    ['/trigger', new Map([['POST', trigger]])],
    ['/runs', new Map([['GET', listRuns]])],
    ['/run', new Map([['GET', getRun], ['DELETE', deleteRun]])],
    ['/steps', new Map([['GET', getSteps]])],
    ['/logs', new Map([['GET', getLogs]])],
    ['/jobs', new Map([['GET', listJobs]])],
    ['/stats', new Map([['GET', stats]])],
    ['/subscribe', new Map([['GET', subscribeRun]])],
    ['/runs/subscribe', new Map([['GET', subscribeRuns]])],
    ['/retry', new Map([['POST', retry]])],
    ['/retrigger', new Map([['POST', retrigger]])],
    ['/cancel', new Map([['POST', cancel]])],
  ])

  async function trigger(call) {
    let req = checkTriggerRequest(await readJsonObject(call.request, maxBodyBytes))
    req.jobName = jobNameOf(req.jobName)
    const unknownJob = (name) => new HttpError(400, `unknown job ${JSON.stringify(name)}`)
    if (!durably.getJob(req.jobName)) throw unknownJob(req.jobName)
    if (auth && auth.onTrigger) {
      const replaced = await auth.onTrigger(call.ctx, req)
      req = checkTriggerRequest(replaced ?? req)
    }
    const job = durably.getJob(req.jobName)
    if (!job) throw unknownJob(req.jobName)
    const { jobName, input, ...triggerOptions } = req
    const run = await job.trigger(input, triggerOptions)
    if (run.disposition !== 'created') {
      // An existing run came back (idempotency key / coalesce): only say which
      // one if this client may see it.
      if (!(await call.visible(run))) {
        throw new HttpError(409, 'a run with this idempotency or concurrency key exists outside your scope')
      }
      await call.allow(run, 'read')
    }
    return json({ runId: run.id, disposition: run.disposition })
  }

  async function listRuns(call) {
    let filter = runsFilter(call.params)
    if (auth && auth.scopeRuns) filter = (await auth.scopeRuns(call.ctx, filter)) ?? filter
    const runs = await durably.getRuns(filter)
    return json(runs.map(clientRun))
  }

  async function getRun(call) {
    return json(clientRun(await call.run('read')))
  }

  async function getSteps(call) {
    const run = await call.run('steps')
    const steps = await durably.getSteps(run.id)
    return json(steps.map(toClientStep))
  }

  async function getLogs(call) {
    const run = await call.run('logs')
    const logs = await durably.getLogs(run.id)
    return json(logs.map(toClientLog))
  }

  /** Counts per status and job, of the runs this caller may see. */
  async function countRuns(call) {
    if (!(auth && auth.scopeRuns)) return durably.getStats()
    // A scope is a getRuns filter: count through it, a page at a time.
    const scope = (await auth.scopeRuns(call.ctx, {})) ?? {}
    const counts = new Map()
    for (let offset = 0; ; offset += STATS_PAGE) {
      const page = await durably.getRuns({ ...scope, limit: STATS_PAGE, offset })
      for (const r of page) {
        const k = `${r.status}\0${r.jobName}`
        counts.set(k, (counts.get(k) ?? 0) + 1)
      }
      if (page.length < STATS_PAGE) break
    }
    return tallyStats(
      [...counts].map(([k, count]) => {
        const [status, jobName] = k.split('\0')
        return { jobName, status, count }
      }),
    )
  }

  async function stats(call) {
    return json(await countRuns(call))
  }

  /** Registered jobs and jobs that have runs (maybe run by other processes). */
  async function listJobs(call) {
    const registered = new Set(Object.values(durably.jobs ?? {}).map((h) => h.name))
    const names = new Set([...registered, ...Object.keys((await countRuns(call)).byJob)])
    return json([...names].sort().map((name) => ({ name, registered: registered.has(name) })))
  }

  async function retry(call) {
    const run = await call.actionRun('retry')
    await durably.retry(run.id)
    return json({ success: true, runId: run.id })
  }

  async function retrigger(call) {
    const run = await call.actionRun('retrigger')
    const created = await durably.retrigger(run.id)
    return json({ success: true, runId: created.id })
  }

  async function cancel(call) {
    const run = await call.actionRun('cancel')
    await durably.cancel(run.id)
    return json({ success: true })
  }

  async function deleteRun(call) {
    const run = await call.run('delete')
    await durably.deleteRun(run.id)
    return json({ success: true })
  }

  /** Prepares a run event for the stream (compat adds upstream's replay after the snapshot). */
  function prepareRunEvent(e, replaying) {
    const out = [clientEvent(e)]
    if (upstream && e.type === 'run:snapshot' && (replaying || out[0].run === null || out[0].run.isTerminal)) {
      out.push(...replayOf(out[0]))
    }
    return out
  }

  function endRunChannel(channel) {
    // EventSource reconnects to a stream that ends; upstream's hooks rely on that not happening.
    if (upstream) {
      channel.throttle.flushAll()
      channel.field(NO_RECONNECT)
    }
    channel.end(true)
  }

  async function subscribeRun(call) {
    const runId = oneParam(call.params, 'runId', true)
    const cursor = resumeCursor(call.params, call.request.headers)
    if (cursor && (cursor.epoch === null || cursor.epoch === epoch)) {
      // A client resuming: the stream it lost is kept with every event since.
      const feed = feeds.find(runId, cursor.sequence)
      if (feed) {
        await call.allow(feed.run, 'subscribe')
        const channel = new SseChannel(call.request, sseThrottleMs, idOf)
        feed.attach(channel, cursor.sequence)
        return channel.response()
      }
    }
    // The snapshot is read before answering: an unknown run gets a 404, and
    // access is checked on the very state the stream starts from.
    const reader = durably.subscribe(runId).getReader()
    let first
    try {
      first = await reader.read()
      if (first.done || !first.value || !first.value.run) throw notFound()
      await call.allow(first.value.run, 'subscribe')
    } catch (err) {
      reader.cancel().catch(() => {})
      throw err instanceof DurablyError && err.code === 'NOT_FOUND' ? notFound() : err
    }
    const channel = new SseChannel(call.request, sseThrottleMs, idOf)
    const feed = new RunFeed(reader, first.value, { feeds, end: endRunChannel, prepare: prepareRunEvent })
    feed.attach(channel, null)
    return channel.response()
  }

  async function subscribeRuns(call) {
    let filter = subscribeFilter(call.params)
    const hook = auth && (auth.scopeRunsSubscribe || auth.scopeRuns)
    if (hook) filter = (await hook(call.ctx, filter)) ?? filter
    if (filter !== null && typeof filter !== 'object') throw new TypeError('scopeRunsSubscribe must return a filter object')
    const channel = new SseChannel(call.request, sseThrottleMs)
    const off = onAny((e) => {
      if (!e.runId || e.type === 'worker:error' || !eventMatches(e, filter)) return
      channel.send(slimEvent(e))
    })
    channel.onEnd(off)
    return channel.response()
  }

  function errorResponse(err, request) {
    if (isResponse(err)) return err
    if (err instanceof HttpError) return json({ error: err.message }, err.status, err.headers)
    if (err instanceof DurablyError && STATUS_BY_CODE[err.code]) {
      return json({ error: err.message }, STATUS_BY_CODE[err.code])
    }
    // Hooks may throw framework errors carrying an HTTP status (e.g. Hono's HTTPException).
    const status = err && (err.status ?? err.statusCode)
    if (Number.isInteger(status) && status >= 400 && status <= 599) {
      return json({ error: String(err.message || 'error') }, status)
    }
    try {
      if (onError) onError(err, request)
      else console.error('[durably] http handler error:', err)
    } catch {
      // a failing reporter must not fail the answer
    }
    return json({ error: 'internal error' }, 500)
  }

  async function dispatch(request, basePath) {
    const url = new URL(request.url)
    const path = routePath(url.pathname, normalizeBase(basePath))
    if (path === null) return json({ error: 'Not found' }, 404)
    const ctx = auth ? await auth.authenticate(request) : undefined
    if (onRequest) {
      const r = await onRequest(request, ctx)
      if (isResponse(r)) return r
    }
    const readOnly = await isReadOnly(ui, ctx, request)
    if (ui && (path === '/ui' || path.startsWith('/ui/'))) {
      return uiResponse(ui, path, normalizeBase(basePath), readOnly, request.method) ?? json({ error: 'Not found' }, 404)
    }
    if (readOnly && MUTATING.has(`${request.method} ${path}`)) {
      return json({ error: 'this dashboard is read-only' }, 403)
    }
    const route = routes.get(path)
    if (!route) return json({ error: 'Not found' }, 404)
    const fn = route.get(request.method)
    if (!fn) {
      const allow = [...route.keys()].join(', ')
      return json({ error: `method ${request.method} not allowed on ${path} (allowed: ${allow})` }, 405, { allow })
    }
    return fn(new Call(request, url, ctx))
  }

  return {
    /** Answers one request; never rejects. `basePath` is the mount point ('' for none). */
    async handle(request, basePath = '') {
      try {
        return await dispatch(request, basePath)
      } catch (err) {
        try {
          return errorResponse(err, request)
        } catch {
          return new Response('{"error":"internal error"}', { status: 500, headers: JSON_HEADERS })
        }
      }
    },
  }
}

module.exports = { createDurablyHandler, toNodeHandler, toClientRun }
