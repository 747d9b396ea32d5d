// @coji/durably 0.15 on its PostgreSQL dialect (kysely's PostgresDialect +
// node-postgres) behind the interface of bench/scenario.js (see makeOurs
// there), for `npm run bench -- --backend postgres`. The library's defaults
// (polling every 1000 ms, preserveSteps false…); `url` is a fresh database
// on the bench's server, made by scenario.js.

import fs from 'node:fs'
import { createRequire } from 'node:module'
import pg from 'pg'
import { PostgresDialect } from 'kysely'
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
    driver: `pg ${versionOf('pg')}`,
    kysely: versionOf('kysely'),
  }
}

/**
 * jobs: { key: { name, input: (z) => schema, run: async (ctx, input) => output } }
 */
export function create({ url, maxConcurrentRuns = 1, jobs }) {
  if (!url) throw new Error('the PostgreSQL adapter needs a url')
  // One connection per run in flight plus the worker's own, like a tuned app.
  const pool = new pg.Pool({ connectionString: url, max: Math.max(4, maxConcurrentRuns + 2) })
  const defs = {}
  for (const [key, j] of Object.entries(jobs)) {
    defs[key] = defineJob({ name: j.name, input: j.input(z), run: j.run })
  }
  const d = createDurably({ dialect: new PostgresDialect({ pool }), maxConcurrentRuns, jobs: defs })
  return {
    info: { backend: 'postgres', pool: pool.options.max },
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
