'use strict'
// Validation of the public API's arguments and options (run ids, labels,
// trigger and stop options, getRuns filters), and the stats tally. Each
// failure is a ValidationError naming what is wrong.

const { ValidationError } = require('./errors')
const { STATUSES, isStatus } = require('./status')
const { checkKey } = require('./job')

const TRIGGER_KEYS = new Set(['idempotencyKey', 'concurrencyKey', 'coalesce', 'labels'])
const FILTER_KEYS = new Set(['status', 'jobName', 'labels', 'limit', 'offset'])

function checkId(id) {
  if (typeof id !== 'string' || id.length === 0 || id.length > 200) {
    throw new ValidationError(`run id must be a non-empty string (got ${JSON.stringify(id)})`)
  }
  return id
}

function checkLabels(labels) {
  if (labels === undefined) return '{}'
  if (labels === null || typeof labels !== 'object' || Array.isArray(labels)) {
    throw new ValidationError('labels must be an object of string values')
  }
  for (const [k, v] of Object.entries(labels)) {
    if (typeof v !== 'string') throw new ValidationError(`label ${JSON.stringify(k)} must be a string`)
    if (!k.isWellFormed() || !v.isWellFormed() || k.includes('\0') || v.includes('\0')) {
      throw new ValidationError(`label ${JSON.stringify(k)} must not contain NUL or unpaired surrogates`)
    }
  }
  return JSON.stringify(labels)
}

function checkStopOptions(what, options) {
  if (options === undefined || options === null) return { abort: false, timeout: undefined }
  if (typeof options !== 'object' || Array.isArray(options)) {
    throw new ValidationError(`${what}(): options must be an object { abort?, timeout? }`)
  }
  for (const k of Object.keys(options)) {
    if (k !== 'abort' && k !== 'timeout') throw new ValidationError(`${what}(): unknown option ${k} (known: abort, timeout)`)
  }
  const { abort, timeout } = options
  if (abort !== undefined && typeof abort !== 'boolean') {
    throw new ValidationError(`${what}(): option abort must be a boolean (got ${typeof abort})`)
  }
  if (timeout !== undefined && (!Number.isInteger(timeout) || timeout < 0 || timeout > 2 ** 31 - 1)) {
    throw new ValidationError(`${what}(): option timeout must be an integer number of ms from 0 to ${2 ** 31 - 1}`)
  }
  return { abort: abort === true, timeout }
}

const WAIT_KEYS = ['timeout', 'onProgress', 'onLog']

/**
 * waitForRun's options; `what` names the call. triggerAndWait's options
 * also hold trigger's (checked there), so it passes `exact` false.
 */
function checkWaitOptions(options, what = 'waitForRun', exact = true) {
  if (options === undefined || options === null) return
  if (typeof options !== 'object') throw new ValidationError(`${what}: options must be an object`)
  if (exact) {
    for (const k of Object.keys(options)) {
      if (!WAIT_KEYS.includes(k)) throw new ValidationError(`${what}: unknown option ${k} (known: ${WAIT_KEYS.join(', ')})`)
    }
  }
  const { timeout, onProgress, onLog } = options
  // (a longer timer would fire at once: setTimeout's limit)
  if (timeout !== undefined && (!Number.isInteger(timeout) || timeout < 0 || timeout > 2 ** 31 - 1)) {
    throw new ValidationError(`${what}: timeout must be an integer number of ms from 0 to ${2 ** 31 - 1}`)
  }
  for (const [k, f] of [['onProgress', onProgress], ['onLog', onLog]]) {
    if (f !== undefined && typeof f !== 'function') {
      throw new ValidationError(`${what}: ${k} must be a function (got ${f === null ? 'null' : typeof f})`)
    }
  }
}

function checkTriggerOptions(options) {
  if (options === undefined || options === null) {
    return { idem: null, conc: null, coalesce: false, labels: '{}', labelsValue: {} }
  }
  if (typeof options !== 'object') throw new ValidationError('trigger options must be an object')
  for (const k of Object.keys(options)) {
    if (!TRIGGER_KEYS.has(k)) throw new ValidationError(`unknown trigger option ${k}`)
  }
  const { idempotencyKey, concurrencyKey, coalesce, labels } = options
  if (idempotencyKey !== undefined) checkKey('idempotencyKey', idempotencyKey)
  if (concurrencyKey !== undefined) checkKey('concurrencyKey', concurrencyKey)
  if (coalesce !== undefined && coalesce !== 'skip') {
    throw new ValidationError(`trigger option coalesce must be 'skip' (got ${JSON.stringify(coalesce)})`)
  }
  if (coalesce && concurrencyKey === undefined) {
    throw new ValidationError("trigger option coalesce: 'skip' needs a concurrencyKey")
  }
  const text = checkLabels(labels)
  return {
    idem: idempotencyKey ?? null,
    conc: concurrencyKey ?? null,
    coalesce: coalesce === 'skip',
    labels: text,
    labelsValue: labels === undefined ? {} : JSON.parse(text),
  }
}

function oneOrMany(v, check) {
  const list = Array.isArray(v) ? v : [v]
  for (const x of list) check(x)
  return list
}

function checkFilter(filter) {
  if (filter === undefined || filter === null) return {}
  if (typeof filter !== 'object' || Array.isArray(filter)) throw new ValidationError('getRuns filter must be an object')
  const out = {}
  for (const [k, v] of Object.entries(filter)) {
    if (!FILTER_KEYS.has(k)) throw new ValidationError(`unknown getRuns filter field ${k}`)
    if (v === undefined) continue
    // An empty list means no filter (not "match nothing").
    if ((k === 'status' || k === 'jobName') && Array.isArray(v) && v.length === 0) continue
    if (k === 'status') {
      out.status = oneOrMany(v, (s) => {
        if (!isStatus(s)) {
          throw new ValidationError(`unknown status ${JSON.stringify(s)} in getRuns filter`)
        }
      })
    } else if (k === 'jobName') {
      out.jobName = oneOrMany(v, (s) => {
        if (typeof s !== 'string' || !s.isWellFormed()) {
          throw new ValidationError('getRuns filter jobName must be a string or strings')
        }
      })
    } else if (k === 'labels') {
      JSON.parse(checkLabels(v))
      out.labels = v
    } else {
      if (!Number.isInteger(v) || v < 0) throw new ValidationError(`getRuns filter ${k} must be a non-negative integer`)
      out[k] = v
    }
  }
  return out
}

const zeroCounts = () => Object.fromEntries([['total', 0], ...STATUSES.map((st) => [st, 0])])

/** `[{ jobName, status, count }]` → `{ total, byStatus, byJob }` (every status present, 0 when none). */
function tallyStats(rows) {
  const byStatus = zeroCounts()
  const byJob = {}
  for (const { jobName, status, count } of rows) {
    const job = byJob[jobName] ?? (byJob[jobName] = zeroCounts())
    job[status] = (job[status] ?? 0) + count
    job.total += count
    byStatus[status] = (byStatus[status] ?? 0) + count
    byStatus.total += count
  }
  const { total, ...statuses } = byStatus
  return { total, byStatus: statuses, byJob }
}

module.exports = {
  checkId,
  checkLabels,
  checkStopOptions,
  checkWaitOptions,
  checkTriggerOptions,
  checkFilter,
  tallyStats,
}
