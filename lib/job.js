'use strict'
// Job definitions and the typed handles users trigger them through.

const { ValidationError } = require('./errors')
const { isSchema } = require('./schema')
const { positiveInt } = require('./options')

const JOB = Symbol.for('durably.job')
const NAME_RE = /^[^\u0000-\u001f"\\]{1,200}$/

function checkName(what, v) {
  if (typeof v !== 'string' || !NAME_RE.test(v)) {
    throw new ValidationError(
      `${what} must be a string of 1–200 characters without quotes, backslashes or control characters (got ${JSON.stringify(v)})`,
    )
  }
  return v
}

/** Idempotency and concurrency keys: any well-formed text of 1–1000 characters without NUL. */
function checkKey(what, v) {
  if (typeof v !== 'string' || v.length === 0 || v.length > 1000 || v.includes('\0') || !v.isWellFormed()) {
    throw new ValidationError(
      `${what} must be a string of 1–1000 characters without NUL or unpaired surrogates (got ${JSON.stringify(v)})`,
    )
  }
  return v
}

const CONFIG_KEYS = new Set(['name', 'input', 'output', 'run', 'timeout', 'replay', 'description'])

/**
 * Defines a job: `{ name, input?, output?, run, timeout?, replay? }`.
 * Register it with `createDurably({ jobs })` or `durably.register()`.
 */
function defineJob(config) {
  if (config === null || typeof config !== 'object') throw new ValidationError('defineJob: config must be an object')
  for (const k of Object.keys(config)) {
    if (!CONFIG_KEYS.has(k)) {
      throw new ValidationError(`defineJob: unknown field '${k}' (valid fields: ${[...CONFIG_KEYS].join(', ')})`)
    }
  }
  checkName('job name', config.name)
  if (typeof config.run !== 'function') {
    throw new ValidationError(`defineJob('${config.name}'): run must be a function (ctx, input) => output`)
  }
  for (const f of ['input', 'output']) {
    if (config[f] !== undefined && !isSchema(config[f])) {
      throw new ValidationError(
        `defineJob('${config.name}'): ${f} must be a Standard Schema validator (Zod 4, Valibot, ArkType…)`,
      )
    }
  }
  if (config.timeout !== undefined) positiveInt(`timeout of job '${config.name}'`, config.timeout)
  if (config.replay !== undefined && config.replay !== 'strict' && config.replay !== 'lenient') {
    throw new ValidationError(`defineJob('${config.name}'): replay must be 'strict' or 'lenient'`)
  }
  return Object.freeze({ ...config, replay: config.replay ?? 'strict', [JOB]: true })
}

function isJobDefinition(v) {
  return v !== null && typeof v === 'object' && v[JOB] === true
}

/** A registered job, bound to one durably instance. */
class JobHandle {
  constructor(durably, def) {
    this.name = def.name
    this.definition = def
    Object.defineProperty(this, '_d', { value: durably })
  }

  trigger(input, options) {
    return this._d._trigger(this.definition, input, options)
  }

  batchTrigger(items) {
    return this._d._batchTrigger(this.definition, items)
  }

  triggerAndWait(input, options) {
    return this._d._triggerAndWait(this.definition, input, options)
  }

  async getRun(id) {
    const run = await this._d.getRun(id)
    return run && run.jobName === this.name ? run : null
  }

  getRuns(filter = {}) {
    if (filter === null || typeof filter !== 'object') throw new ValidationError('getRuns filter must be an object')
    return this._d.getRuns({ ...filter, jobName: this.name })
  }
}

module.exports = { defineJob, isJobDefinition, JobHandle, checkName, checkKey }
