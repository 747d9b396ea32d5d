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

/**
 * A client certificate `name`.crt for role `cn`, signed by `ca`, with its
 * unencrypted key `name`.key: `ec` (PKCS#8) or `rsa` (PKCS#1, "RSA PRIVATE KEY").
 */
function makeClientCert(ca, name, cn, kind = 'ec') {
  if (kind === 'rsa') openssl('genrsa', '-traditional', '-out', `${name}.key`, '2048')
  else openssl('genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-out', `${name}.key`)
  openssl('req', '-new', '-key', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`)
  fs.writeFileSync(path.join(dir, `${name}.ext`), 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n')
  openssl('x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.pem`, '-CAkey', `${ca}.key`, '-CAcreateserial',
    '-out', `${name}.crt`, '-days', '2', '-extfile', `${name}.ext`)
}

beforeAll(() => {
  if (why) return
  makeCa('ca')
  makeCa('other-ca') // trusted by nobody here: a wrong sslrootcert
  // Valid for localhost and 127.0.0.1, not for db.example.
  makeServerCert('ca', 'DNS:localhost,IP:127.0.0.1')
  // The server trusts ca.pem for client certificates: role durably_cert must show one (scripts/test-pg.sh).
  makeClientCert('ca', 'client', 'durably_cert')
  makeClientCert('ca', 'client-rsa', 'durably_cert', 'rsa')
  makeClientCert('other-ca', 'stranger', 'durably_cert')
  openssl('pkey', '-in', 'client.key', '-out', 'client-enc.key', '-aes256', '-passout', 'pass:secret')
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
  sql(tlsUrl({ sslmode: 'disable' }), 'CREATE ROLE durably_cert LOGIN SUPERUSER')
}, 120_000)

afterAll(() => {
  if (fs.existsSync(state)) spawnSync('bash', [TEST_PG, 'stop'], { env: { ...process.env, DURABLY_PG_STATE: state } })
  fs.rmSync(dir, { recursive: true, force: true })
})

const echo = defineJob({ name: 'echo', run: async (ctx, input) => ctx.run('twice', () => input.n * 2) })

/** A URL of the TLS server; `host` is checked against the certificate, the socket goes to 127.0.0.1. */
function tlsUrl(params, host = '127.0.0.1', user = 'postgres') {
  const q = new URLSearchParams(params)
  if (host !== '127.0.0.1') q.set('hostaddr', '127.0.0.1')
  return `postgres://${user}@${host}:${tlsPort}/postgres?${q}`
}

/** A URL for role durably_cert, which the server lets in only with a client certificate signed by ca.pem. */
const certUrl = (params) => tlsUrl(params, '127.0.0.1', 'durably_cert')
const file = (name) => path.join(dir, name)

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
    // The listen connection's last statements (src/pg/listen.rs): the pid check, then pings, and while its worker
    // has a free slot the registration for wake-ups (LISTEN in it, UNLISTEN to end it) and its renewal as the ping.
    listen: lines.filter(([, q]) => isListenStatement(q)).map(([s]) => s === 't'),
  }
}

/** Whether `q` is a statement only the listen connection sends. */
function isListenStatement(q) {
  return q === 'SELECT pg_backend_pid()' || q === 'SELECT 1' || /^(BEGIN; )?(UN)?LISTEN |^UPDATE wakers /.test(q)
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

  it('a client certificate (sslcert + sslkey, PKCS#8 or PKCS#1 key) logs in a role that requires one, on every connection', async () => {
    for (const name of ['client', 'client-rsa']) {
      const app = appName()
      const d = await roundTrip(certUrl({ sslmode: 'verify-full', sslrootcert: file('ca.pem'), sslcert: file(`${name}.crt`), sslkey: file(`${name}.key`), application_name: app }))
      try {
        const c = await withListener(app)
        expect(c.listen).toEqual([true])
        expect(c.plain).toBe(0)
        // Every connection of this app (pool and listener) showed the certificate.
        const dns = sql(
          tlsUrl({ sslmode: 'disable' }),
          `SELECT DISTINCT s.client_dn FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.application_name = '${app}'`,
        )
        expect(dns.trim(), name).toBe('/CN=durably_cert')
      } finally {
        await d.close()
      }
    }
  })

  it('without a client certificate, or with one of another CA, the server refuses the role, saying why', async () => {
    const none = await connectRefusal(certUrl({ sslmode: 'require' }))
    expect(none.code).toBe('DB_ERROR')
    expect(none.message).toMatch(/cannot connect to PostgreSQL/)
    expect(none.message).toMatch(/connection requires a valid client certificate/)
    expect(none.message).toMatch(/sslcert=<PEM file>&sslkey=<PEM file>/)
    const stranger = await connectRefusal(certUrl({ sslmode: 'require', sslcert: file('stranger.crt'), sslkey: file('stranger.key') }))
    expect(stranger.code).toBe('DB_ERROR')
    expect(stranger.message).toMatch(/cannot connect to PostgreSQL/)
    expect(stranger.message).toMatch(/received fatal alert: UnknownCA/)
    expect(stranger.message).toMatch(/the server refused the client certificate/)
    // The same URL with the right certificate connects (the refusals above were about the certificate).
    const ok = createDurably({ url: certUrl({ sslmode: 'require', sslcert: file('client.crt'), sslkey: file('client.key') }), schema: pgSchema('tls') })
    try {
      expect(await ok.getRuns()).toEqual([])
    } catch (e) {
      expect(e.message).toMatch(/no durably schema|does not exist/) // connected: only the schema is missing
    } finally {
      await ok.close()
    }
  })

  it('client certificate options that cannot work are clear errors naming them, before any connection', () => {
    const only = refusal(certUrl({ sslcert: file('client.crt') }))
    expect(only).toBeInstanceOf(ValidationError)
    expect(only.message).toMatch(/sslcert needs sslkey/)
    expect(refusal(certUrl({ sslkey: file('client.key') })).message).toMatch(/sslkey needs sslcert/)
    const enc = refusal(certUrl({ sslcert: file('client.crt'), sslkey: file('client-enc.key') }))
    expect(enc).toBeInstanceOf(ValidationError)
    expect(enc.message).toContain(`sslkey "${file('client-enc.key')}": the key is encrypted, which is not supported`)
    expect(refusal(certUrl({ sslcert: file('client.crt'), sslkey: file('client.key'), sslpassword: 'secret' })).message).toMatch(/sslpassword is not supported/)
    const missing = refusal(certUrl({ sslcert: file('nope.crt'), sslkey: file('client.key') }))
    expect(missing.message).toContain(`sslcert "${file('nope.crt')}": cannot read it`)
    const swapped = refusal(certUrl({ sslcert: file('client.key'), sslkey: file('client.crt') }))
    expect(swapped.message).toMatch(/sslcert ".*client\.key": holds no certificate/)
    // A key that is not the certificate's.
    const mismatch = refusal(certUrl({ sslcert: file('client.crt'), sslkey: file('stranger.key') }))
    expect(mismatch).toBeInstanceOf(ValidationError)
    expect(mismatch.message).toMatch(/sslcert ".*client\.crt" and sslkey ".*stranger\.key" cannot be used together/)
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
