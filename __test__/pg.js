'use strict'
// PostgreSQL for the JS suites: the server `.ci/run` (or
// `eval "$(scripts/test-pg.sh start)"`) starts and names in DURABLY_TEST_PG_URL,
// a fresh schema per instance (dropped by dropSchemas(), and at exit), and
// backends() for suites that run against both stores:
//
//   const { backends, dropSchemas } = require('./pg.js')
//   afterAll(dropSchemas)
//   describe.each(backends())('$name', ({ options }) => {
//     it('…', () => { const d = createDurably({ ...options(), … }) })
//   })
//
// Under CI=true a missing or unreachable server is a failure; elsewhere the
// PostgreSQL half skips with a printed reason. SQL goes through the server's
// own `psql` (no npm dependency for the tests).

const crypto = require('node:crypto')

const URL_ENV = 'DURABLY_TEST_PG_URL'

const { psqlPath, sql } = require('../scripts/psql.js')

const reachable = new Map() // url → null | reason

/**
 * Why the PostgreSQL tests cannot run here, or null when they can (a URL is
 * set, psql exists and the server answers). Under CI=true (`env.CI`) it
 * throws instead: CI must have the server.
 */
function pgSkipReason(env = process.env) {
  const url = env[URL_ENV]
  let reason = null
  if (!url) {
    reason = `${URL_ENV} is not set (start a server with: eval "$(scripts/test-pg.sh start)")`
  } else if (!psqlPath()) {
    reason = 'no psql found (PATH, /usr/lib/postgresql/*/bin); scripts/test-pg.sh installs Debian\'s postgresql'
  } else {
    if (!reachable.has(url)) {
      try {
        sql(url, 'SELECT 1')
        reachable.set(url, null)
      } catch (e) {
        reachable.set(url, `the server at ${url} does not answer: ${String(e.stderr || e.message).trim()}`)
      }
    }
    reason = reachable.get(url)
  }
  if (reason && env.CI === 'true') throw new Error(`PostgreSQL tests need a server under CI: ${reason}`)
  return reason
}

/** The test server's URL (throws when there is none). */
function pgUrl() {
  const url = process.env[URL_ENV]
  if (!url) throw new Error(`${URL_ENV} is not set`)
  return url
}

const created = new Set()

/**
 * A fresh, unique schema name on the test server (`durably_t_<tag>_<hex>`),
 * not yet created (durably's migrate creates it). Dropped by dropSchemas().
 */
function pgSchema(tag = 'js') {
  const clean = String(tag).toLowerCase().replace(/[^a-z0-9_]/g, '_').slice(0, 16)
  const name = `durably_t_${clean}_${crypto.randomBytes(6).toString('hex')}`
  created.add(name)
  return name
}

/** `{ url, schema }` options for createDurably on a fresh schema. */
function pgOptions(tag) {
  return { url: pgUrl(), schema: pgSchema(tag) }
}

/** Drops every schema pgSchema() handed out in this process (with their tables). */
function dropSchemas() {
  if (created.size === 0) return
  const names = [...created]
  created.clear()
  const url = process.env[URL_ENV]
  if (!url) return
  sql(url, `DROP SCHEMA IF EXISTS ${names.map((n) => `"${n}"`).join(', ')} CASCADE`)
}

process.once('exit', () => {
  try {
    dropSchemas()
  } catch {
    // best effort: the server may be gone already
  }
})

/** Whether the loaded addon can open a PostgreSQL engine (see lib/backend.js). */
function pgWired() {
  return require('../lib/backend').postgresSupported(require('../binding.js'))
}

/**
 * Why the PostgreSQL half of a both-backends suite does not run, or null.
 * Throws under CI=true only when the addon can open PostgreSQL and the
 * server is missing (a build without PostgreSQL has nothing to test there).
 */
function postgresBackendSkipReason(env = process.env) {
  if (!pgWired()) return 'the native addon cannot open PostgreSQL yet (no postgresSupported())'
  return pgSkipReason(env)
}

let announced = false

/**
 * The backends a semantic suite runs on, for `describe.each(backends())('$name', …)`:
 * `{ name, options(tag?) }`, where options() gives fresh store options (a temp
 * SQLite file, or a fresh PostgreSQL schema). PostgreSQL is listed when it
 * can run (else the reason is printed once per process).
 */
function backends(env = process.env) {
  const { tempDb } = require('./helpers')
  const list = [{ name: 'sqlite', options: () => ({ path: tempDb() }) }]
  const why = postgresBackendSkipReason(env)
  if (why === null) list.push({ name: 'postgres', options: (tag) => pgOptions(tag) })
  else if (!announced) {
    announced = true
    console.warn(`PostgreSQL backend skipped: ${why}`)
  }
  return list
}

module.exports = {
  URL_ENV,
  psqlPath,
  sql,
  pgSkipReason,
  pgUrl,
  pgSchema,
  pgOptions,
  dropSchemas,
  pgWired,
  postgresBackendSkipReason,
  backends,
}
