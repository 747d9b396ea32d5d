'use strict'
// The server's own `psql`, for the PostgreSQL test helpers (__test__/pg.js)
// and the bench's server (bench/pgserver.js): neither needs an npm client.

const fs = require('node:fs')
const path = require('node:path')
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

module.exports = { psqlPath, sql }
