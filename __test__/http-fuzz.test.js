// HTTP handler fuzz: a few thousand random and malformed requests (methods,
// paths, query strings, bodies, headers) against a real loopback server.
// Only 2xx/4xx answers, no unhandled rejection, and the process stays healthy.

import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import net from 'node:net'
import http from 'node:http'
import { z } from 'zod'
import durablyPkg from '../index.js'
import helpers from './helpers.js'
import httpHelpers from './http-helpers.js'

const { defineJob } = durablyPkg
const { makeDurably, closeAll, until, sleep } = helpers
const { startServer, call } = httpHelpers

const REQUESTS = 3000
const CONCURRENCY = 12
// The loop stops issuing requests after this long, so a loaded machine cannot
// push the suite past its budget; at least MIN_REQUESTS must have been made.
const BUDGET_MS = 15_000
const MIN_REQUESTS = 1000
const SEED = Number(process.env.FUZZ_SEED) || (Date.now() % 2 ** 31)

/** mulberry32: a small seeded PRNG so a failing run can be replayed with FUZZ_SEED. */
function prng(seed) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const jobs = {
  work: defineJob({ name: 'work', run: async (ctx, input) => input }),
  typed: defineJob({ name: 'typed', input: z.object({ n: z.number() }), run: async (ctx, i) => i.n }),
  slow: defineJob({
    name: 'slow',
    run: async (ctx) => {
      for (let i = 0; i < 3; i++) {
        await ctx.run(`s${i}`, () => sleep(5))
        ctx.progress(i + 1, 3)
        ctx.log.info('tick', { i })
      }
    },
  }),
  failing: defineJob({
    name: 'failing',
    run: async () => {
      throw new Error('nope')
    },
  }),
}

const rejections = []
const onRejection = (reason) => rejections.push(reason)
const workerErrors = []

let durably
let open
let scoped
const runIds = []

beforeAll(async () => {
  process.on('unhandledRejection', onRejection)
  durably = makeDurably({ jobs, maxConcurrentRuns: 4 })
  durably.on('worker:error', (e) => workerErrors.push(e.error))
  await durably.init()
  open = await startServer(durably, { sseThrottleMs: 20 })
  scoped = await startServer(durably, {
    auth: {
      authenticate(request) {
        const tenant = request.headers.get('x-tenant')
        if (tenant !== 'A' && tenant !== 'B') throw new Response('unauthorized', { status: 401 })
        return { tenant }
      },
      onTrigger: (ctx, req) => ({ ...req, labels: { ...req.labels, tenant: ctx.tenant } }),
      onRunAccess(ctx, run) {
        if (run.labels.tenant !== ctx.tenant) throw new Response(null, { status: 403 })
      },
      scopeRuns: (ctx, filter) => ({ ...filter, labels: { ...filter.labels, tenant: ctx.tenant } }),
    },
  })
  for (const [jobName, input, tenant] of [
    ['work', { a: 1 }, 'A'],
    ['failing', null, 'B'],
    ['slow', null, 'A'],
    ['typed', { n: 3 }, 'B'],
  ]) {
    const r = await call(scoped.url('/trigger'), { method: 'POST', body: { jobName, input }, headers: { 'x-tenant': tenant } })
    runIds.push(r.body.runId)
  }
})

afterAll(async () => {
  process.off('unhandledRejection', onRejection)
  agent.destroy()
  await open?.close()
  await scoped?.close()
  await closeAll()
})

function generator(rand) {
  const pick = (list) => list[Math.floor(rand() * list.length)]
  const chance = (p) => rand() < p
  const int = (n) => Math.floor(rand() * n)

  const weirdStrings = () => [
    '',
    ' ',
    'work',
    'typed',
    'nope',
    'pending',
    'running',
    'completed,failed',
    'bogus',
    '-1',
    '0',
    '1',
    '1.5',
    '1e3',
    '99999999999999999999',
    '9007199254740993',
    '日本語',
    '\u{1F600}'.repeat(int(50) + 1),
    'x'.repeat(int(3000)),
    '\u0000',
    '\u202e\u200b',
    '"quoted\\"',
    "'; DROP TABLE runs; --",
    '../../etc/passwd',
    '__proto__',
    'constructor',
    '01ZZZZZZZZZZZZZZZZZZZZZZZZ',
    runIds[0].toLowerCase(),
  ]
  const someString = () => (chance(0.3) ? pick(runIds) : pick(weirdStrings()))

  const queryValue = () => {
    if (chance(0.1)) return pick(['%', '%E0%A4%A', '%ED%A0%80', '%00', '%FF%FE', '%25%', '+', '&&', '=='])
    return encodeURIComponent(someString())
  }

  const queryKey = () =>
    chance(0.85)
      ? pick(['runId', 'runId', 'jobName', 'status', 'limit', 'offset', 'label.tenant', 'label.x', 'label.', 'label.__proto__', 'label.constructor'])
      : pick(['__proto__', 'constructor', 'toString', '', '%', 'a[b]', 'label..', encodeURIComponent('label.日本')])

  const ROUTES = {
    '/trigger': ['POST'],
    '/runs': ['GET'],
    '/run': ['GET', 'DELETE'],
    '/steps': ['GET'],
    '/subscribe': ['GET'],
    '/runs/subscribe': ['GET'],
    '/retry': ['POST'],
    '/retrigger': ['POST'],
    '/cancel': ['POST'],
  }
  const otherPath = () =>
    pick([
      '',
      '/',
      '//runs',
      '/RUNS',
      '/run/x',
      '/%2e%2e/runs',
      '/runs/subscribe/x',
      `/${encodeURIComponent('日本語')}`,
      `/${'a'.repeat(int(4000))}`,
      '/constructor',
      '/__proto__',
      '/hasOwnProperty',
      '/trigger%00',
      '/%',
      '/runs/../run',
      '/./runs',
    ])

  const jsonValue = (depth = 0) => {
    const k = int(depth > 3 ? 5 : 8)
    switch (k) {
      case 0:
        return null
      case 1:
        return chance(0.5)
      case 2:
        return pick([0, -1, 1.5, 1e308, -0, 2 ** 53 + 1])
      case 3:
        return someString()
      case 4:
        return pick([{}, [], ''])
      case 5:
        return Array.from({ length: int(4) }, () => jsonValue(depth + 1))
      default:
        return Object.fromEntries(Array.from({ length: int(4) }, () => [someString().slice(0, 20), jsonValue(depth + 1)]))
    }
  }

  const triggerLike = () => {
    const body = {}
    if (chance(0.9)) body.jobName = chance(0.7) ? pick(['work', 'typed', 'slow', 'failing', 'nope']) : jsonValue(2)
    if (chance(0.8)) body.input = chance(0.5) ? { n: chance(0.5) ? int(100) : someString() } : jsonValue()
    if (chance(0.2)) body.idempotencyKey = chance(0.7) ? someString() : jsonValue(3)
    if (chance(0.2)) body.concurrencyKey = chance(0.7) ? someString() : jsonValue(3)
    if (chance(0.15)) body.coalesce = pick(['skip', 'merge', null, 1, true])
    if (chance(0.3)) {
      body.labels = chance(0.7)
        ? Object.fromEntries(Array.from({ length: int(3) }, () => [someString().slice(0, 40), someString()]))
        : jsonValue(2)
    }
    if (chance(0.05)) body[someString().slice(0, 10) || 'x'] = jsonValue(2)
    return body
  }

  const body = () => {
    const k = int(20)
    if (k < 10) return JSON.stringify(triggerLike())
    if (k < 12) return JSON.stringify(jsonValue())
    if (k < 15) {
      return pick([
        '{',
        '{"jobName":',
        '{"jobName":"work","input":}',
        'null',
        '[]',
        'true',
        '"work"',
        '{"jobName":"work"}garbage',
        '\u0000',
        '\ufeff{"jobName":"work","input":1}',
        '{"jobName":"work","input":"\\ud800"}',
        '{"jobName":"work","input":"\\u0000"}',
        '{"__proto__":{"jobName":"work"}}',
        '{"jobName":"work","labels":{"__proto__":"x"}}',
        '{"jobName":"work","jobName":"typed","input":{"n":1}}',
        `{"jobName":"work","input":${'['.repeat(int(2000))}${']'.repeat(int(2000))}}`,
        `{"jobName":"work","input":${'{"a":'.repeat(150)}1${'}'.repeat(150)}}`,
      ])
    }
    if (k < 17) return Buffer.from(Array.from({ length: int(64) + 1 }, () => int(256)))
    if (k < 19) {
      // Huge values, mostly refused (an unknown job or a wrong type) so that
      // later GET /runs answers stay small.
      const huge = pick(['é', '\u{1F600}', 'x']).repeat(int(100_000))
      return JSON.stringify(chance(0.9) ? { jobName: pick(['nope', 'typed']), input: { n: huge } } : { jobName: 'work', input: huge })
    }
    return chance(0.3) ? JSON.stringify({ jobName: 'work', input: 'x'.repeat(1_100_000) }) : ''
  }

  return () => {
    let method
    let path
    if (chance(0.85)) {
      path = pick(Object.keys(ROUTES))
      method = chance(0.8) ? pick(ROUTES[path]) : pick(['GET', 'POST', 'DELETE', 'PUT', 'PATCH', 'OPTIONS', 'HEAD', 'FOO'])
      if (chance(0.05)) path += '/'
    } else {
      path = otherPath()
      method = pick(['GET', 'POST', 'DELETE', 'PUT', 'HEAD'])
    }
    const pairs = Array.from({ length: int(6) }, () => `${queryKey()}=${queryValue()}`)
    const q = pairs.length || chance(0.1) ? `?${pairs.join(chance(0.9) ? '&' : ';')}` : ''
    const headers = {}
    if (chance(0.9)) headers['x-tenant'] = chance(0.85) ? pick(['A', 'B']) : pick(['C', '', 'a'])
    if (chance(0.5)) headers['content-type'] = pick(['application/json', 'text/plain', 'multipart/form-data; boundary=x', 'application/json; charset=latin1'])
    const req = {
      server: chance(0.5) ? 'open' : 'scoped',
      method,
      path: path + q,
      viaFetch: chance(0.2),
      headers,
      prefix: chance(0.97) ? '/api/durably' : pick(['', '/api', '/api/durablyx', '/API/durably']),
    }
    if (method !== 'GET' && method !== 'HEAD' && chance(0.85)) req.body = body()
    return req
  }
}

/** Runs created by the fuzz join the pool of ids later requests act on. */
function learnRunId(status, text) {
  if (status !== 200 || runIds.length > 200) return
  try {
    const id = JSON.parse(text).runId
    if (typeof id === 'string' && !runIds.includes(id)) runIds.push(id)
  } catch {
    // not JSON
  }
}

const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY })

/** node:http client: sends the path and method as they are (fetch would normalize them). */
function sendRaw(url, req) {
  return new Promise((resolve) => {
    let r
    try {
      r = http.request(url, { method: req.method, headers: req.headers, agent, timeout: 15_000 }, (res) => {
        if ((res.headers['content-type'] || '').startsWith('text/event-stream')) {
          res.destroy()
          resolve(res.statusCode)
          return
        }
        let text = ''
        res.setEncoding('utf8')
        res.on('data', (c) => {
          if (text.length < 10_000) text += c
        })
        res.on('end', () => {
          learnRunId(res.statusCode, text)
          resolve(res.statusCode)
        })
        res.on('error', () => resolve('response error'))
      })
    } catch (err) {
      // the client refuses to send it (e.g. a control character in the path)
      resolve('refused')
      return
    }
    r.on('timeout', () => r.destroy(new Error('timeout')))
    r.on('error', (err) => resolve(req.method === 'FOO' ? 'refused' : `error: ${err.code || err.message}`))
    r.end(req.body)
  })
}

async function send(req) {
  const server = req.server === 'open' ? open : scoped
  const url = server.origin + req.prefix + req.path
  if (!req.viaFetch) return sendRaw(url, req)
  const ac = new AbortController()
  const timer = setTimeout(() => ac.abort(), 15_000)
  try {
    const res = await fetch(url, { method: req.method, headers: req.headers, body: req.body, signal: ac.signal })
    if ((res.headers.get('content-type') || '').startsWith('text/event-stream')) {
      await res.body.cancel()
    } else {
      await res.arrayBuffer()
    }
    return res.status
  } catch (err) {
    // Node's own HTTP parser refusing a request (unknown method…) closes the
    // socket: that is not the handler's doing; anything else is a failure.
    if (req.method === 'FOO') return 'refused'
    return `error: ${err.cause ? err.cause.code || err.cause.message : err.message}`
  } finally {
    clearTimeout(timer)
  }
}

/** Raw bytes on a socket, for requests fetch cannot make. Resolves with the status line. */
function rawRequest(port, text) {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1')
    let data = ''
    socket.setTimeout(1000, () => socket.destroy())
    socket.on('data', (c) => {
      data += c
      if (data.includes('\r\n')) socket.destroy()
    })
    socket.on('close', () => resolve(data.split('\r\n')[0]))
    socket.on('error', () => {})
    socket.write(text)
  })
}

describe('fuzz', () => {
  it(`${REQUESTS} random and malformed requests: only 2xx/4xx, never a 500, healthy afterwards`, async () => {
    const started = Date.now()
    const baseline = durably._events.listenerCount()
    const rand = prng(SEED)
    const next = generator(rand)
    const statuses = new Map()
    const bad = []
    let i = 0
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (i < REQUESTS && Date.now() - started < BUDGET_MS) {
          i++
          const req = next()
          const status = await send(req)
          statuses.set(status, (statuses.get(status) || 0) + 1)
          const ok = status === 'refused' || (typeof status === 'number' && ((status >= 200 && status < 300) || (status >= 400 && status < 500)))
          if (!ok) bad.push({ status, req: { ...req, body: typeof req.body === 'string' ? req.body.slice(0, 200) : req.body } })
        }
      }),
    )

    // Requests fetch refuses to make: raw sockets.
    const port = open.server.address().port
    const raw = [
      'GARBAGE\r\n\r\n',
      'GET /api/durably/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header\r\n\r\n',
      'TRACE /api/durably/runs HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n',
      'GET http://evil.example/api/durably/runs HTTP/1.1\r\nHost: x\r\n\r\n',
      'GET /api/durably/runs HTTP/1.1\r\nHost: [::bad\r\n\r\n',
      'POST /api/durably/trigger HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{"jobName":',
      'POST /api/durably/trigger HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n',
      `GET /api/durably/runs?${'a=b&'.repeat(5000)} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`,
    ]
    for (const text of raw) {
      const line = await rawRequest(port, text)
      if (line && !/^HTTP\/1\.1 [24]\d\d /.test(line)) bad.push({ status: line, raw: text.slice(0, 80) })
    }

    const elapsed = Date.now() - started
    console.log(`fuzz seed ${SEED}: ${i} requests in ${elapsed} ms`, Object.fromEntries(statuses))
    expect(bad, `seed ${SEED}`).toEqual([])
    expect(statuses.get(500)).toBeUndefined()
    expect(i).toBeGreaterThanOrEqual(MIN_REQUESTS)

    // Healthy afterwards: a normal request round trip works.
    await sleep(50)
    const t = await call(open.url('/trigger'), { method: 'POST', body: { jobName: 'typed', input: { n: 41 } } })
    expect(t.status).toBe(200)
    const done = await durably.waitForRun(t.body.runId, { timeout: 10_000 })
    expect(done.output).toBe(41)
    const r = await call(open.url(`/run?runId=${t.body.runId}`))
    expect(r).toMatchObject({ status: 200, body: { status: 'completed', output: 41 } })
    const list = await call(scoped.url('/runs?limit=5'), { headers: { 'x-tenant': 'A' } })
    expect(list.status).toBe(200)
    for (const run of list.body) expect(run.labels.tenant).toBe('A')

    // Every SSE connection the fuzz opened has been released.
    await until(() => durably._events.listenerCount() === baseline, { timeout: 5000, what: 'SSE listeners released' })
    await sleep(50)
    expect(rejections).toEqual([])
    expect(workerErrors).toEqual([])
  })
})
