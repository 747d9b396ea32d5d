'use strict'
// `durably <command>`: argument parsing, opening the database file without
// migrating it and without a worker, and mapping failures to exit codes.

const fs = require('node:fs')
const { parseArgs } = require('node:util')
const { DurablyError } = require('../errors')
const { ENV_URL, DEFAULT_SCHEMA, redact } = require('../backend')
const { useColor, painter, toJson } = require('./format')
const { COMMANDS } = require('./commands')

/** Exit codes: the contract scripts rely on. */
const EXIT = { ok: 0, error: 1, usage: 2, notFound: 3, conflict: 4 }

const COMMON = {
  db: { type: 'string' },
  schema: { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
}

const MAIN_HELP = `durably — look at and operate durably runs in a database file

Usage: durably <command> [options] --db <file>     (or DURABLY_DB=<file>)
       durably <command> [options] --db postgres://user@host:port/db [--schema s]
                                   (or DURABLY_DATABASE_URL=postgres://…)

Commands:
  runs      list runs (newest first), filtered by status, job, labels
  show      one run with its steps (and their durations) and logs
  logs      a run's persisted logs; -f follows them
  retry     put failed or cancelled runs back to pending (same run)
  cancel    cancel pending or running runs (also those another process executes)
  delete    delete finished runs with their steps and logs
  purge     delete finished runs older than a duration
  stats     how many runs per status and job
  tail      follow runs as they change, also those of other processes

Every command takes --db <file or postgres:// URL>, --schema <name> (PostgreSQL
only, default durably), --json (machine-readable output) and --help.
It never starts a worker and never migrates the database.
Exit codes: 0 ok, 1 error, 2 usage, 3 not found, 4 conflict.`

class UsageError extends Error {}

/** Why the command failed → exit code (a DurablyError's code decides). */
function exitCodeOf(err) {
  if (err instanceof UsageError) return EXIT.usage
  if (err instanceof DurablyError) {
    if (err.code === 'NOT_FOUND') return EXIT.notFound
    if (err.code === 'CONFLICT') return EXIT.conflict
    if (err.code === 'VALIDATION_ERROR') return EXIT.usage
  }
  return EXIT.error
}

/**
 * Where the CLI looks: `--db`, else DURABLY_DB, else DURABLY_DATABASE_URL (a
 * PostgreSQL URL, as createDurably reads it). `--schema` only goes with a
 * PostgreSQL URL.
 */
function databaseOf(values, env) {
  const db = values.db || env.DURABLY_DB || env[ENV_URL] || ''
  if (!db) throw new UsageError(`no database given: pass --db <file or postgres:// URL> or set DURABLY_DB (or ${ENV_URL})`)
  const postgres = /^postgres(ql)?:\/\//i.test(db)
  if (values.schema !== undefined && !postgres) {
    throw new UsageError('--schema applies to a PostgreSQL database only: pass --db postgres://… (or set DURABLY_DATABASE_URL)')
  }
  return { db, postgres }
}

/** Opens an existing durably database as it is: no migration, no worker, no jobs. */
async function openDatabase({ db, postgres }, schema) {
  const { createDurably } = require('../durably')
  let options
  let shown
  if (postgres) {
    options = { url: db }
    if (schema !== undefined) options.schema = schema
    shown = `${redact(db)} (schema ${schema ?? DEFAULT_SCHEMA})`
  } else {
    let st
    try {
      st = fs.statSync(db)
    } catch {
      throw new CliError(`no database file at ${db}`, EXIT.error)
    }
    if (!st.isFile()) throw new CliError(`${db} is not a file`, EXIT.error)
    options = { path: db }
    shown = db
  }
  let d
  try {
    // A bad URL or schema name is the user's to fix (exit 2), as the option message says.
    d = createDurably(options)
  } catch (err) {
    if (err && err.code === 'VALIDATION_ERROR') throw new UsageError(err.message.replace(/^option url/, '--db').replace(/^option schema/, '--schema'))
    throw err
  }
  try {
    await d._useExistingSchema()
  } catch (err) {
    await d.close().catch(() => {})
    const why = err && err.code === 'SCHEMA_MISMATCH' ? err.message.replace(/^the database/, '') : `: ${err.message}`
    throw new CliError(`cannot open ${shown}${err.code === 'SCHEMA_MISMATCH' ? ':' : ''}${why}`, EXIT.error, err)
  }
  return d
}

/** A failure with its own exit code and message. */
class CliError extends Error {
  constructor(message, exitCode, cause) {
    super(message, cause ? { cause } : undefined)
    this.exitCode = exitCode
  }
}

/**
 * Runs the CLI with `argv` (without node and script); resolves with the exit
 * code. `io` = { stdout, stderr, env } for tests.
 */
async function main(argv, io = {}) {
  const stdout = io.stdout ?? process.stdout
  const stderr = io.stderr ?? process.stderr
  const env = io.env ?? process.env
  const out = (s) => stdout.write(`${s}\n`)
  const paintErr = painter(useColor(stderr, env))
  const fail = (message, code, json) => {
    if (json) out(toJson({ error: message, exitCode: code }))
    else stderr.write(`${paintErr.red('error:')} ${message}\n`)
    return code
  }

  const [name, ...rest] = argv
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    const topic = name === 'help' ? rest[0] : undefined
    if (topic && COMMANDS[topic]) {
      out(COMMANDS[topic].help)
      return EXIT.ok
    }
    if (topic) return fail(`unknown command ${JSON.stringify(topic)} (see durably --help)`, EXIT.usage, false)
    ;(name === undefined ? stderr : stdout).write(`${MAIN_HELP}\n`)
    return name === undefined ? EXIT.usage : EXIT.ok
  }
  if (name === '--version' || name === '-v') {
    out(require('../../package.json').version)
    return EXIT.ok
  }
  const cmd = COMMANDS[name]
  const wantsJson = rest.includes('--json')
  if (!cmd) return fail(`unknown command ${JSON.stringify(name)} (see durably --help)`, EXIT.usage, wantsJson)

  let args
  try {
    args = parseArgs({ args: rest, options: { ...COMMON, ...cmd.options }, allowPositionals: true, strict: true })
  } catch (err) {
    return fail(`${err.message.replace(/\. To specify a positional.*$/s, '')}\n\n${cmd.usage}\n(see durably ${name} --help)`, EXIT.usage, wantsJson)
  }
  const { values, positionals } = args
  if (values.help) {
    out(cmd.help)
    return EXIT.ok
  }
  const json = !!values.json
  const paint = painter(!json && useColor(stdout, env))
  let durably
  try {
    cmd.check?.(values, positionals, UsageError)
    durably = await openDatabase(databaseOf(values, env), values.schema)
    const code = await cmd.run({ durably, values, positionals, json, out, paint, stderr, UsageError, signal: io.signal })
    return typeof code === 'number' ? code : EXIT.ok
  } catch (err) {
    if (err instanceof UsageError) return fail(`${err.message}\n\n${cmd.usage}`, EXIT.usage, json)
    if (err instanceof CliError) return fail(err.message, err.exitCode, json)
    const code = exitCodeOf(err)
    return fail(err && err.message ? err.message : String(err), code, json)
  } finally {
    if (durably) await durably.close().catch(() => {})
  }
}

module.exports = { main, EXIT, exitCodeOf, COMMON }
