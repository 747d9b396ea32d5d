'use strict'
// createDurably options: defaults, and a ValidationError naming the option
// for anything wrong.

const { inspect } = require('node:util')
const { ValidationError } = require('./errors')
const { isSchema } = require('./schema')
const { resolveBackend } = require('./backend')

const DEFAULTS = {
  path: 'durably.db',
  url: undefined,
  schema: undefined,
  pollingInterval: 1000,
  heartbeatInterval: 5000,
  staleThreshold: 30000,
  maxConcurrentRuns: 1,
  synchronous: 'normal',
  busyTimeout: 5000,
  maxValueBytes: 64 * 1024 * 1024,
  retainRuns: undefined,
  labels: undefined,
  jobs: undefined,
}

const MAX_MS = 2 ** 31 - 1

/**
 * A bad value as an error message shows it: strings quoted ('500'), so a
 * string is told apart from a number (500); other values as Node prints them.
 */
function describeValue(v) {
  return inspect(v, { depth: 1, maxArrayLength: 5, maxStringLength: 100, breakLength: Infinity })
}

function positiveInt(name, v, { min = 1, max = MAX_MS } = {}) {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw new ValidationError(`option ${name} must be an integer from ${min} to ${max} (got ${describeValue(v)})`)
  }
  return v
}

const UNITS = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }

/** Parses '30d', '12h', '15m', '45s' into milliseconds. */
function parseDuration(name, v) {
  const m = typeof v === 'string' ? /^(\d+)\s*([smhd])$/.exec(v.trim()) : null
  if (!m || Number(m[1]) <= 0) {
    throw new ValidationError(`option ${name} must look like '30d', '12h', '15m' or '45s' (got ${describeValue(v)})`)
  }
  return Number(m[1]) * UNITS[m[2]]
}

/**
 * Options with defaults. `o.backend` is `{ kind: 'sqlite' }` (then `o.path`
 * is the file) or `{ kind: 'postgres', url, schema }` (then `o.path` is null);
 * `env` is where DURABLY_DATABASE_URL is read.
 */
function resolveOptions(options, env = process.env) {
  if (options === undefined) options = {}
  if (options === null || typeof options !== 'object' || Array.isArray(options)) {
    throw new ValidationError('createDurably options must be an object')
  }
  for (const k of Object.keys(options)) {
    if (!(k in DEFAULTS)) {
      throw new ValidationError(`unknown option ${k} (known: ${Object.keys(DEFAULTS).join(', ')})`)
    }
  }
  const o = { ...DEFAULTS }
  for (const [k, v] of Object.entries(options)) if (v !== undefined) o[k] = v
  o.backend = resolveBackend(options, env)
  if (o.backend.kind === 'postgres') {
    o.path = null
  } else if (typeof o.path !== 'string' || o.path.length === 0 || o.path.includes('\0')) {
    throw new ValidationError('option path must be a non-empty file path or ":memory:"')
  }
  positiveInt('pollingInterval', o.pollingInterval)
  positiveInt('heartbeatInterval', o.heartbeatInterval)
  positiveInt('staleThreshold', o.staleThreshold)
  positiveInt('maxConcurrentRuns', o.maxConcurrentRuns, { max: 1024 })
  positiveInt('busyTimeout', o.busyTimeout, { min: 0 })
  positiveInt('maxValueBytes', o.maxValueBytes, { max: Number.MAX_SAFE_INTEGER })
  if (o.staleThreshold <= o.heartbeatInterval) {
    throw new ValidationError(
      `option staleThreshold (${o.staleThreshold}) must be greater than heartbeatInterval (${o.heartbeatInterval})`,
    )
  }
  if (o.synchronous !== 'normal' && o.synchronous !== 'full') {
    throw new ValidationError(`option synchronous must be 'normal' or 'full' (got ${describeValue(o.synchronous)})`)
  }
  o.retainMs = o.retainRuns === undefined ? null : parseDuration('retainRuns', o.retainRuns)
  if (o.labels !== undefined && !isSchema(o.labels)) {
    throw new ValidationError('option labels must be a Standard Schema validator (Zod 4, Valibot, ArkType…) for run labels')
  }
  if (o.jobs !== undefined && (o.jobs === null || typeof o.jobs !== 'object' || Array.isArray(o.jobs))) {
    throw new ValidationError('option jobs must be an object of job definitions')
  }
  return o
}

module.exports = { resolveOptions, parseDuration, positiveInt, describeValue }
