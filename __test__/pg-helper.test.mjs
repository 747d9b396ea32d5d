// The PostgreSQL test helper (__test__/pg.js): skip reasons (a failure under
// CI=true), fresh schemas dropped after, and backends() for suites that run
// on both stores. The server parts need DURABLY_TEST_PG_URL (.ci/run sets it).
import { afterAll, describe, expect, it } from 'vitest'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const pg = require('./pg.js')
const { spawnNode } = require('./helpers.js')

afterAll(() => pg.dropSchemas())

const serverSkip = pg.pgSkipReason() // throws here under CI=true without a server
if (serverSkip) console.warn(`pg-helper: server tests skipped: ${serverSkip}`)

describe('skip reasons', () => {
  it('no URL: a reason naming DURABLY_TEST_PG_URL; under CI=true an error instead', () => {
    expect(pg.pgSkipReason({})).toMatch(/DURABLY_TEST_PG_URL is not set/)
    expect(() => pg.pgSkipReason({ CI: 'true' })).toThrow(/need a server under CI: DURABLY_TEST_PG_URL is not set/)
  })

  it('a URL where no server answers: a reason; under CI=true an error', () => {
    const url = 'postgres://postgres@127.0.0.1:1/postgres?connect_timeout=2'
    if (!pg.psqlPath()) {
      expect(pg.pgSkipReason({ DURABLY_TEST_PG_URL: url })).toMatch(/no psql/)
      return
    }
    expect(pg.pgSkipReason({ DURABLY_TEST_PG_URL: url })).toMatch(/does not answer/)
    expect(() => pg.pgSkipReason({ DURABLY_TEST_PG_URL: url, CI: 'true' })).toThrow(/need a server under CI/)
  })

  it('backends(): SQLite always; PostgreSQL exactly when the addon is wired and the server answers', () => {
    const names = pg.backends().map((b) => b.name)
    expect(names[0]).toBe('sqlite')
    const pgRuns = pg.pgWired() && serverSkip === null
    expect(names.includes('postgres')).toBe(pgRuns)
    if (!pg.pgWired()) {
      expect(pg.postgresBackendSkipReason({ CI: 'true' })).toMatch(/cannot open PostgreSQL yet/)
    }
  })

  it('schema names are unique, valid for the engine and tagged', () => {
    const { checkSchemaName } = require('../lib/backend')
    const a = pg.pgSchema('Some-Tag')
    const b = pg.pgSchema('Some-Tag')
    expect(a).not.toBe(b)
    expect(a).toMatch(/^durably_t_some_tag_[0-9a-f]{12}$/)
    expect(checkSchemaName(a)).toBe(a)
    expect(checkSchemaName(pg.pgSchema('x'.repeat(100)))).toBeTruthy()
  })
})

describe.skipIf(serverSkip)('on the test server', () => {
  const exists = (name) => pg.sql(pg.pgUrl(), `SELECT count(*) FROM pg_namespace WHERE nspname = '${name}'`) === '1'

  it('dropSchemas() drops the schemas handed out, with their tables', () => {
    const s = pg.pgSchema('drop')
    pg.sql(pg.pgUrl(), `CREATE SCHEMA "${s}"; CREATE TABLE "${s}".t (x int); INSERT INTO "${s}".t VALUES (1)`)
    expect(exists(s)).toBe(true)
    pg.dropSchemas()
    expect(exists(s)).toBe(false)
    pg.dropSchemas() // nothing left: no error
  })

  it('a process that exits without calling dropSchemas() still drops its schemas', async () => {
    const script = `
      const pg = require('./__test__/pg.js')
      const s = pg.pgSchema('exit')
      pg.sql(pg.pgUrl(), 'CREATE SCHEMA "' + s + '"')
      console.log(s)
    `
    const { exited, lines } = spawnNode('-e', [script])
    const { code, stderr } = await exited
    expect(stderr).toBe('')
    expect(code).toBe(0)
    expect(lines[0]).toMatch(/^durably_t_exit_/)
    expect(exists(lines[0])).toBe(false)
  })
})

describe('.ci/run', () => {
  it('starts PostgreSQL and exports DURABLY_TEST_PG_URL before npm test and before cargo test', async () => {
    const fs = await import('node:fs')
    const text = fs.readFileSync(new URL('../.ci/run', import.meta.url), 'utf8')
    const start = text.indexOf('scripts/test-pg.sh start')
    const evalEnv = text.indexOf('eval "$pg_env"')
    expect(start).toBeGreaterThan(0)
    expect(evalEnv).toBeGreaterThan(start)
    expect(text.indexOf('\nnpm test\n')).toBeGreaterThan(evalEnv)
    expect(text.indexOf('\ncargo test --features postgres\n')).toBeGreaterThan(evalEnv)
    expect(text).toMatch(/trap 'scripts\/test-pg\.sh stop/)
  })
})

describe('vitest.config.mjs: the semantic suites on both stores', () => {
  // The config as `npm test` loads it, in a child with a chosen environment:
  // the projects it defines, and what it printed.
  async function loadConfig(env) {
    const script = `import('./vitest.config.mjs').then((m) => console.log('projects ' + JSON.stringify(m.default.test.projects.map((p) => [p.test.name, p.test.include, p.test.env ?? null]))))`
    const clean = { ...process.env, DURABLY_TEST_PG_URL: '', CI: '', DURABLY_TEST_BACKEND: '' }
    const { exited, lines } = spawnNode('-e', [script], { env: { ...clean, ...env } })
    const { code, stderr } = await exited
    const line = lines.find((l) => l.startsWith('projects '))
    return { code, stderr, projects: line ? JSON.parse(line.slice(9)) : null }
  }

  it('no server: only the sqlite project, with the reason printed; under CI=true loading the config fails', async () => {
    const local = await loadConfig({})
    expect(local.code).toBe(0)
    expect(local.projects.map(([name]) => name)).toEqual(['sqlite'])
    expect(local.stderr).toMatch(/PostgreSQL runs of the semantic suites are skipped: DURABLY_TEST_PG_URL is not set/)
    const ci = await loadConfig({ CI: 'true' })
    expect(ci.code).not.toBe(0)
    expect(ci.projects).toBeNull()
    expect(ci.stderr).toMatch(/PostgreSQL tests need a server under CI: DURABLY_TEST_PG_URL is not set/)
  })

  it.skipIf(!!serverSkip)('with a server: a postgres project over existing suites, with DURABLY_TEST_BACKEND=postgres', async () => {
    const fs = await import('node:fs')
    const { code, projects } = await loadConfig({ DURABLY_TEST_PG_URL: pg.pgUrl(), CI: 'true' })
    expect(code).toBe(0)
    expect(projects.map(([name]) => name)).toEqual(['sqlite', 'postgres'])
    const [, include, env] = projects[1]
    expect(env).toEqual({ DURABLY_TEST_BACKEND: 'postgres' })
    expect(include.length).toBeGreaterThanOrEqual(10)
    for (const f of include) expect(fs.existsSync(new URL(`../${f}`, import.meta.url)), f).toBe(true)
  })
})

describe('__test__/global-setup.mjs with two projects', () => {
  it('one temp root for the whole run, not one nested in another per project (socket paths must stay short)', async () => {
    const path = await import('node:path')
    const tmp = process.env.TMPDIR
    expect(path.basename(tmp)).toMatch(/^vitest-durably-/)
    expect(path.basename(path.dirname(tmp))).not.toMatch(/^vitest-durably-/)
    expect(process.env.DURABLY_VITEST_TMPDIR).toBe(tmp)
  })
})
