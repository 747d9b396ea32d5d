'use strict'
// The PostgreSQL server of `npm run bench -- --backend postgres`: fresh
// databases on it (one per scenario and library, dropped at exit), through
// the server's own psql, so the bench needs no PostgreSQL client of its own.

const crypto = require('node:crypto')

const { psqlPath, sql } = require('../scripts/psql.js')

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
