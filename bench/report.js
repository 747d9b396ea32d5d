'use strict'
// The table of issue 19 and the SVG chart of `npm run bench` (no dependency).
// Both read the `results` object of bench/run.js: { durably: {scenario: result},
// upstream?: {...}, plainjob?: {...} }; the plain-rusqlite references
// (ceiling, ceiling_group, ceiling_rows, cold_commit) are filed under
// durably.

const get = (o, ...keys) => keys.reduce((v, k) => (v == null ? undefined : v[k]), o)
const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : null)
/** "2,000 runs × 10 steps": the size an e2e result was measured at (the default when it is missing). */
const size = (r) => `${(num(r?.n) ?? 2000).toLocaleString('en-US')} runs × ${num(r?.steps) ?? 10} steps`

/**
 * Issue 19's rows: each durably figure against its reference measured in the
 * same invocation. kind 'fraction': durably / reference ≥ target (shown in %);
 * 'ratio': the same shown as ×; 'plusMs': durably − reference ≤ target ms.
 */
function issueRows(R) {
  const o = R.durably || {}
  const p = R.plainjob || {}
  const rows = [
    {
      key: 'e2e_mc1',
      scenario: `e2e_mc1 steps/s (${size(o.e2e_mc1)})`,
      durably: get(o, 'e2e_mc1', 'stepsPerS'),
      refLabel: 'rusqlite, one commit per step',
      ref: get(o, 'ceiling', 'writesPerS'),
      kind: 'fraction',
      target: 0.8,
    },
    {
      key: 'e2e_mc8',
      scenario: `e2e_mc8 steps/s (${size(o.e2e_mc8)})`,
      durably: get(o, 'e2e_mc8', 'stepsPerS'),
      refLabel: 'rusqlite, 8 steps per commit',
      ref: get(o, 'ceiling_group', 'writesPerS'),
      kind: 'fraction',
      target: 0.7,
    },
    {
      key: 'batch',
      scenario: 'batchTrigger runs/s (500 per call)',
      durably: get(o, 'batch', 'runsPerS'),
      refLabel: 'plainjob addMany',
      ref: get(p, 'batch', 'runsPerS'),
      kind: 'ratio',
      target: 1,
    },
    {
      // No target: where batch's time goes (SQLite's work for the rows, or the rest).
      key: 'batch_rows',
      scenario: 'batchTrigger runs/s, against the bare inserts of its rows',
      durably: get(o, 'batch', 'runsPerS'),
      refLabel: 'rusqlite, the same rows, 50 per statement',
      ref: get(o, 'ceiling_rows', 'runsPerS'),
      kind: 'fraction',
      target: null,
    },
    {
      key: 'onestep',
      scenario: 'one-step jobs, runs/s (20,000 runs × 1 tiny step)',
      durably: get(o, 'onestep', 'runsPerS'),
      refLabel: 'plainjob worker (claim + complete)',
      ref: get(p, 'onestep', 'runsPerS'),
      kind: 'ratio',
      target: 1,
    },
    {
      key: 'trigger',
      scenario: 'trigger() awaited one by one, runs/s',
      durably: get(o, 'trigger', 'runsPerS'),
      refLabel: 'plainjob add',
      ref: get(p, 'trigger', 'runsPerS'),
      kind: 'ratio',
      target: 1,
    },
    {
      key: 'latency',
      scenario: 'trigger → job start, same process, after idle, p50 ms',
      durably: get(o, 'latency', 'p50Ms'),
      refLabel: 'one cold commit (rusqlite)',
      ref: get(o, 'cold_commit', 'p50Ms'),
      kind: 'plusMs',
      target: 0.3,
    },
  ]
  return rows.map((r) => {
    const d = num(r.durably)
    const ref = num(r.ref)
    let ratio = null
    let met = null
    if (d !== null && ref !== null) {
      if (r.kind === 'plusMs') {
        ratio = Math.round((d - ref) * 1000) / 1000
        met = ratio <= r.target
      } else if (ref > 0) {
        ratio = Math.round((d / ref) * 1000) / 1000
        met = r.target === null ? null : ratio >= r.target
      }
    }
    return { key: r.key, scenario: r.scenario, durably: d, reference: r.refLabel, referenceValue: ref, kind: r.kind, ratio, target: r.target, met }
  })
}

function fmt(v) {
  if (v === null || v === undefined) return '–'
  if (Math.abs(v) >= 100) return Math.round(v).toLocaleString('en-US')
  if (Math.abs(v) >= 10) return v.toFixed(1)
  return String(Math.round(v * 100) / 100)
}

function ratioText(r) {
  if (r.ratio === null) return '–'
  if (r.kind === 'fraction') return `${Math.round(r.ratio * 100)} %`
  if (r.kind === 'ratio') return `${r.ratio.toFixed(2)}×`
  return `${r.ratio >= 0 ? '+' : ''}${r.ratio.toFixed(2)} ms`
}

function targetText(r) {
  if (r.target === null) return '–'
  if (r.kind === 'fraction') return `≥ ${Math.round(r.target * 100)} %`
  if (r.kind === 'ratio') return `≥ ${r.target.toFixed(1)}×`
  return `≤ +${r.target} ms`
}

/** Markdown table: scenario | durably | reference, same run | ratio | target | met. */
function issueTable(rows) {
  const head = ['scenario', 'durably', 'reference, same run', 'ratio', 'target', 'met']
  const body = rows.map((r) => [
    r.scenario,
    fmt(r.durably),
    `${r.reference}: ${fmt(r.referenceValue)}`,
    ratioText(r),
    targetText(r),
    r.met === null ? 'n/a' : r.met ? 'yes' : 'NO',
  ])
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((c) => c[i].length)))
  const left = new Set([0, 2])
  const line = (cells) => `| ${cells.map((c, i) => (left.has(i) ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join(' | ')} |`
  const rule = `|${widths.map((w, i) => (left.has(i) ? ` ${'-'.repeat(w)} ` : ` ${'-'.repeat(w - 1)}: `)).join('|')}|`
  return [line(head), rule, ...body.map(line)].join('\n')
}

// ---- the chart ----------------------------------------------------------------------

const SERIES = {
  durably: { label: 'durably', color: '#2563eb' },
  upstream: { label: '@coji/durably 0.15', color: '#9ca3af' },
  plainjob: { label: 'plainjob 0.0.14', color: '#f59e0b' },
  reference: { label: 'plain rusqlite loop', color: '#059669' },
}

/** One panel per scenario: [title, unit, lowerIsBetter, [[series, label, value]…]]. */
function panels(R) {
  const o = R.durably || {}
  const u = R.upstream || {}
  const p = R.plainjob || {}
  return [
    {
      title: 'trigger() awaited one by one',
      unit: 'runs/s',
      bars: [
        ['durably', 'durably', get(o, 'trigger', 'runsPerS')],
        ['upstream', '@coji/durably 0.15', get(u, 'trigger', 'runsPerS')],
        ['plainjob', 'plainjob add', get(p, 'trigger', 'runsPerS')],
      ],
    },
    {
      title: 'batchTrigger, 500 per call',
      unit: 'runs/s',
      bars: [
        ['durably', 'durably', get(o, 'batch', 'runsPerS')],
        ['upstream', '@coji/durably 0.15', get(u, 'batch', 'runsPerS')],
        ['reference', 'rusqlite, the rows alone', get(o, 'ceiling_rows', 'runsPerS')],
        ['plainjob', 'plainjob addMany', get(p, 'batch', 'runsPerS')],
      ],
    },
    {
      title: 'one-step jobs (claim, 1 step, complete)',
      unit: 'runs/s',
      bars: [
        ['durably', 'durably', get(o, 'onestep', 'runsPerS')],
        ['upstream', '@coji/durably 0.15', get(u, 'onestep', 'runsPerS')],
        ['plainjob', 'plainjob worker', get(p, 'onestep', 'runsPerS')],
      ],
    },
    {
      title: 'runs of 10 steps, maxConcurrentRuns 1',
      unit: 'steps/s',
      bars: [
        ['durably', 'durably', get(o, 'e2e_mc1', 'stepsPerS')],
        ['upstream', '@coji/durably 0.15', get(u, 'e2e_mc1', 'stepsPerS')],
        ['reference', 'rusqlite, 1 commit/step', get(o, 'ceiling', 'writesPerS')],
      ],
    },
    {
      title: 'runs of 10 steps, maxConcurrentRuns 8',
      unit: 'steps/s',
      bars: [
        ['durably', 'durably', get(o, 'e2e_mc8', 'stepsPerS')],
        ['upstream', '@coji/durably 0.15', get(u, 'e2e_mc8', 'stepsPerS')],
        ['reference', 'rusqlite, 8 steps/commit', get(o, 'ceiling_group', 'writesPerS')],
      ],
    },
    {
      title: 'one step returning 1 KB',
      unit: 'runs/s',
      bars: [
        ['durably', 'durably', get(o, 'payload1k', 'runsPerS')],
        ['upstream', '@coji/durably 0.15', get(u, 'payload1k', 'runsPerS')],
      ],
    },
    {
      title: 'trigger → job start after idle, p50 (lower is better)',
      unit: 'ms',
      bars: [
        ['durably', 'durably', get(o, 'latency', 'p50Ms')],
        ['upstream', '@coji/durably 0.15', get(u, 'latency', 'p50Ms')],
        ['reference', 'rusqlite, one cold commit', get(o, 'cold_commit', 'p50Ms')],
      ],
    },
  ]
    .map((panel) => ({ ...panel, bars: panel.bars.filter((b) => num(b[2]) !== null) }))
    .filter((panel) => panel.bars.length > 0)
}

/** "unit · durably = 0.71× plainjob add" (or "+0.57 ms" for the latency panel) against the panel's last bar. */
function panelNote(panel) {
  const ours = panel.bars.find((b) => b[0] === 'durably')
  const ref = panel.bars[panel.bars.length - 1]
  if (!ours || ref === ours || !(ref[2] > 0)) return panel.unit
  const rel = panel.unit === 'ms' ? `${ours[2] - ref[2] >= 0 ? '+' : ''}${(ours[2] - ref[2]).toFixed(2)} ms` : `${(ours[2] / ref[2]).toFixed(2)}×`
  return `${panel.unit} · durably ${rel} vs ${ref[1]}`
}

/**
 * The panel's scale: its largest value, unless that one is over 20 times the
 * next (upstream's 535 ms latency next to 0.6 ms): then 1.5 × the next, and
 * the outlier is drawn cut.
 */
function scaleMax(values) {
  const v = [...values].sort((a, b) => b - a)
  if (v.length > 1 && v[1] > 0 && v[0] > 20 * v[1]) return v[1] * 1.5
  return v[0]
}

const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;')

/**
 * Horizontal bars, one panel per scenario, each on its own linear scale
 * (panels differ by orders of magnitude); every bar carries its value.
 */
function chartSvg(R, meta = {}) {
  const W = 760
  const labelW = 190
  const valueW = 90
  const barMax = W - labelW - valueW - 20
  const barH = 16
  const gap = 5
  const font = 'font-family="system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif"'
  const out = []
  let y = 28
  out.push(`<text x="10" y="${y}" font-size="16" font-weight="600">durably — npm run bench</text>`)
  // legend
  let lx = 10
  y += 22
  for (const s of Object.values(SERIES)) {
    out.push(`<rect x="${lx}" y="${y - 10}" width="12" height="12" rx="2" fill="${s.color}"/>`)
    out.push(`<text x="${lx + 17}" y="${y}" font-size="12">${esc(s.label)}</text>`)
    lx += 30 + s.label.length * 7
  }
  y += 14
  for (const panel of panels(R)) {
    y += 22
    out.push(`<text x="10" y="${y}" font-size="13" font-weight="600">${esc(panel.title)}</text>`)
    out.push(`<text x="${W - 10}" y="${y}" font-size="11" fill="#6b7280" text-anchor="end">${esc(panelNote(panel))}</text>`)
    y += 6
    const max = scaleMax(panel.bars.map((b) => b[2]))
    for (const [series, label, value] of panel.bars) {
      const off = value > max
      const w = max > 0 ? Math.max(1, Math.round((Math.min(value, max) / max) * barMax)) : 1
      const top = y + 2
      out.push(`<text x="${labelW - 8}" y="${top + barH - 4}" font-size="12" text-anchor="end" fill="#374151">${esc(label)}</text>`)
      out.push(`<rect x="${labelW}" y="${top}" width="${w}" height="${barH}" rx="2" fill="${SERIES[series].color}"/>`)
      if (off) {
        // a white zigzag across the bar: cut, not to scale
        const x = labelW + w - 28
        out.push(`<path d="M${x} ${top - 1} l6 ${(barH + 2) / 2} l-6 ${(barH + 2) / 2} h6 l6 ${-(barH + 2) / 2} l-6 ${-(barH + 2) / 2} z" fill="#ffffff"/>`)
      }
      out.push(`<text x="${labelW + w + 6}" y="${top + barH - 4}" font-size="12" fill="#111827">${esc(fmt(value) + (off ? ' (cut)' : ''))}</text>`)
      y += barH + gap
    }
    y += 4
  }
  y += 14
  const m = meta.machine || {}
  const foot = [
    meta.startedAt ? meta.startedAt.slice(0, 10) : null,
    meta.source && meta.source.commit ? `commit ${meta.source.commit}` : null,
    m.nproc ? `${m.nproc} × ${m.cpu}` : null,
    m.node ? `node ${m.node}` : null,
    meta.flags && meta.flags.quick ? '--quick sizes' : null,
  ].filter(Boolean)
  out.push(`<text x="10" y="${y}" font-size="11" fill="#6b7280">${esc(foot.join(' · '))}</text>`)
  y += 15
  out.push(`<text x="10" y="${y}" font-size="11" fill="#6b7280">each panel on its own linear scale; all bars from one invocation of npm run bench</text>`)
  y += 12
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${y}" viewBox="0 0 ${W} ${y}" ${font}>`,
    `<rect width="${W}" height="${y}" fill="#ffffff"/>`,
    ...out,
    '</svg>',
    '',
  ].join('\n')
}

/**
 * The figure by which repeated runs of each scenario are ranked (`--repeat`).
 * Scenarios not here run once: latency, latency_xp and cold_commit take 50
 * samples each, loop samples a whole run, after_big_value takes medians of
 * its own. multiprocess ranks by the largest P's ratio to one process.
 */
const RANKED = {
  trigger: (r) => r.runsPerS,
  batch: (r) => r.runsPerS,
  onestep: (r) => r.runsPerS,
  payload1k: (r) => r.runsPerS,
  e2e_mc1: (r) => r.stepsPerS,
  e2e_mc8: (r) => r.stepsPerS,
  full: (r) => r.stepsPerS,
  ceiling: (r) => r.writesPerS,
  ceiling_group: (r) => r.writesPerS,
  ceiling_rows: (r) => r.runsPerS,
  ceiling_full: (r) => r.writesPerS,
  multiprocess: (r) => {
    const by = r.byProcesses || {}
    const top = Object.keys(by).map(Number).sort((a, b) => b - a)[0]
    return top ? get(by, String(top), 'ofOneProcess') : null
  },
}

/** Whether `--repeat` repeats this scenario. */
const repeated = (name) => Object.hasOwn(RANKED, name)

/** A run's ranking figure, or null (failed, or not a ranked scenario). */
function primaryMetric(name, res) {
  if (!res || res.error || !repeated(name)) return null
  return num(RANKED[name](res))
}

/**
 * Of a scenario's repeated runs, the one with the median primary figure (the
 * lower middle one for an even count), its fields kept together, with
 * `repeats` listing every run's figure in the order they ran. A run that
 * failed is returned as it is (the bench reports it); with no figure to rank
 * (one run, or a scenario without one) the first run.
 */
function medianRun(name, runs) {
  const failed = runs.find((r) => r.error)
  if (failed) return failed
  const values = runs.map((r) => primaryMetric(name, r))
  if (runs.length < 2 || values.some((v) => v === null)) return runs[0]
  const order = runs.map((_, i) => i).sort((a, b) => values[a] - values[b])
  const mid = order[Math.floor((runs.length - 1) / 2)]
  return { ...runs[mid], repeats: values }
}

/**
 * With `--repeat`: a line per scenario and library that ran more than once,
 * `name / impl: median (min–max of n runs)`.
 */
function spreadLines(R) {
  const lines = []
  for (const [impl, byName] of Object.entries(R)) {
    for (const [name, res] of Object.entries(byName || {})) {
      const v = res && Array.isArray(res.repeats) ? res.repeats.filter((x) => x !== null) : []
      if (v.length < 2) continue
      const med = primaryMetric(name, res)
      lines.push(`${name} / ${impl}: ${fmt(med)} (${fmt(Math.min(...v))}–${fmt(Math.max(...v))} of ${v.length} runs)`)
    }
  }
  return lines
}

module.exports = { issueRows, issueTable, chartSvg, repeated, primaryMetric, medianRun, spreadLines }

// `node bench/report.js results.json [out.svg]`: the issue 19 table and the chart of a saved run.
if (require.main === module) {
  const [file, svg] = process.argv.slice(2)
  if (!file) {
    console.error('usage: node bench/report.js <results.json> [out.svg]')
    process.exit(2)
  }
  const out = JSON.parse(require('node:fs').readFileSync(file, 'utf8'))
  console.log(issueTable(issueRows(out.results)))
  if (svg) require('node:fs').writeFileSync(svg, chartSvg(out.results, out))
}
