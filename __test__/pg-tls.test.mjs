// TLS to PostgreSQL (issue 16): a server of this suite's own with ssl=on and
// a certificate signed by a CA made here (openssl CLI), next to the plain
// test server (DURABLY_TEST_PG_URL). Each sslmode connects or is refused as
// libpq's would, and both the pool's and the LISTEN connection are
// encrypted (the server's pg_stat_ssl says so). Without PostgreSQL binaries
// or openssl the suite skips with the reason, except under CI=true.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createRequire } from 'node:module'
import { execFileSync, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const require = createRequire(import.meta.url)
const { createDurably, defineJob, DurablyError, ValidationError } = require('..')
const { pgWired, postgresBackendSkipReason, pgSchema, pgUrl, sql } = require('./pg.js')

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const TEST_PG = path.join(ROOT, 'scripts/test-pg.sh')

function haveTools() {
  const openssl = spawnSync('openssl', ['version'], { encoding: 'utf8' })
  if (openssl.status !== 0) return 'no openssl CLI'
  const bins = fs.existsSync('/usr/lib/postgresql')
    ? fs.readdirSync('/usr/lib/postgresql').filter((v) => fs.existsSync(`/usr/lib/postgresql/${v}/bin/initdb`))
    : []
  if (bins.length === 0 && process.getuid?.() !== 0) return 'no PostgreSQL server binaries (/usr/lib/postgresql/*/bin)'
  return null
}

const why = !pgWired() ? 'the addon has no PostgreSQL support' : (postgresBackendSkipReason() ?? haveTools())
if (why && process.env.CI === 'true' && pgWired()) throw new Error(`pg-tls.test needs PostgreSQL and openssl under CI: ${why}`)
if (why) console.warn(`pg-tls.test: skipped: ${why}`)

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pg-tls-'))
const state = path.join(dir, 'server.env')
let tlsPort = null

function openssl(...args) {
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] })
}

/** A CA (`name`.pem/.key) and, signed by it, a server certificate for `names` (SAN entries). */
function makeCa(name) {
  openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', `${name}.key`, '-out', `${name}.pem`, '-days', '2', '-subj', `/CN=durably test ${name}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign')
}

function makeServerCert(ca, san) {
  openssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=localhost')
  fs.writeFileSync(path.join(dir, 'server.ext'),
    `subjectAltName=${san}\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n`)
  openssl('x509', '-req', '-in', 'server.csr', '-CA', `${ca}.pem`, '-CAkey', `${ca}.key`, '-CAcreateserial',
    '-out', 'server.crt', '-days', '2', '-extfile', 'server.ext')
}

beforeAll(() => {
  if (why) return
  makeCa('ca')
  makeCa('other-ca') // trusted by nobody here: a wrong sslrootcert
  // Valid for localhost and 127.0.0.1, not for db.example.
  makeServerCert('ca', 'DNS:localhost,IP:127.0.0.1')
  const out = execFileSync('bash', [TEST_PG, 'start'], {
    encoding: 'utf8',
    env: {
      ...process.env,
      DURABLY_PG_STATE: state,
      DURABLY_PG_PORT: process.env.DURABLY_TEST_PG_TLS_PORT ?? '54339',
      DURABLY_PG_SSL_DIR: dir,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  tlsPort = Number(/127\.0\.0\.1:(\d+)\//.exec(out)[1])
}, 120_000)

afterAll(() => {
  if (fs.existsSync(state)) spawnSync('bash', [TEST_PG, 'stop'], { env: { ...process.env, DURABLY_PG_STATE: state } })
  fs.rmSync(dir, { recursive: true, force: true })
})

const echo = defineJob({ name: 'echo', run: async (ctx, input) => ctx.run('twice', () => input.n * 2) })

/** A URL of the TLS server; `host` is checked against the certificate, the socket goes to 127.0.0.1. */
function tlsUrl(params, host = '127.0.0.1') {
  const q = new URLSearchParams(params)
  if (host !== '127.0.0.1') q.set('hostaddr', '127.0.0.1')
  return `postgres://postgres@${host}:${tlsPort}/postgres?${q}`
}

let appSeq = 0
const appName = () => `durably_tls_${process.pid}_${++appSeq}`

/** Opens durably on `url`, runs one job through it; returns the instance (started, not closed). */
async function roundTrip(url) {
  const d = createDurably({ url, schema: pgSchema('tls'), jobs: { echo }, pollingInterval: 50 })
  await d.init()
  d.start()
  const done = await d.jobs.echo.triggerAndWait({ n: 21 }, { timeout: 20_000 })
  expect(done.output).toBe(42)
  return d
}

/** `{ ssl, plain, listen }`: this application's server connections by encryption, and its LISTEN connection's. */
function connections(app) {
  const rows = sql(
    tlsUrl({ sslmode: 'disable' }),
    `SELECT s.ssl, a.query FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.application_name = '${app}'`,
  )
  const lines = rows === '' ? [] : rows.split('\n').map((l) => l.split('|'))
  return {
    ssl: lines.filter(([s]) => s === 't').length,
    plain: lines.filter(([s]) => s === 'f').length,
    // The listen connection's last statements (src/pg/listen.rs): the pid check, then pings.
    listen: lines.filter(([, q]) => q === 'SELECT pg_backend_pid()' || q === 'SELECT 1').map(([s]) => s === 't'),
  }
}

/** Waits until the LISTEN connection of `app` is up; returns connections(app). */
async function withListener(app) {
  const until = Date.now() + 20_000
  for (;;) {
    const c = connections(app)
    if (c.listen.length > 0 || Date.now() > until) return c
    await new Promise((r) => setTimeout(r, 50))
  }
}

function refusal(url) {
  try {
    createDurably({ url, schema: pgSchema('tls') })
  } catch (e) {
    return e
  }
  throw new Error(`createDurably accepted ${url}`)
}

/**
 * The error of the first call on `url` (createDurably itself does not
 * connect: the first call does, off the JS thread).
 */
async function connectRefusal(url) {
  const d = createDurably({ url, schema: pgSchema('tls') })
  try {
    await d.getRuns()
  } catch (e) {
    return e
  } finally {
    await d.close()
  }
  throw new Error(`connected to ${url}`)
}

// Schemas made on the TLS server go with the server; none is made on the plain one.
describe.skipIf(why)('PostgreSQL over TLS', () => {
  it('sslmode=require encrypts the pool and the LISTEN connection (certificate not checked)', async () => {
    const app = appName()
    const d = await roundTrip(tlsUrl({ sslmode: 'require', application_name: app }))
    try {
      const c = await withListener(app)
      expect(c.listen).toEqual([true])
      expect(c.ssl).toBeGreaterThanOrEqual(2) // a pooled connection and the listener
      expect(c.plain).toBe(0)
    } finally {
      await d.close()
    }
  })

  it('the default (prefer, as libpq) encrypts when the server offers TLS; disable never does', async () => {
    const preferApp = appName()
    const d = await roundTrip(tlsUrl({ application_name: preferApp }))
    try {
      const c = await withListener(preferApp)
      expect(c.listen).toEqual([true])
      expect(c.plain).toBe(0)
    } finally {
      await d.close()
    }
    const plainApp = appName()
    const p = await roundTrip(tlsUrl({ sslmode: 'disable', application_name: plainApp }))
    try {
      const c = await withListener(plainApp)
      expect(c.listen).toEqual([false])
      expect(c.ssl).toBe(0)
      expect(c.plain).toBeGreaterThanOrEqual(2)
    } finally {
      await p.close()
    }
  })

  it('verify-full with the CA as sslrootcert connects, to the IP and to a host name of the certificate', async () => {
    const ca = path.join(dir, 'ca.pem')
    for (const host of ['127.0.0.1', 'localhost']) {
      const app = appName()
      const d = await roundTrip(tlsUrl({ sslmode: 'verify-full', sslrootcert: ca, application_name: app }, host))
      try {
        const c = await withListener(app)
        expect(c.listen).toEqual([true])
        expect(c.plain).toBe(0)
      } finally {
        await d.close()
      }
    }
  })

  it('verify-full without the CA is refused: the certificate chains to no trusted root', async () => {
    for (const params of [{ sslmode: 'verify-full' }, { sslmode: 'verify-ca' }, { sslmode: 'verify-full', sslrootcert: 'system' }]) {
      const err = await connectRefusal(tlsUrl(params))
      expect(err).toBeInstanceOf(DurablyError)
      expect(err.code).toBe('DB_ERROR')
      expect(err.message).toMatch(/cannot connect to PostgreSQL/)
      expect(err.message).toMatch(/invalid peer certificate: UnknownIssuer/)
      expect(err.message).toMatch(/sslrootcert=<PEM file>/)
    }
    // Another CA's file is no better.
    for (const sslmode of ['verify-full', 'verify-ca', 'require']) {
      const err = await connectRefusal(tlsUrl({ sslmode, sslrootcert: path.join(dir, 'other-ca.pem') }))
      expect(err.message, sslmode).toMatch(/invalid peer certificate: UnknownIssuer/)
    }
  })

  it('verify-full checks the host name, verify-ca only the chain', async () => {
    const ca = path.join(dir, 'ca.pem')
    const err = await connectRefusal(tlsUrl({ sslmode: 'verify-full', sslrootcert: ca }, 'db.example'))
    expect(err.code).toBe('DB_ERROR')
    expect(err.message).toMatch(/invalid peer certificate: certificate not valid for name "db.example"/)
    expect(err.message).toMatch(/verify-full checks the url's host name/)
    const app = appName()
    const d = await roundTrip(tlsUrl({ sslmode: 'verify-ca', sslrootcert: ca, application_name: app }, 'db.example'))
    try {
      expect((await withListener(app)).listen).toEqual([true])
    } finally {
      await d.close()
    }
  })

  it('a server without TLS is refused by require, verify-ca and verify-full, and served by prefer', async () => {
    const plain = new URL(pgUrl())
    for (const sslmode of ['require', 'verify-ca', 'verify-full']) {
      plain.search = new URLSearchParams({ sslmode, sslrootcert: path.join(dir, 'ca.pem') }).toString()
      const err = await connectRefusal(plain.toString())
      expect(err.code, sslmode).toBe('DB_ERROR')
      expect(err.message, sslmode).toMatch(/server does not support TLS/)
      expect(err.message, sslmode).toMatch(/sslmode requires TLS/)
    }
    plain.search = new URLSearchParams({ sslmode: 'prefer' }).toString()
    const schema = pgSchema('tls')
    const d = createDurably({ url: plain.toString(), schema, jobs: { echo } })
    try {
      await d.init()
      expect(await d.getRuns()).toEqual([])
    } finally {
      await d.close()
      sql(pgUrl(), `DROP SCHEMA IF EXISTS "${schema}" CASCADE`)
    }
  })

  it('an unknown sslmode or an unusable sslrootcert is a clear error naming it', () => {
    const bad = refusal(tlsUrl({ sslmode: 'verify_full' }))
    expect(bad).toBeInstanceOf(ValidationError)
    expect(bad.message).toMatch(/unknown sslmode "verify_full"/)
    const missing = path.join(dir, 'missing.pem')
    const noFile = refusal(tlsUrl({ sslmode: 'verify-full', sslrootcert: missing }))
    expect(noFile).toBeInstanceOf(ValidationError)
    expect(noFile.message).toContain(`sslrootcert "${missing}": cannot read it`)
    const notPem = path.join(dir, 'server.ext')
    expect(refusal(tlsUrl({ sslmode: 'verify-full', sslrootcert: notPem })).message).toMatch(/holds no certificate/)
  })
})
