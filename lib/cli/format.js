'use strict'
// Output helpers for the CLI: colours (only on a terminal, NO_COLOR and
// FORCE_COLOR respected), aligned tables, times, durations.

const { stringify } = require('../http-sse')

/**
 * Whether to colour `stream`. FORCE_COLOR wins (as in Node itself): `0`
 * turns colours off, any other value on; then NO_COLOR (any non-empty value)
 * turns them off; otherwise only a TTY gets colours.
 */
function useColor(stream, env = process.env) {
  const force = env.FORCE_COLOR
  if (force !== undefined && force !== '') return force !== '0' && force !== 'false'
  if (env.NO_COLOR !== undefined && env.NO_COLOR !== '') return false
  return !!stream.isTTY && env.TERM !== 'dumb'
}

const CODES = { red: 31, green: 32, yellow: 33, blue: 34, grey: 90, bold: 1, dim: 2 }

function painter(enabled) {
  const paint = {}
  for (const [name, code] of Object.entries(CODES)) {
    paint[name] = enabled ? (s) => `\x1b[${code}m${s}\x1b[0m` : (s) => String(s)
  }
  const byStatus = { pending: paint.grey, running: paint.blue, completed: paint.green, failed: paint.red, cancelled: paint.yellow }
  paint.status = (s) => (byStatus[s] ?? String)(s)
  return paint
}

// Escape sequences and control characters from stored data must not reach
// the terminal as such (a label could otherwise rewrite the screen).
const CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g
const clean = (s) => String(s).replace(CONTROL, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)
const oneLine = (s) => clean(String(s).replace(/\r?\n/g, ' ⏎ '))

const visibleLength = (s) => String(s).replace(/\x1b\[\d+m/g, '').length

/** Rows of cells (already coloured) as aligned columns; the last column is not padded. */
function table(headers, rows, paint) {
  const all = [headers.map((h) => paint.bold(h)), ...rows]
  const widths = headers.map((_, i) => Math.max(...all.map((r) => visibleLength(r[i] ?? ''))))
  return all
    .map((r) =>
      r
        .map((c, i) => (i === r.length - 1 ? String(c ?? '') : String(c ?? '') + ' '.repeat(widths[i] - visibleLength(c ?? ''))))
        .join('  ')
        .trimEnd(),
    )
    .join('\n')
}

function fmtTime(iso) {
  if (!iso) return '-'
  const d = new Date(iso)
  if (Number.isNaN(d.getTime())) return String(iso)
  const p = (n, w = 2) => String(n).padStart(w, '0')
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`
}

function fmtDuration(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '-'
  if (ms < 1000) return `${Math.round(ms)}ms`
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)}s`
  const m = Math.floor(ms / 60_000)
  if (m < 60) return `${m}m${Math.round((ms % 60_000) / 1000)}s`
  return `${Math.floor(m / 60)}h${m % 60}m`
}

const between = (a, b) => (a ? (b ? Date.parse(b) : Date.now()) - Date.parse(a) : null)

/** How long a run ran: null while pending (a retried run keeps its old startedAt). */
const runDuration = (r) => (r.status === 'pending' ? null : between(r.startedAt, r.completedAt))

function fmtProgress(p) {
  if (!p) return '-'
  const n = p.total ? `${p.current}/${p.total}` : String(p.current)
  return p.message ? `${n} ${oneLine(p.message)}` : n
}

const fmtLabels = (labels) =>
  Object.entries(labels ?? {})
    .map(([k, v]) => oneLine(`${k}=${v}`))
    .join(' ') || '-'

/** `7d`, `12h`, `30m`, `45s`, `500ms` → milliseconds; null when malformed. */
function parseDuration(text) {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d|w)$/.exec(String(text).trim())
  if (!m) return null
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 }[m[2]]
  const v = Number(m[1]) * unit
  return Number.isFinite(v) && v > 0 ? v : null
}

/** One JSON document (values that JSON cannot hold made plain, as the HTTP handler does). */
const toJson = (value, pretty = true) => (pretty ? JSON.stringify(JSON.parse(stringify(value)), null, 2) : stringify(value))

module.exports = { useColor, painter, table, fmtTime, fmtDuration, between, runDuration, fmtProgress, fmtLabels, parseDuration, toJson, oneLine, clean }
