'use strict'
// Micro-benchmark: plain JSON values take the fast path of lib/values.js.
// For representative plain values, compares ops/s of encode(v) with
// JSON.stringify(v) and of decode(text) with JSON.parse(text). The ratio is
// what durably costs on top of the JSON work it cannot avoid (encode: one
// check walk; decode: one scan of the text for a tag).
//
//   node bench/values.js [--time=ms-per-case] [--json-only] [--module=path]
//
// --module benchmarks another copy of values.js (e.g. an older version) with
// the same harness, for before/after figures.
//
// Prints a table and, on the last line, one JSON object with all figures.

const path = require('node:path')

const arg = (name, dflt) => {
  const a = process.argv.find((x) => x.startsWith(`--${name}=`))
  return a ? a.slice(name.length + 3) : dflt
}
const MODULE = path.resolve(arg('module', path.join(__dirname, '../lib/values.js')))
const { encode, decode } = require(MODULE)
const TIME_MS = Number(arg('time', 600))
const JSON_ONLY = process.argv.includes('--json-only')

function smallObject(i = 0) {
  return { id: i, name: `user-${i}`, active: i % 2 === 0, score: 12.5 + i, tags: ['a', 'b'] }
}

function kbObject() {
  // ~1 KB of typical API data: nested objects, arrays, strings, numbers.
  const o = {
    id: 'run_01HZX3K5Q8W9E2R4T6Y8U0I2O4',
    owner: { id: 17, login: 'octo', email: 'octo@example.com', verified: true },
    createdAt: '2024-05-01T10:00:00.000Z',
    items: [],
    meta: { page: 1, perPage: 20, total: 1234, next: 'https://api.example.com/items?page=2' },
  }
  for (let i = 0; i < 8; i++) o.items.push({ sku: `SKU-${1000 + i}`, qty: i + 1, price: 9.99 * (i + 1), ok: true })
  return o
}

const CASES = [
  ['small object', smallObject()],
  ['1 KB object', kbObject()],
  ['array of 1000 small objects', Array.from({ length: 1000 }, (_, i) => smallObject(i))],
]

let sink = 0

/** Iterations of fn that take about `ms` milliseconds. */
function calibrate(fn, ms) {
  let n = 1
  for (;;) {
    const t0 = process.hrtime.bigint()
    for (let i = 0; i < n; i++) sink ^= fn().length | 0
    if (Number(process.hrtime.bigint() - t0) / 1e6 > ms) return n
    n *= 2
  }
}

function timeBatch(fn, n) {
  const t0 = process.hrtime.bigint()
  for (let i = 0; i < n; i++) sink ^= fn().length | 0
  return Number(process.hrtime.bigint() - t0) / 1e6
}

const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1]

/**
 * Compares `base` and `ours` in many short alternating rounds (the machine
 * is shared: alternation makes load spikes hit both sides alike) and
 * reports the median ops/s of each and the median per-round time ratio.
 */
function compare(base, ours) {
  const n = calibrate(base, 5)
  calibrate(ours, 5) // warm-up
  const rounds = Math.max(9, Math.round(TIME_MS / 10))
  const tb = []
  const to = []
  const ratios = []
  for (let r = 0; r < rounds; r++) {
    const a = r % 2 ? timeBatch(ours, n) : timeBatch(base, n)
    const b = r % 2 ? timeBatch(base, n) : timeBatch(ours, n)
    const [mb, mo] = r % 2 ? [b, a] : [a, b]
    tb.push(mb)
    to.push(mo)
    ratios.push(mo / mb)
  }
  return { baseOps: (n / median(tb)) * 1000, oursOps: (n / median(to)) * 1000, ratio: median(ratios) }
}

const results = []
for (const [name, value] of CASES) {
  const text = JSON.stringify(value)
  if (encode(value, 'result') !== text) throw new Error(`${name}: encode() did not take the fast path`)
  const dec = decode(text)
  if (JSON.stringify(dec) !== text) throw new Error(`${name}: decode() changed the value`)
  const e = compare(
    () => JSON.stringify(value),
    () => encode(value, 'result'),
  )
  const d = compare(
    () => [JSON.parse(text)],
    () => [decode(text)],
  )
  results.push({
    case: name,
    bytes: text.length,
    stringifyOps: Math.round(e.baseOps),
    encodeOps: Math.round(e.oursOps),
    encodeRatio: +e.ratio.toFixed(3),
    parseOps: Math.round(d.baseOps),
    decodeOps: Math.round(d.oursOps),
    decodeRatio: +d.ratio.toFixed(3),
  })
}

if (!JSON_ONLY) {
  const fmt = (n) => n.toLocaleString('en-US').padStart(12)
  console.log('plain JSON fast path; ratio = median per-round time(encode)/time(JSON.stringify), time(decode)/time(JSON.parse)')
  console.log(
    `${'case'.padEnd(30)}${'bytes'.padStart(8)}${'stringify/s'.padStart(13)}${'encode/s'.padStart(13)}${'ratio'.padStart(7)}` +
      `${'parse/s'.padStart(13)}${'decode/s'.padStart(13)}${'ratio'.padStart(7)}`,
  )
  for (const r of results) {
    console.log(
      `${r.case.padEnd(30)}${String(r.bytes).padStart(8)}${fmt(r.stringifyOps)} ${fmt(r.encodeOps)}${r.encodeRatio
        .toFixed(2)
        .padStart(7)}${fmt(r.parseOps)} ${fmt(r.decodeOps)}${r.decodeRatio.toFixed(2).padStart(7)}`,
    )
  }
}
console.log(JSON.stringify({ bench: 'values', module: path.relative(process.cwd(), MODULE), node: process.version, timeMsPerCase: TIME_MS, results, sink: sink & 1 }))
