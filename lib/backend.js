'use strict'
// Which store an instance opens: a SQLite file (option `path`, the default)
// or a PostgreSQL database (option `url`, or DURABLY_DATABASE_URL when
// neither `path` nor `url` is given). Pure checks: no connection is made
// here, and no message ever shows a URL's password.

const { ValidationError, DurablyError } = require('./errors')

const ENV_URL = 'DURABLY_DATABASE_URL'
const DEFAULT_SCHEMA = 'durably'
const SCHEMA_MAX = 48 // so `durably_cancel_<schema>` fits PostgreSQL's 63-byte names
const SCHEMA_RE = /^[a-z_][a-z0-9_]*$/
// Options that only mean something on one backend.
const SQLITE_ONLY = ['synchronous']

/** A URL as an error message may show it: the password replaced by `***`. */
function redact(text) {
  return String(text)
    .replace(/^([a-z][a-z0-9+.-]*:\/\/[^/@:]*:)[^@/]*@/i, '$1***@')
    .replace(/([?&]password=)[^&]*/gi, '$1***')
}

/**
 * Checks a PostgreSQL connection URL (`postgres://` or `postgresql://`,
 * a host, an optional port and database). `source` names where it came from
 * (`option url` or `DURABLY_DATABASE_URL`). Returns the URL unchanged.
 */
function checkDatabaseUrl(source, url) {
  if (typeof url !== 'string' || url.length === 0) {
    throw new ValidationError(`${source} must be a non-empty postgres:// URL (got ${typeof url === 'string' ? 'an empty string' : typeof url})`)
  }
  if (url.includes('\0')) throw new ValidationError(`${source} must not contain NUL`)
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(url)?.[1]?.toLowerCase()
  if (scheme !== 'postgres' && scheme !== 'postgresql') {
    const hint =
      scheme === 'file' || scheme === 'sqlite' || scheme === undefined
        ? ' (a SQLite file goes in option path)'
        : ''
    throw new ValidationError(
      `${source} must start with postgres:// or postgresql:// (got ${scheme ? `'${scheme}:'` : 'no scheme'} in ${JSON.stringify(redact(url))})${hint}`,
    )
  }
  let parsed
  try {
    parsed = new URL(url)
  } catch {
    throw new ValidationError(`${source} is not a valid URL: ${JSON.stringify(redact(url))}`)
  }
  // A host may also come from ?host=/path/to/socket (a Unix socket directory).
  if (parsed.hostname === '' && !parsed.searchParams.has('host')) {
    throw new ValidationError(`${source} names no host: ${JSON.stringify(redact(url))} (postgres://user@host:port/database)`)
  }
  if (parsed.port !== '' && (Number(parsed.port) < 1 || Number(parsed.port) > 65535)) {
    throw new ValidationError(`${source} has an invalid port ${parsed.port}`)
  }
  return url
}

/** Checks a PostgreSQL schema name (the same rule as the engine's). */
function checkSchemaName(schema) {
  if (
    typeof schema !== 'string' ||
    !SCHEMA_RE.test(schema) ||
    schema.length > SCHEMA_MAX ||
    schema.startsWith('pg_')
  ) {
    throw new ValidationError(
      `option schema must be 1 to ${SCHEMA_MAX} lower-case letters, digits or '_', starting with a letter or '_', not 'pg_…' (got ${JSON.stringify(schema)})`,
    )
  }
  return schema
}

/**
 * Picks the backend from the options the user passed (`given`, before
 * defaults) and the environment. Explicit options win over the environment:
 * `path` opens SQLite even when DURABLY_DATABASE_URL is set.
 * Returns `{ kind: 'sqlite' }` or `{ kind: 'postgres', url, schema }`.
 */
function resolveBackend(given, env = process.env) {
  const hasPath = given.path !== undefined
  const hasUrl = given.url !== undefined
  if (hasPath && hasUrl) {
    throw new ValidationError('options path and url cannot both be set: path opens a SQLite file, url a PostgreSQL database')
  }
  let url = null
  if (hasUrl) url = checkDatabaseUrl('option url', given.url)
  else if (!hasPath && typeof env[ENV_URL] === 'string' && env[ENV_URL] !== '') {
    url = checkDatabaseUrl(ENV_URL, env[ENV_URL])
  }
  if (url === null) {
    if (given.schema !== undefined) {
      throw new ValidationError('option schema applies to PostgreSQL only: set option url (or DURABLY_DATABASE_URL) too')
    }
    return { kind: 'sqlite' }
  }
  for (const k of SQLITE_ONLY) {
    if (given[k] !== undefined) throw new ValidationError(`option ${k} applies to SQLite only, not to a PostgreSQL url`)
  }
  const schema = given.schema === undefined ? DEFAULT_SCHEMA : checkSchemaName(given.schema)
  return { kind: 'postgres', url, schema }
}

/**
 * True when the loaded native addon can open a PostgreSQL engine: it then
 * exports `postgresSupported()` returning true (built with the cargo feature
 * `postgres` and wired into the engine).
 */
function postgresSupported(binding) {
  return typeof binding.postgresSupported === 'function' && binding.postgresSupported() === true
}

/** Throws POSTGRES_UNSUPPORTED when `backend` is PostgreSQL and the addon cannot open it. */
function ensureSupported(backend, binding) {
  if (backend.kind !== 'postgres' || postgresSupported(binding)) return
  throw new DurablyError(
    'this build of durably has no PostgreSQL support: its native addon was built without the postgres feature ' +
      '(use option path for a SQLite file)',
    'POSTGRES_UNSUPPORTED',
  )
}

module.exports = {
  ENV_URL,
  DEFAULT_SCHEMA,
  redact,
  checkDatabaseUrl,
  checkSchemaName,
  resolveBackend,
  postgresSupported,
  ensureSupported,
}
