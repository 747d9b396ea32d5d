'use strict'
// Request parsing for the HTTP handler: bodies (size, UTF-8, JSON, depth),
// trigger requests, query filters, and matching runs/events against a scope.

const { STATUSES } = require('./status')
const TRIGGER_FIELDS = new Set(['jobName', 'input', 'idempotencyKey', 'concurrencyKey', 'coalesce', 'labels'])
// GET /runs pages: a browser never pulls the whole table by accident.
const DEFAULT_LIMIT = 100
const MAX_LIMIT = 1000
// Deeper JSON than this is refused before it reaches validators and encoders that recurse.
const MAX_DEPTH = 512

/** A client error with its status; answered as JSON `{ error }`. */
class HttpError extends Error {
  constructor(status, message, headers) {
    super(message)
    this.status = status
    this.headers = headers
  }
}

async function readBody(request, limit) {
  const declared = request.headers.get('content-length')
  if (declared !== null && /^\d+$/.test(declared) && Number(declared) > limit) {
    throw new HttpError(413, `request body is larger than ${limit} bytes`)
  }
  if (!request.body) return ''
  const chunks = []
  let size = 0
  let reader
  try {
    reader = request.body.getReader()
    for (;;) {
      const { value, done } = await reader.read()
      if (done) break
      size += value.byteLength
      if (size > limit) {
        reader.cancel().catch(() => {})
        throw new HttpError(413, `request body is larger than ${limit} bytes`)
      }
      chunks.push(value)
    }
  } catch (err) {
    if (err instanceof HttpError) throw err
    throw new HttpError(400, 'could not read the request body')
  }
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(Buffer.concat(chunks))
  } catch {
    throw new HttpError(400, 'request body is not valid UTF-8')
  }
}

function checkDepth(value) {
  const stack = [[value, 1]]
  while (stack.length) {
    const [v, d] = stack.pop()
    if (v === null || typeof v !== 'object') continue
    if (d > MAX_DEPTH) throw new HttpError(400, `request body is nested deeper than ${MAX_DEPTH} levels`)
    for (const x of Array.isArray(v) ? v : Object.values(v)) if (x !== null && typeof x === 'object') stack.push([x, d + 1])
  }
}

async function readJsonObject(request, limit) {
  const text = await readBody(request, limit)
  let body
  try {
    body = JSON.parse(text)
  } catch {
    throw new HttpError(400, 'request body must be valid JSON')
  }
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new HttpError(400, 'request body must be a JSON object')
  }
  checkDepth(body)
  return body
}

/**
 * The runId of POST /retry|/retrigger|/cancel: from the query (`?runId=`)
 * or a JSON body `{ "runId": … }`; both may be given only if they agree.
 */
async function actionRunId(request, params, limit) {
  const fromQuery = oneParam(params, 'runId', false)
  const text = await readBody(request, limit)
  let fromBody
  if (text.trim() !== '') {
    let body
    try {
      body = JSON.parse(text)
    } catch {
      throw new HttpError(400, 'request body must be valid JSON')
    }
    if (!isObject(body)) throw new HttpError(400, 'request body must be a JSON object { "runId": … }')
    for (const k of Object.keys(body)) {
      if (k !== 'runId') throw new HttpError(400, `unknown field ${JSON.stringify(k)} in request body (known: runId)`)
    }
    if (body.runId !== undefined) {
      if (typeof body.runId !== 'string' || body.runId === '') throw new HttpError(400, 'runId must be a non-empty string')
      fromBody = body.runId
    }
  }
  if (fromQuery !== undefined && fromBody !== undefined && fromQuery !== fromBody) {
    throw new HttpError(400, 'runId given in both the query and the body, with different values')
  }
  const runId = fromQuery ?? fromBody
  if (runId === undefined) throw new HttpError(400, 'runId is required (query parameter or JSON body)')
  return runId
}

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v)

/** Validates a trigger request; returns a fresh copy a hook may change. */
function checkTriggerRequest(body) {
  if (!isObject(body)) throw new HttpError(400, 'trigger request must be an object')
  for (const k of Object.keys(body)) {
    if (!TRIGGER_FIELDS.has(k)) throw new HttpError(400, `unknown field ${JSON.stringify(k)} in trigger request`)
  }
  const { jobName, input, idempotencyKey, concurrencyKey, coalesce, labels } = body
  if (jobName === undefined || jobName === null || jobName === '') throw new HttpError(400, 'jobName is required')
  if (typeof jobName !== 'string') throw new HttpError(400, 'jobName must be a string')
  const out = { jobName, input }
  for (const [k, v] of [['idempotencyKey', idempotencyKey], ['concurrencyKey', concurrencyKey]]) {
    if (v === undefined || v === null) continue
    if (typeof v !== 'string') throw new HttpError(400, `${k} must be a string`)
    out[k] = v
  }
  if (coalesce !== undefined && coalesce !== null) {
    if (coalesce !== 'skip') throw new HttpError(400, "coalesce must be 'skip'")
    out.coalesce = coalesce
  }
  if (labels !== undefined && labels !== null) {
    if (!isObject(labels)) throw new HttpError(400, 'labels must be an object of strings')
    for (const [k, v] of Object.entries(labels)) {
      if (typeof v !== 'string') throw new HttpError(400, `label ${JSON.stringify(k)} must be a string`)
    }
    out.labels = Object.fromEntries(Object.entries(labels))
  }
  return out
}

function oneParam(params, name, required) {
  const all = params.getAll(name)
  if (all.length > 1) throw new HttpError(400, `${name} query parameter given more than once`)
  if (all.length === 0 || all[0] === '') {
    if (required) throw new HttpError(400, `${name} query parameter is required`)
    return undefined
  }
  return all[0]
}

function intParam(params, name) {
  const v = oneParam(params, name, false)
  if (v === undefined) return undefined
  if (!/^\d{1,16}$/.test(v) || Number(v) > Number.MAX_SAFE_INTEGER) {
    throw new HttpError(400, `invalid ${name}: must be a non-negative integer`)
  }
  return Number(v)
}

/** `jobName` (repeatable) and `label.<key>=<value>` filters. */
function subscribeFilter(params) {
  const filter = {}
  const jobNames = params.getAll('jobName')
  if (jobNames.some((j) => j === '')) throw new HttpError(400, 'jobName must not be empty')
  if (jobNames.length) filter.jobName = jobNames.length === 1 ? jobNames[0] : jobNames
  const labels = []
  const seen = new Set()
  for (const [k, v] of params) {
    if (!k.startsWith('label.')) continue
    const key = k.slice(6)
    if (key === '') throw new HttpError(400, 'label filter needs a key: label.<key>=<value>')
    if (seen.has(key)) throw new HttpError(400, `label.${key} given more than once`)
    seen.add(key)
    labels.push([key, v])
  }
  if (labels.length) filter.labels = Object.fromEntries(labels)
  return filter
}

function runsFilter(params) {
  const filter = subscribeFilter(params)
  const statuses = params.getAll('status').flatMap((s) => s.split(','))
  for (const s of statuses) {
    if (!STATUSES.includes(s)) {
      throw new HttpError(400, `invalid status ${JSON.stringify(s)}: must be one of ${STATUSES.join(', ')}`)
    }
  }
  if (statuses.length) filter.status = statuses.length === 1 ? statuses[0] : statuses
  const limit = intParam(params, 'limit')
  if (limit !== undefined && limit > MAX_LIMIT) throw new HttpError(400, `invalid limit: at most ${MAX_LIMIT}`)
  filter.limit = limit ?? DEFAULT_LIMIT
  const offset = intParam(params, 'offset')
  if (offset !== undefined) filter.offset = offset
  return filter
}

/** Whether `run` is one that `getRuns(filter)` could return (paging aside). */
function runMatches(run, filter) {
  if (filter === null || typeof filter !== 'object') return true
  const inList = (want, v) => want === undefined || (Array.isArray(want) ? want.includes(v) : want === v)
  if (!inList(filter.jobName, run.jobName) || !inList(filter.status, run.status)) return false
  return eventMatches(run, filter)
}

function eventMatches(e, filter) {
  if (filter === null || typeof filter !== 'object') return true
  const { jobName, labels } = filter
  if (jobName !== undefined && !(Array.isArray(jobName) ? jobName.includes(e.jobName) : jobName === e.jobName)) {
    return false
  }
  if (labels !== null && typeof labels === 'object') {
    const have = e.labels || {}
    for (const [k, v] of Object.entries(labels)) if (!Object.hasOwn(have, k) || have[k] !== v) return false
  }
  return true
}

module.exports = {
  HttpError,
  readJsonObject,
  actionRunId,
  checkTriggerRequest,
  oneParam,
  subscribeFilter,
  runsFilter,
  runMatches,
  eventMatches,
}
