'use strict'
// The run status vocabulary, written once for the JS layer (the engine's is
// the Rust `RunStatus` enum; __test__/status.test.mjs checks they agree).

/** Every run status, in lifecycle order. */
const STATUSES = Object.freeze(['pending', 'running', 'completed', 'failed', 'cancelled'])

/** Statuses a run does not leave unless retried. */
const TERMINAL = new Set(['completed', 'failed', 'cancelled'])

/** Whether `s` is a run status. */
const isStatus = (s) => STATUSES.includes(s)

module.exports = { STATUSES, TERMINAL, isStatus }
