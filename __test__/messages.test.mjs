// Error messages say what was wrong: a bad option's value is shown so that a
// string ('500') is told apart from a number (500), and defineJob's unknown
// field error lists the fields it knows (issue 12).
import { describe, expect, it } from 'vitest'
import { createDurably, defineJob, ValidationError } from '../index.js'

function errorOf(fn) {
  try {
    fn()
  } catch (e) {
    return e
  }
  throw new Error('expected a throw')
}

describe('option errors show the value as given', () => {
  it.each([
    [{ pollingInterval: '500' }, "option pollingInterval must be an integer from 1 to 2147483647 (got '500')"],
    [{ pollingInterval: 500.5 }, 'option pollingInterval must be an integer from 1 to 2147483647 (got 500.5)'],
    [{ heartbeatInterval: null }, 'option heartbeatInterval must be an integer from 1 to 2147483647 (got null)'],
    [{ busyTimeout: '' }, "option busyTimeout must be an integer from 0 to 2147483647 (got '')"],
    [{ maxConcurrentRuns: [4] }, 'option maxConcurrentRuns must be an integer from 1 to 1024 (got [ 4 ])'],
    [{ synchronous: 'off' }, "option synchronous must be 'normal' or 'full' (got 'off')"],
    [{ retainRuns: 30 }, "option retainRuns must look like '30d', '12h', '15m' or '45s' (got 30)"],
    [{ retainRuns: '30' }, "option retainRuns must look like '30d', '12h', '15m' or '45s' (got '30')"],
  ])('%j', (opts, message) => {
    const err = errorOf(() => createDurably({ path: ':memory:', ...opts }))
    expect(err).toBeInstanceOf(ValidationError)
    expect(err.message).toBe(message)
  })

  it('a long string is shortened', () => {
    const err = errorOf(() => createDurably({ path: ':memory:', synchronous: 'x'.repeat(10_000) }))
    expect(err.message.length).toBeLessThan(300)
    expect(err.message).toContain("(got 'xxx")
  })

  it("a job's timeout given as a string is quoted too", () => {
    const err = errorOf(() => defineJob({ name: 'j', run: () => 1, timeout: '5000' }))
    expect(err).toBeInstanceOf(ValidationError)
    expect(err.message).toBe("option timeout of job 'j' must be an integer from 1 to 2147483647 (got '5000')")
  })
})

describe('defineJob', () => {
  it('an unknown field is named, with the list of valid fields', () => {
    const err = errorOf(() => defineJob({ name: 'j', run: () => 1, retries: 3 }))
    expect(err).toBeInstanceOf(ValidationError)
    expect(err.message).toBe(
      "defineJob: unknown field 'retries' (valid fields: name, input, output, run, timeout, replay, description)",
    )
  })
})
