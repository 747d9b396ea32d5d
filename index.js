'use strict'
// durably: durable, resumable step jobs on an embedded SQLite file.

const { Durably, createDurably, withLogPersistence } = require('./lib/durably')
const { defineJob } = require('./lib/job')
const errors = require('./lib/errors')
const { ReplayMismatchError } = require('./lib/execution')

module.exports = {
  createDurably,
  defineJob,
  withLogPersistence,
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
