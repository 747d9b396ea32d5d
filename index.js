'use strict'
// durably: durable, resumable step jobs on an embedded SQLite file.

const { Durably, createDurably, withLogPersistence } = require('./lib/durably')
const { defineJob } = require('./lib/job')
const errors = require('./lib/errors')
const { ReplayMismatchError } = require('./lib/execution')

// The HTTP handler (lib/http.js and the modules it loads, node:crypto and
// node's streams among them) adds 4–6 MB to the resident memory of every
// process that loads it, so it is loaded on the first call, not here: a
// worker that never serves HTTP does not pay for it.
let http = null
function createDurablyHandler(durably, options) {
  http ??= require('./lib/http')
  return http.createDurablyHandler(durably, options)
}
function toNodeHandler(handler, basePath = '') {
  http ??= require('./lib/http')
  return http.toNodeHandler(handler, basePath)
}

module.exports = {
  createDurably,
  defineJob,
  withLogPersistence,
  createDurablyHandler,
  toNodeHandler,
  Durably,
  DurablyError: errors.DurablyError,
  ValidationError: errors.ValidationError,
  NotFoundError: errors.NotFoundError,
  ConflictError: errors.ConflictError,
  CancelledError: errors.CancelledError,
  LeaseLostError: errors.LeaseLostError,
  TimeoutError: errors.TimeoutError,
  RunFailedError: errors.RunFailedError,
  ReplayMismatchError,
}
