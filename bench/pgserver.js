'use strict'
// The PostgreSQL server of `npm run bench -- --backend postgres`: fresh
// databases on it (one per scenario and library, dropped at exit), through
// the server's own psql, so the bench needs no PostgreSQL client of its own.

const fs = require('node:fs')
const path = require('node:path')
const crypto = require('node:crypto')
const { execFileSync } = require('node:child_process')

/** The first `psql` found: PATH, then Debian's /usr/lib/postgresql/<version>/bin. */
function psqlPath() {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (dir && fs.existsSync(path.join(dir, 'psql'))) return path.join(dir, 'psql')
  }
  let versions = []
  try {
    versions = fs.readdirSync('/usr/lib/postgresql').sort((a, b) => Number(b) - Number(a))
  } catch {}
  for (const v of versions) {
    const p = `/usr/lib/postgresql/${v}/bin/psql`
    if (fs.existsSync(p)) return p
  }
  return null
}

/** Runs SQL on the server at `url`; returns psql's unaligned output, trimmed. */
function sql(url, text) {
  const psql = psqlPath()
  if (!psql) throw new Error('no psql found (PATH, /usr/lib/postgresql/*/bin): scripts/test-pg.sh installs PostgreSQL')
  return execFileSync(psql, ['-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-d', url, '-c', text], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    timeout: 60_000,
  }).trim()
}

/** `url` with its database replaced by `db`. */
function withDatabase(url, db) {
  const u = new URL(url)
  u.pathname = `/${db}`
  return u.toString()
}

const made = []

/** A new empty database on the server of `url`; returns its URL. Dropped at exit. */
function freshDatabase(url, tag = 'bench') {
  const name = `durably_${tag}_${crypto.randomBytes(5).toString('hex')}`
  sql(url, `CREATE DATABASE ${name}`)
  made.push({ url, name })
  return withDatabase(url, name)
}

function dropDatabases() {
  for (const { url, name } of made.splice(0)) {
    try {
      sql(url, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
    } catch (e) {
      process.stderr.write(`bench: could not drop database ${name}: ${e.message}\n`)
    }
  }
}

process.once('exit', dropDatabases)

module.exports = { psqlPath, sql, withDatabase, freshDatabase, dropDatabases }
