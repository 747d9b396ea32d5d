'use strict'
// The boundary with the native engine, one place: how the JS layer encodes
// the ops it sends (flush batches, trigger batches) and decodes what the
// engine answers. Values (inputs, outputs, progress, log data) are already
// JSON text (lib/values.js) and are spliced in as is, so nothing is encoded
// twice. The Rust side parses flush ops with serde into `store::FlushOp`
// (src/store/flush.rs); __test__/protocol.test.mjs and the cargo test
// `protocol_fixture_parses` check both sides against
// __test__/fixtures/protocol-ops.json.

/** JSON text of a string or null. */
function q(s) {
  return s == null ? 'null' : JSON.stringify(s)
}

// ---- flush ops: {"<kind>": {...}}, one key naming the kind ------------------

/**
 * A finished step. `outputText`/`progressText`: JSON text or null;
 * `err`: `{ message, stack }` or null; times: ISO strings.
 */
function stepOp(run, gen, name, index, status, outputText, err, startedAt, completedAt, progressText = null) {
  return (
    `{"step":{"run":${q(run)},"gen":${gen},"name":${q(name)},"index":${index},"status":"${status}",` +
    `"output":${outputText ?? 'null'},"error":${err ? q(err.message) : 'null'},"stack":${err ? q(err.stack) : 'null'},` +
    `"startedAt":"${startedAt}","completedAt":${completedAt ? `"${completedAt}"` : 'null'},"progress":${progressText ?? 'null'}}}`
  )
}

/** The run completed with `outputText` (JSON text). */
function completeOp(run, gen, outputText, progressText, at) {
  return `{"complete":{"run":${q(run)},"gen":${gen},"output":${outputText ?? 'null'},"progress":${progressText ?? 'null'},"at":"${at}"}}`
}

/** The run failed. */
function failOp(run, gen, message, stack, progressText, at) {
  return `{"fail":{"run":${q(run)},"gen":${gen},"error":${q(message)},"stack":${q(stack)},"progress":${progressText ?? 'null'},"at":"${at}"}}`
}

/** The run's progress alone (JSON text). */
function progressOp(run, gen, progressText) {
  return `{"progress":{"run":${q(run)},"gen":${gen},"progress":${progressText ?? 'null'}}}`
}

/** A log line; `dataText`: JSON text or null. */
function logOp(run, gen, stepName, level, message, dataText, at) {
  return `{"log":{"run":${q(run)},"gen":${gen},"step":${q(stepName)},"level":"${level}","message":${q(message)},"data":${dataText ?? 'null'},"at":"${at}"}}`
}

/** Give the run back (pending) so any worker resumes it now. */
function releaseOp(run, gen) {
  return `{"release":{"run":${q(run)},"gen":${gen}}}`
}

/** The batch of ops (each op's JSON text) as one JSON array. */
function encodeBatch(ops) {
  return ops.length === 1 ? `[${ops[0]}]` : `[${ops.join(',')}]`
}

/**
 * The engine's answer to a flush: `{ statuses, claimed, errors }`.
 * - statuses: one character per op: '0' written, 'c' run cancelled, 'l' lease
 *   lost, 'b' a value too big for SQLite, 'e' the op failed (see errors);
 * - claimed: JSON text of the runs claimed in the same commit, or null;
 * - errors: `[[index, code, message], …]` of the ops that failed, or null.
 */
function decodeFlush(text) {
  const nl = text.indexOf('\n')
  if (nl < 0) return { statuses: text, claimed: null, errors: null }
  const statuses = text.slice(0, nl)
  const nl2 = text.indexOf('\n', nl + 1)
  const claimedText = nl2 < 0 ? text.slice(nl + 1) : text.slice(nl + 1, nl2)
  return {
    statuses,
    claimed: claimedText === '[]' ? null : claimedText,
    errors: nl2 < 0 ? null : JSON.parse(text.slice(nl2 + 1)),
  }
}

// ---- triggers ----------------------------------------------------------------

/** One `triggerBatch` item: `[job, <input>, idempotencyKey, concurrencyKey, coalesce, <labels>]`. */
function triggerItem(jobNameJson, inputText, idem, conc, coalesce, labelsText) {
  return `[${jobNameJson},${inputText},${q(idem)},${q(conc)},${coalesce},${labelsText}]`
}

/**
 * One trigger outcome: `{ kind: 'created', id, createdAt }`, or
 * `{ kind: 'idempotent' | 'coalesced', runText }` (the existing run's JSON).
 */
function decodeTrigger(r) {
  const tag = r[0]
  if (tag === 'c') return { kind: 'created', id: r.slice(1, 27), createdAt: r.slice(27) }
  return { kind: tag === 'i' ? 'idempotent' : 'coalesced', runText: r.slice(1) }
}

module.exports = {
  q,
  stepOp,
  completeOp,
  failOp,
  progressOp,
  logOp,
  releaseOp,
  encodeBatch,
  decodeFlush,
  triggerItem,
  decodeTrigger,
}
