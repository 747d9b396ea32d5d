'use strict'
// Records from the engine (JSON text) to the public shapes.

const { reviveParsed, TAG_TEXT } = require('./values')

const TERMINAL = new Set(['completed', 'failed', 'cancelled'])

function publicRun(r, tags) {
  return {
    id: r.id,
    jobName: r.jobName,
    status: r.status,
    input: reviveParsed(r.input, tags),
    output: r.output === null ? null : reviveParsed(r.output, tags),
    error: r.error,
    errorStack: r.errorStack,
    labels: r.labels,
    progress: r.progress,
    idempotencyKey: r.idempotencyKey,
    concurrencyKey: r.concurrencyKey,
    currentStepIndex: r.currentStepIndex,
    attempt: r.leaseGeneration ?? 0,
    completedStepCount: r.completedStepCount,
    createdAt: r.createdAt,
    updatedAt: r.updatedAt,
    startedAt: r.startedAt,
    completedAt: r.completedAt,
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

module.exports = { parseRun, parseRuns, parseSteps, parseLogs, publicRun, TERMINAL }
