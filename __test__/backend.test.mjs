// Choosing the store (issue 16): option path (SQLite) or url / DURABLY_DATABASE_URL
// (PostgreSQL) with schema; each bad combination or value is a ValidationError
// naming it, a URL's password never appears in a message, and a PostgreSQL url
// on an addon without PostgreSQL is POSTGRES_UNSUPPORTED (no crash, no file).
import { afterEach, describe, expect, it } from 'vitest'
import { createRequire } from 'node:module'
import fs from 'node:fs'
import path from 'node:path'

const require = createRequire(import.meta.url)
const { createDurably, DurablyError, ValidationError } = require('..')
const { resolveOptions } = require('../lib/options')
const { resolveBackend, ensureSupported, redact, checkSchemaName } = require('../lib/backend')
const { closeAll, makeDurably, tempDir } = require('./helpers.js')

afterEach(closeAll)

const URL = 'postgres://app:s3cret@db.example:5432/app'

function validationMessage(fn) {
  try {
    fn()
  } catch (e) {
    expect(e).toBeInstanceOf(ValidationError)
    return e.message
  }
  throw new Error('expected a ValidationError')
}

describe('resolveOptions: backend', () => {
  it('SQLite by default, and with path', () => {
    expect(resolveOptions({}, {}).backend).toEqual({ kind: 'sqlite' })
    expect(resolveOptions({}, {}).path).toBe('durably.db')
    expect(resolveOptions({ path: 'x.db' }, {}).backend).toEqual({ kind: 'sqlite' })
  })

  it('url → postgres with the default schema; schema given → that schema; path is null', () => {
    const o = resolveOptions({ url: URL }, {})
    expect(o.backend).toEqual({ kind: 'postgres', url: URL, schema: 'durably' })
    expect(o.path).toBeNull()
    expect(resolveOptions({ url: 'postgresql://h/db', schema: 'jobs_1' }, {}).backend).toEqual({
      kind: 'postgres',
      url: 'postgresql://h/db',
      schema: 'jobs_1',
    })
    // A Unix-socket directory as ?host= counts as a host.
    expect(resolveOptions({ url: 'postgres:///db?host=/run/postgresql' }, {}).backend.kind).toBe('postgres')
  })

  it('DURABLY_DATABASE_URL is used when neither path nor url is given; path and url win over it', () => {
    const env = { DURABLY_DATABASE_URL: URL }
    expect(resolveOptions({}, env).backend).toEqual({ kind: 'postgres', url: URL, schema: 'durably' })
    expect(resolveOptions({ path: 'x.db' }, env).backend).toEqual({ kind: 'sqlite' })
    expect(resolveOptions({ url: 'postgres://other/db' }, env).backend.url).toBe('postgres://other/db')
    expect(resolveOptions({}, { DURABLY_DATABASE_URL: '' }).backend).toEqual({ kind: 'sqlite' })
  })

  it('path and url together are refused', () => {
    expect(validationMessage(() => resolveOptions({ path: 'x.db', url: URL }, {}))).toMatch(/path and url/)
  })

  it('a URL of another scheme, without a host, unparsable or with a bad port is refused, naming the source', () => {
    expect(validationMessage(() => resolveOptions({ url: 'mysql://h/db' }, {}))).toMatch(/option url must start with postgres:\/\/.*'mysql:'/)
    expect(validationMessage(() => resolveOptions({ url: 'file:x.db' }, {}))).toMatch(/option path/)
    expect(validationMessage(() => resolveOptions({ url: 'x.db' }, {}))).toMatch(/no scheme/)
    expect(validationMessage(() => resolveOptions({ url: 'postgres:///db' }, {}))).toMatch(/names no host/)
    expect(validationMessage(() => resolveOptions({ url: 'postgres://h:99999/db' }, {}))).toMatch(/url/)
    expect(validationMessage(() => resolveOptions({ url: 'postgres://[::1/db' }, {}))).toMatch(/not a valid URL/)
    expect(validationMessage(() => resolveOptions({ url: '' }, {}))).toMatch(/empty string/)
    expect(validationMessage(() => resolveOptions({ url: 42 }, {}))).toMatch(/got number/)
    expect(validationMessage(() => resolveOptions({ url: 'postgres://h/d\0b' }, {}))).toMatch(/NUL/)
    expect(validationMessage(() => resolveOptions({}, { DURABLY_DATABASE_URL: 'redis://h' }))).toMatch(
      /^DURABLY_DATABASE_URL must start with postgres:\/\//,
    )
  })

  it('never shows the password of a URL', () => {
    for (const url of ['mysql://app:s3cret@h/db', 'postgres://app:s3cret@/db', 'postgres://app:s3cret@[::1/db']) {
      const msg = validationMessage(() => resolveOptions({ url }, {}))
      expect(msg).not.toContain('s3cret')
      expect(msg).toContain('***')
    }
    expect(redact('postgres://u:p%40ss@h/db')).toBe('postgres://u:***@h/db')
    expect(redact('postgres://u@h/db')).toBe('postgres://u@h/db')
    expect(redact('mysql://h/db?user=u&password=s3cret&x=1')).toBe('mysql://h/db?user=u&password=***&x=1')
  })

  it('schema: the engine rule (1–48 of [a-z0-9_], not starting with a digit or pg_), and only with a URL', () => {
    expect(checkSchemaName('_a1')).toBe('_a1')
    expect(checkSchemaName('a'.repeat(48))).toBe('a'.repeat(48))
    for (const bad of ['', 'A', '1a', 'a-b', 'pg_x', 'a'.repeat(49), 'a b', 'é', 7, null]) {
      expect(validationMessage(() => resolveOptions({ url: URL, schema: bad }, {}))).toMatch(/option schema/)
    }
    expect(validationMessage(() => resolveOptions({ schema: 'jobs' }, {}))).toMatch(/schema applies to PostgreSQL only/)
    expect(validationMessage(() => resolveOptions({ path: 'x.db', schema: 'jobs' }, { DURABLY_DATABASE_URL: URL }))).toMatch(
      /schema applies to PostgreSQL only/,
    )
  })

  it('SQLite-only options with a URL are refused', () => {
    expect(validationMessage(() => resolveOptions({ url: URL, synchronous: 'full' }, {}))).toMatch(/synchronous applies to SQLite only/)
  })

  it('resolveBackend reads given options, not defaults', () => {
    expect(resolveBackend({ url: URL, path: undefined }, {})).toEqual({ kind: 'postgres', url: URL, schema: 'durably' })
  })
})

describe('POSTGRES_UNSUPPORTED', () => {
  it('ensureSupported: refuses postgres unless the addon says postgresSupported() === true', () => {
    const pg = { kind: 'postgres', url: URL, schema: 'durably' }
    expect(() => ensureSupported({ kind: 'sqlite' }, {})).not.toThrow()
    for (const binding of [{}, { postgresSupported: () => false }, { postgresSupported: () => 'yes' }, { postgresSupported: true }]) {
      try {
        ensureSupported(pg, binding)
        throw new Error('expected POSTGRES_UNSUPPORTED')
      } catch (e) {
        expect(e).toBeInstanceOf(DurablyError)
        expect(e.code).toBe('POSTGRES_UNSUPPORTED')
      }
    }
    expect(() => ensureSupported(pg, { postgresSupported: () => true })).not.toThrow()
  })

  it.skipIf(require('./pg.js').pgWired())('createDurably({ url }) on this addon: DurablyError POSTGRES_UNSUPPORTED, nothing written', () => {
    const dir = tempDir()
    const cwd = process.cwd()
    process.chdir(dir) // a SQLite fallback would create ./durably.db here
    try {
      let err
      try {
        createDurably({ url: URL, schema: 'jobs' })
      } catch (e) {
        err = e
      }
      expect(err).toBeInstanceOf(DurablyError)
      expect(err.code).toBe('POSTGRES_UNSUPPORTED')
      expect(err.message).not.toContain('s3cret')
      const prev = process.env.DURABLY_DATABASE_URL
      process.env.DURABLY_DATABASE_URL = URL
      try {
        expect(() => createDurably()).toThrow(expect.objectContaining({ code: 'POSTGRES_UNSUPPORTED' }))
        // An explicit path still opens SQLite with the variable set.
        const d = makeDurably({ path: path.join(dir, 'explicit.db') })
        expect(d).toBeTruthy()
      } finally {
        if (prev === undefined) delete process.env.DURABLY_DATABASE_URL
        else process.env.DURABLY_DATABASE_URL = prev
      }
      expect(fs.existsSync(path.join(dir, 'durably.db'))).toBe(false)
    } finally {
      process.chdir(cwd)
    }
  })
})

describe.runIf(require('./pg.js').pgWired())('on an addon with PostgreSQL', () => {
  it('a server that cannot be reached fails the first call with DB_ERROR, naming the cause (createDurably() does not connect)', async () => {
    let err
    const d = createDurably({ url: 'postgres://app:s3cret@127.0.0.1:1/app' }) // nothing listens on port 1
    try {
      await d.getRuns()
    } catch (e) {
      err = e
    } finally {
      await d.close()
    }
    expect(err).toBeInstanceOf(DurablyError)
    expect(err.code).toBe('DB_ERROR')
    expect(err.message).toMatch(/cannot connect/)
    expect(err.message).not.toContain('s3cret')
  })
})
