'use strict'
// The browser bundle's stand-in for node:async_hooks (lib/execution.js uses
// AsyncLocalStorage only to tell which step a `ctx.log` line comes from).
// Browsers have no async context yet: the store is visible during the
// synchronous part of `run`; after a step's first `await`, `ctx.log` falls
// back to the last step started (as in Node when no scope is known).

class AsyncLocalStorage {
  constructor() {
    this.current = undefined
  }

  run(store, fn, ...args) {
    const before = this.current
    this.current = store
    try {
      return fn(...args)
    } finally {
      this.current = before
    }
  }

  getStore() {
    return this.current
  }
}

module.exports = { AsyncLocalStorage }
