// @coji/durably 0.15 + better-sqlite3 12 behind the interface of
// bench/scenario.js (see makeOurs there). WAL and the library's defaults
// (polling every 1000 ms, preserveSteps false…); `synchronous` is set like
// ours so both sides commit with the same durability, and the driver's own
// default is reported.

import fs from 'node:fs'
import { createRequire } from 'node:module'
import Database from 'better-sqlite3'
import { SqliteDialect } from 'kysely'
import { createDurably, defineJob } from '@coji/durably'
import { z } from 'zod'

const require = createRequire(import.meta.url)

function versionOf(pkg) {
  const dir = new URL(`./node_modules/${pkg}/package.json`, import.meta.url)
  try {
    return JSON.parse(fs.readFileSync(dir, 'utf8')).version
  } catch {
    return require(`${pkg}/package.json`).version
  }
}

export const impl = 'upstream'

export function describe() {
  return {
    impl,
    library: `@coji/durably ${versionOf('@coji/durably')}`,
    driver: `better-sqlite3 ${versionOf('better-sqlite3')}`,
    kysely: versionOf('kysely'),
  }
}

/**
 * jobs: { key: { name, input: (z) => schema, run: async (ctx, input) => output } }
 */
export function create({ path, synchronous = 'normal', maxConcurrentRuns = 1, jobs }) {
  const sqlite = new Database(path)
  sqlite.pragma('journal_mode = WAL')
  const defaultSynchronous = sqlite.pragma('synchronous', { simple: true })
  sqlite.pragma(`synchronous = ${synchronous === 'full' ? 'FULL' : 'NORMAL'}`)
  const sqliteVersion = sqlite.prepare('select sqlite_version()').pluck().get()
  const defs = {}
  for (const [key, j] of Object.entries(jobs)) {
    defs[key] = defineJob({ name: j.name, input: j.input(z), run: j.run })
  }
  const d = createDurably({ dialect: new SqliteDialect({ database: sqlite }), maxConcurrentRuns, jobs: defs })
  return {
    info: { defaultSynchronous, synchronous: sqlite.pragma('synchronous', { simple: true }), sqliteVersion },
    job: (key) => d.jobs[key],
    batchItem: (input) => input,
    migrate: () => d.migrate(),
    start: () => d.start(),
    on: (type, fn) => d.on(type, fn),
    close: async () => {
      await d.stop()
      await d.db.destroy()
    },
  }
}
