'use strict'
// Error classes. Native errors carry a stable `.code`; `fromNative` picks the
// class from it (never from the message).

class DurablyError extends Error {
  constructor(message, code = 'DURABLY_ERROR', options) {
    super(message, options)
    this.name = 'DurablyError'
    this.code = code
  }
}

class ValidationError extends DurablyError {
  constructor(message, options) {
    super(message, 'VALIDATION_ERROR', options)
    this.name = 'ValidationError'
    this.status = 400
  }
}

class NotFoundError extends DurablyError {
  constructor(message, options) {
    super(message, 'NOT_FOUND', options)
    this.name = 'NotFoundError'
    this.status = 404
  }
}

class ConflictError extends DurablyError {
  constructor(message, options) {
    super(message, 'CONFLICT', options)
    this.name = 'ConflictError'
    this.status = 409
  }
}

class CancelledError extends DurablyError {
  constructor(message = 'run was cancelled', options) {
    super(message, 'CANCELLED', options)
    this.name = 'CancelledError'
  }
}

class LeaseLostError extends DurablyError {
  constructor(message = 'this worker no longer owns the run (its lease was taken over)', options) {
    super(message, 'LEASE_LOST', options)
    this.name = 'LeaseLostError'
  }
}

class TimeoutError extends DurablyError {
  constructor(message, options) {
    super(message, 'TIMEOUT', options)
    this.name = 'TimeoutError'
  }
}

/** A run ended `failed`; `message` is the run's stored error. */
class RunFailedError extends DurablyError {
  constructor(message, runId, options) {
    super(message, 'RUN_FAILED', options)
    this.name = 'RunFailedError'
    this.runId = runId
  }
}

const byCode = {
  VALIDATION_ERROR: ValidationError,
  NOT_FOUND: NotFoundError,
  CONFLICT: ConflictError,
  CANCELLED: CancelledError,
  LEASE_LOST: LeaseLostError,
  TIMEOUT: TimeoutError,
}

function fromCode(code, message) {
  const Cls = byCode[code]
  if (Cls) return new Cls(message)
  return new DurablyError(message, code || 'DURABLY_ERROR')
}

/** Converts an error thrown by the addon into one of our classes. */
function fromNative(err) {
  if (err instanceof DurablyError) return err
  if (err && typeof err.code === 'string') return fromCode(err.code, err.message)
  return new DurablyError(String(err && err.message ? err.message : err), 'INTERNAL')
}

/** Calls a synchronous addon method, converting its errors. */
function native(fn) {
  try {
    return fn()
  } catch (err) {
    throw fromNative(err)
  }
}

/** Awaits an async addon call; its rejection (an error with `.code`) becomes one of our classes. */
async function nativeAsync(promise) {
  try {
    return await promise
  } catch (err) {
    throw fromNative(err)
  }
}

module.exports = {
  DurablyError,
  ValidationError,
  NotFoundError,
  ConflictError,
  CancelledError,
  LeaseLostError,
  TimeoutError,
  RunFailedError,
  fromCode,
  fromNative,
  native,
  nativeAsync,
}
