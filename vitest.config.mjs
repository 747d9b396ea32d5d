import { createRequire } from 'node:module'
import { defineConfig } from 'vitest/config'

const require = createRequire(import.meta.url)

// The suites about semantics (what the public API does, whatever the store)
// run twice: project `sqlite` (every suite) and project `postgres` (these,
// with DURABLY_TEST_BACKEND=postgres: makeDurably() and testStore() in
// __test__/helpers.js open a fresh schema per instance on DURABLY_TEST_PG_URL,
// dropped after each file by __test__/pg-setup.mjs). A case that cannot apply
// to PostgreSQL (it reads the SQLite file, calls a SQLite-only synchronous
// addon path) is skipped there by `onPostgres` from helpers.js, with the reason
// in its title. Not listed: suites about one store's file or process model
// (cli, fault/*, backend, readme, package, browser*), pure units with fake
// engines (runner, watch, react-store, types, exports), option messages
// checked before any store opens (messages), and the CPU-per-op counts
// (crossings). backends/listen/fault/pg pick their stores themselves.
export const POSTGRES_SUITES = [
  'api.test.mjs',
  'client.test.mjs',
  'engine.test.mjs',
  'events.test.mjs',
  'http-auth.test.js',
  'http-fuzz.test.js',
  'http-ui.test.mjs',
  'http.test.js',
  'processing.test.mjs',
  'protocol.test.mjs',
  'react.test.mjs',
  'runs.test.mjs',
  'shutdown.test.mjs',
  'ui.test.mjs',
  'values.test.js',
  'vocabulary.test.mjs',
].map((f) => `__test__/${f}`)

// Whether the PostgreSQL project runs: a server must answer at
// DURABLY_TEST_PG_URL. Under CI=true a missing server throws here, so
// `npm test` fails; elsewhere the project is left out with the reason printed.
function postgresProject() {
  if (process.env.DURABLY_TEST_BACKEND === 'postgres') {
    // The old way (the whole selection on PostgreSQL): one project, as asked.
    return null
  }
  const why = require('./__test__/pg.js').postgresBackendSkipReason()
  if (why !== null) {
    console.warn(`vitest: the PostgreSQL runs of the semantic suites are skipped: ${why}`)
    return null
  }
  return {
    extends: true,
    test: {
      name: 'postgres',
      include: POSTGRES_SUITES,
      env: { DURABLY_TEST_BACKEND: 'postgres' },
      setupFiles: ['__test__/pg-setup.mjs'],
    },
  }
}

const pg = postgresProject()

export default defineConfig({
  test: {
    // Native addons and temp files stay in their own process per suite.
    pool: 'forks',
    globalSetup: ['__test__/global-setup.mjs'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    projects: [
      { extends: true, test: { name: 'sqlite', include: ['__test__/**/*.test.{js,mjs,ts}'] } },
      ...(pg ? [pg] : []),
    ],
  },
})
