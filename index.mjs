import durably from './index.js'

export const {
  createDurably,
  defineJob,
  withLogPersistence,
  createDurablyHandler,
  toNodeHandler,
  Durably,
  DurablyError,
  ValidationError,
  NotFoundError,
  ConflictError,
  CancelledError,
  LeaseLostError,
  TimeoutError,
  RunFailedError,
  ReplayMismatchError,
} = durably
export default durably
