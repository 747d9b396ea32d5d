'use strict'
// durably: durable, resumable step jobs on an embedded SQLite file.

const { Durably, createDurably, withLogPersistence } = require('./lib/durably')
const { defineJob } = require('./lib/job')
const errors = require('./lib/errors')
const { ReplayMismatchError } = require('./lib/execution')
const { createDurablyHandler, toNodeHandler } = require('./lib/http')

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
