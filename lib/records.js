'use strict'
// Records from the engine (JSON text) to the public shapes. The run record's
// fields are listed once, here (RUN_FIELDS); every shape of a run is built
// from that list.

const { reviveParsed, TAG_TEXT } = require('./values')

/** The public run record's fields, in the order they appear. */
const RUN_FIELDS = Object.freeze([
  'id',
  'jobName',
  'status',
  'input',
  'output',
  'error',
  'errorStack',
  'labels',
  'progress',
  'idempotencyKey',
  'concurrencyKey',
  'currentStepIndex',
  'attempt',
  'completedStepCount',
  'createdAt',
  'updatedAt',
  'startedAt',
  'completedAt',
])

/** Fields a browser never sees (keys and the stack trace). */
const PRIVATE_RUN_FIELDS = new Set(['errorStack', 'idempotencyKey', 'concurrencyKey'])

/** The run record's fields that the HTTP handler sends to browsers. */
const CLIENT_RUN_FIELDS = Object.freeze(RUN_FIELDS.filter((f) => !PRIVATE_RUN_FIELDS.has(f)))

/** Copies `fields` of `from` into a new object (in the list's order). */
function pick(from, fields) {
  const out = {}
  for (let i = 0; i < fields.length; i++) out[fields[i]] = from[fields[i]]
  return out
}

/** The engine's run object (JSON-parsed) → the public run record. */
function publicRun(r, tags) {
  const run = pick(r, RUN_FIELDS)
  run.input = reviveParsed(r.input, tags)
  run.output = r.output === null ? null : reviveParsed(r.output, tags)
  run.attempt = r.leaseGeneration ?? 0
  return run
}

/** The record of a run just created: pending, nothing run yet. */
function newRun({ id, jobName, input, labels, idempotencyKey, concurrencyKey, createdAt }) {
  // Written out in RUN_FIELDS order (a test compares it with publicRun's
  // record of the same run): one object literal, where publicRun's copy by
  // field name cost ~10 % of a batchTrigger item's CPU.
  return {
    id,
    jobName,
    status: 'pending',
    input,
    output: null,
    error: null,
    errorStack: null,
    labels,
    progress: null,
    idempotencyKey,
    concurrencyKey,
    currentStepIndex: 0,
    attempt: 0,
    completedStepCount: 0,
    createdAt,
    updatedAt: createdAt,
    startedAt: null,
    completedAt: null,
  }
}

function parseRun(text) {
  if (text === null || text === undefined) return null
  return publicRun(JSON.parse(text), text.includes(TAG_TEXT))
}

function parseRuns(text) {
  const tags = text.includes(TAG_TEXT)
  return JSON.parse(text).map((r) => publicRun(r, tags))
}

function parseSteps(text) {
  const tags = text.includes(TAG_TEXT)
  const steps = JSON.parse(text)
  if (tags) for (const s of steps) if (s.output !== null) s.output = reviveParsed(s.output, true)
  return steps
}

function parseLogs(text) {
  const tags = text.includes(TAG_TEXT)
  const logs = JSON.parse(text)
  if (tags) for (const l of logs) if (l.data !== null) l.data = reviveParsed(l.data, true)
  return logs
}

module.exports = {
  RUN_FIELDS,
  CLIENT_RUN_FIELDS,
  pick,
  parseRun,
  parseRuns,
  parseSteps,
  parseLogs,
  publicRun,
  newRun,
}
