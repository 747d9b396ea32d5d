// Connecting to PostgreSQL happens off the JS thread (issue 16):
// createDurably({ url }) returns at once, the first awaited call (or a
// subscribe's first read) waits for the connection and the TLS handshake on
// the engine's runtime, and a 10 ms timer keeps ticking meanwhile. The server
// is made slow to accept by a TCP proxy in front of it that connects each
// new client to the server only after a delay (the handshake waits). A
// server that cannot be reached is reported by that first call, clearly,
// and a worker that loses it by `worker:error`.
import net from 'node:net'
import { afterAll, describe, expect, it } from 'vitest'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const { createDurably, defineJob } = require('..')
const { postgresBackendSkipReason, pgOptions, pgSchema, pgUrl, dropSchemas, sql } = require('./pg.js')
const { until } = require('./helpers.js')
const { startProxy } = require('./pg-proxy.js')

const why = postgresBackendSkipReason()
if (why) console.warn(`pg-connect.test: PostgreSQL skipped: ${why}`)

afterAll(() => dropSchemas())

const echo = defineJob({
  name: 'echo',
  run: async (ctx, input) => ctx.run('twice', () => input.n * 2),
})

const ACCEPT_DELAY = 1500

/** A loopback port nothing listens on. */
async function closedPort() {
  const srv = net.createServer()
  await new Promise((r) => srv.listen(0, '127.0.0.1', r))
  const { port } = srv.address()
  await new Promise((r) => srv.close(r))
  return port
}

/** Counts 10 ms ticks while `fn` runs; resolves with { value, ticks, took }. */
async function ticking(fn) {
  let ticks = 0
  const timer = setInterval(() => ticks++, 10)
  const t0 = Date.now()
  try {
    const value = await fn()
    return { value, ticks, took: Date.now() - t0 }
  } finally {
    clearInterval(timer)
  }
}

describe.skipIf(why)('PostgreSQL connection setup', () => {
  it('createDurably returns at once; the first call connects off the JS thread while the server is slow to accept', async () => {
    const proxy = await startProxy(pgUrl())
    proxy.delayAccept(ACCEPT_DELAY)
    let d
    try {
      const t0 = Date.now()
      d = createDurably({ url: proxy.url, schema: pgSchema('connect'), jobs: { echo } })
      // Before: the constructor connected on this thread (≥ ACCEPT_DELAY).
      expect(Date.now() - t0).toBeLessThan(ACCEPT_DELAY / 2)
      const { value, ticks, took } = await ticking(() => d.getRuns())
      expect(value).toEqual([])
      // The call really waited for the slow server (else this proves nothing) …
      expect(took).toBeGreaterThanOrEqual(ACCEPT_DELAY * 0.8)
      // … and the timer ran meanwhile (a block of the JS thread allows at most one late tick).
      expect(ticks).toBeGreaterThanOrEqual(Math.floor((ACCEPT_DELAY * 0.8) / 10 / 3))
      // The instance works as usual afterwards.
      await d.start()
      const run = await d.jobs.echo.triggerAndWait({ n: 21 }, { timeout: 20_000 })
      expect(run.output).toBe(42)
    } finally {
      await d?.close()
      await proxy.close()
    }
  }, 60_000)

  it('subscribe as the first call returns its stream at once; its first read waits for the connection', async () => {
    const proxy = await startProxy(pgUrl())
    proxy.delayAccept(ACCEPT_DELAY)
    const d = createDurably({ url: proxy.url, schema: pgSchema('connect'), jobs: { echo } })
    try {
      const t0 = Date.now()
      const reader = d.subscribe('01NOSUCHRUN0000000000000000').getReader()
      expect(Date.now() - t0).toBeLessThan(ACCEPT_DELAY / 2)
      const { value: outcome, ticks, took } = await ticking(() => reader.read().then(() => 'read', (e) => e.code))
      expect(outcome).toBe('NOT_FOUND')
      expect(took).toBeGreaterThanOrEqual(ACCEPT_DELAY * 0.8)
      expect(ticks).toBeGreaterThanOrEqual(Math.floor((ACCEPT_DELAY * 0.8) / 10 / 3))
    } finally {
      await d.close()
      await proxy.close()
    }
  }, 60_000)

  it('a server that cannot be reached fails the first call (and a subscribe read) with a clear error, not the constructor', async () => {
    const url = new URL(pgUrl())
    url.port = String(await closedPort())
    const d = createDurably({ url: url.toString(), schema: pgSchema('connect'), jobs: { echo }, busyTimeout: 2000 })
    try {
      await expect(d.getRuns()).rejects.toMatchObject({ code: 'DB_ERROR', message: expect.stringMatching(/cannot connect to PostgreSQL/) })
      const reader = d.subscribe('01NOSUCHRUN0000000000000000').getReader()
      await expect(reader.read()).rejects.toMatchObject({ message: expect.stringMatching(/cannot connect to PostgreSQL/) })
      await expect(d.init()).rejects.toThrow(/cannot connect to PostgreSQL/)
    } finally {
      await d.close()
    }
  }, 60_000)

  it('a database or user the server refuses is a failure to connect, named by the server', async () => {
    for (const [part, value, said] of [
      ['pathname', '/durably_no_such_db', /cannot connect to PostgreSQL: database "durably_no_such_db" does not exist \[3D000\]/],
      ['username', 'durably_no_such_role', /cannot connect to PostgreSQL: role "durably_no_such_role" does not exist \[28000\]/],
    ]) {
      const url = new URL(pgUrl())
      url[part] = value
      const d = createDurably({ url: url.toString(), schema: pgSchema('connect') })
      try {
        await expect(d.getRuns()).rejects.toMatchObject({ code: 'DB_ERROR', message: expect.stringMatching(said) })
      } finally {
        await d.close()
      }
    }
  })

  it('a bad url still fails in createDurably, naming the problem', () => {
    expect(() => createDurably({ url: 'postgres://a@b:notaport/x', jobs: { echo } })).toThrow(/url/)
  })

  it('a started worker that loses the server reports it with worker:error', async () => {
    const proxy = await startProxy(pgUrl())
    const opts = pgOptions('connect')
    const d = createDurably({ url: proxy.url, schema: opts.schema, jobs: { echo }, pollingInterval: 50, busyTimeout: 1000 })
    const errors = []
    d.on('worker:error', (e) => errors.push(e.error))
    try {
      await d.init()
      // From now on the server is unreachable: new connections are refused, open ones cut.
      proxy.refuse()
      await d.jobs.echo.trigger({ n: 1 }).catch(() => {})
      const until = Date.now() + 20_000
      while (!errors.some((e) => /cannot connect to PostgreSQL/.test(e.message)) && Date.now() < until) {
        await new Promise((r) => setTimeout(r, 50))
      }
      expect(errors.map((e) => e.message).join('\n')).toMatch(/cannot connect to PostgreSQL/)
    } finally {
      await d.close().catch(() => {})
      await proxy.close()
    }
  }, 60_000)

  it('a read whose session the server ended (its FATAL not read yet) is made again on a fresh connection', async () => {
    const app = `durably_lost_${process.pid}`
    const target = new URL(pgUrl())
    target.searchParams.set('application_name', app)
    const proxy = await startProxy(target.toString())
    const d = createDurably({ url: proxy.url, schema: pgSchema('lost'), jobs: { echo } })
    try {
      await d.migrate()
      const run = await d.jobs.echo.trigger({ n: 1 })
      expect((await d.getRun(run.id)).status).toBe('pending')
      // The server ends every session of this instance; the proxy holds back
      // what it said until the next request has gone out on one of them.
      proxy.hold()
      expect(Number(sql(pgUrl(), `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = '${app}'`))).toBeGreaterThan(0)
      await until(() => Number(sql(pgUrl(), `SELECT count(*) FROM pg_stat_activity WHERE application_name = '${app}'`)) === 0, {
        timeout: 20_000,
        every: 50,
        what: 'the sessions to end on the server',
      })
      const read = d.getRun(run.id).then(
        (r) => r,
        (e) => e,
      )
      // (its statement prepared, or bound with the run's id)
      await until(() => proxy.sawHeld('SELECT runs.id') || proxy.sawHeld(run.id), {
        timeout: 20_000,
        what: 'the read on a terminated session',
      })
      proxy.release()
      // Before: DB_ERROR "terminating connection due to administrator command".
      const got = await read
      expect(got).toMatchObject({ id: run.id, status: 'pending' })
    } finally {
      proxy.release()
      await d.close()
      await proxy.close()
    }
  }, 60_000)
})
