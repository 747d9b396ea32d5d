// bench/report.js: the table of issue 19 and the SVG chart of `npm run bench`
// (the benchmark itself never runs in CI; its arithmetic and output do here).
import { describe, expect, it } from 'vitest'
import { createRequire } from 'node:module'
import { spawnSync } from 'node:child_process'

const require = createRequire(import.meta.url)
const { issueRows, issueTable, chartSvg, repeated, primaryMetric, medianRun, spreadLines } = require('../bench/report.js')

const results = {
  durably: {
    trigger: { runsPerS: 30000 },
    batch: { runsPerS: 150000 },
    onestep: { runsPerS: 4000 },
    e2e_mc1: { stepsPerS: 12000 },
    e2e_mc8: { stepsPerS: 40000 },
    payload1k: { runsPerS: 900 },
    latency: { p50Ms: 0.5 },
    ceiling: { writesPerS: 20000 },
    ceiling_group: { writesPerS: 50000 },
    ceiling_rows: { runsPerS: 600000 },
    cold_commit: { p50Ms: 0.3 },
  },
  upstream: { trigger: { runsPerS: 3000 }, e2e_mc1: { stepsPerS: 2000 }, latency: { p50Ms: 500 } },
  plainjob: { trigger: { runsPerS: 20000 }, batch: { runsPerS: 300000 }, onestep: { runsPerS: 4000 } },
}

describe('issue 19 rows', () => {
  it('computes each ratio against its same-run reference and judges the target', () => {
    const rows = Object.fromEntries(issueRows(results).map((r) => [r.key, r]))
    expect(rows.e2e_mc1).toMatchObject({ durably: 12000, referenceValue: 20000, ratio: 0.6, met: false })
    expect(rows.e2e_mc8).toMatchObject({ ratio: 0.8, met: true }) // target 70 %
    expect(rows.batch).toMatchObject({ ratio: 0.5, met: false })
    // Informational: batch against the bare inserts of its rows, no target to meet.
    expect(rows.batch_rows).toMatchObject({ referenceValue: 600000, ratio: 0.25, target: null, met: null })
    expect(rows.onestep).toMatchObject({ ratio: 1, met: true }) // exactly the target is met
    expect(rows.trigger).toMatchObject({ ratio: 1.5, met: true })
    expect(rows.latency).toMatchObject({ kind: 'plusMs', ratio: 0.2, met: true })
  })

  it('leaves a row without its reference unjudged instead of inventing a ratio', () => {
    const rows = issueRows({ durably: { trigger: { runsPerS: 100 } } })
    const trigger = rows.find((r) => r.key === 'trigger')
    expect(trigger).toMatchObject({ durably: 100, referenceValue: null, ratio: null, met: null })
    expect(issueTable(rows)).toMatch(/\| trigger\(\) awaited one by one, runs\/s +\| +100 \| plainjob add: – +\| +– \| +≥ 1\.0× \| n\/a \|/)
  })

  it('prints the table with the issue columns, percent, × and ms forms', () => {
    const table = issueTable(issueRows(results)).split('\n')
    expect(table[0]).toMatch(/^\| scenario +\| durably \| reference, same run +\| +ratio \| +target \| met \|$/)
    expect(table).toHaveLength(2 + 7)
    expect(table.find((l) => l.includes('e2e_mc1'))).toMatch(/rusqlite, one commit per step: 20,000 +\| +60 % \| +≥ 80 % \| +NO \|/)
    expect(table.find((l) => l.includes('plainjob addMany'))).toMatch(/0\.50× \| +≥ 1\.0× \| +NO \|/)
    expect(table.find((l) => l.includes('50 per statement'))).toMatch(/600,000 +\| +25 % \| +– \| n\/a \|/)
    expect(table.find((l) => l.includes('cold commit'))).toMatch(/\+0\.20 ms \| ≤ \+0\.3 ms \| yes \|/)
  })
})

describe('chart', () => {
  it('is one well-formed SVG with a bar per measured value, scaled within its panel', () => {
    const svg = chartSvg(results, { startedAt: '2026-11-30T00:00:00Z', machine: { nproc: 2, cpu: 'X', node: 'v20' } })
    expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true)
    expect(svg.trimEnd().endsWith('</svg>')).toBe(true)
    // every opened element is closed or self-closing
    const opened = (svg.match(/<(svg|text)\b/g) || []).length
    const closed = (svg.match(/<\/(svg|text)>/g) || []).length
    expect(opened).toBe(closed)
    const bars = [...svg.matchAll(/<rect x="190" y="[\d.]+" width="(\d+)" height="16" rx="2" fill="(#[0-9a-f]{6})"\/>/g)]
    // 3 + 3 + 2 + 3 + 2 + 1 + 3 measured values (the legend's squares are not bars)
    expect(bars).toHaveLength(17)
    const widths = bars.map((b) => Number(b[1]))
    // trigger panel: durably 30,000, upstream 3,000, plainjob 20,000 → longest is durably
    expect(widths[0]).toBeGreaterThan(widths[2])
    expect(widths[0] / widths[1]).toBeCloseTo(10, 0)
    expect(svg).toContain('durably 1.50× vs plainjob add')
    // batch: the rows' reference is drawn, the note still compares with plainjob (the last bar)
    expect(svg).toContain('rusqlite, the rows alone')
    expect(svg).toContain('durably 0.50× vs plainjob addMany')
    expect(svg).toContain('+0.20 ms vs rusqlite, one cold commit')
    // latency: upstream's 500 ms is over 20× the next bar (0.5 ms): drawn cut, the others to scale
    expect(svg).toContain('>500 (cut)</text>')
    expect(widths.slice(-3)).toEqual([Math.round((0.5 / 0.75) * 460), 460, Math.round((0.3 / 0.75) * 460)])
    expect(svg.match(/\(cut\)/g)).toHaveLength(1)
  })

  it('escapes text and omits panels with no figures', () => {
    const svg = chartSvg({ durably: { trigger: { runsPerS: 5 } } }, { source: { commit: '<a&b>' } })
    expect(svg).toContain('commit &lt;a&amp;b&gt;')
    expect(svg).not.toContain('maxConcurrentRuns 8')
  })
})

describe('--repeat: the median run of each scenario', () => {
  it('keeps the run with the median figure whole, and every figure in run order', () => {
    const runs = [{ runsPerS: 300, ms: 1 }, { runsPerS: 100, ms: 3 }, { runsPerS: 200, ms: 2 }]
    expect(medianRun('trigger', runs)).toEqual({ runsPerS: 200, ms: 2, repeats: [300, 100, 200] })
    // an even count keeps the lower middle run
    const four = [{ stepsPerS: 4 }, { stepsPerS: 1 }, { stepsPerS: 3 }, { stepsPerS: 2 }]
    expect(medianRun('e2e_mc8', four)).toEqual({ stepsPerS: 2, repeats: [4, 1, 3, 2] })
    expect(medianRun('ceiling', [{ writesPerS: 9 }])).toEqual({ writesPerS: 9 })
  })

  it('reports a failed run rather than hiding it behind the others', () => {
    const runs = [{ runsPerS: 300 }, { error: 'exit 1' }, { runsPerS: 100 }]
    expect(medianRun('batch', runs)).toEqual({ error: 'exit 1' })
  })

  it('ranks multiprocess by its largest P against one process, and repeats no sampled scenario', () => {
    const mp = (r8) => ({ byProcesses: { 1: { ofOneProcess: 1 }, 2: { ofOneProcess: 0.9 }, 8: { ofOneProcess: r8 } } })
    expect(primaryMetric('multiprocess', mp(0.7))).toBe(0.7)
    expect(medianRun('multiprocess', [mp(0.7), mp(0.6), mp(0.8)]).byProcesses[8].ofOneProcess).toBe(0.7)
    for (const name of ['latency', 'latency_xp', 'cold_commit', 'loop', 'after_big_value']) {
      expect(repeated(name)).toBe(false)
      expect(primaryMetric(name, { p50Ms: 1 })).toBe(null)
    }
    expect(repeated('trigger')).toBe(true)
  })

  it('prints the spread of each repeated scenario per library', () => {
    const R = {
      durably: { trigger: medianRun('trigger', [{ runsPerS: 45000 }, { runsPerS: 41000 }, { runsPerS: 47000 }]), latency: { p50Ms: 0.3 } },
      plainjob: { trigger: medianRun('trigger', [{ runsPerS: 50000 }, { runsPerS: 52000 }, { runsPerS: 48000 }]) },
    }
    expect(spreadLines(R)).toEqual([
      'trigger / durably: 45,000 (41,000–47,000 of 3 runs)',
      'trigger / plainjob: 50,000 (48,000–52,000 of 3 runs)',
    ])
    expect(spreadLines({ durably: { trigger: { runsPerS: 1 } } })).toEqual([])
  })
})

describe('--runs: the e2e scenarios at another size', () => {
  it('labels the e2e rows with the size they were measured at', () => {
    const rows = Object.fromEntries(
      issueRows({ durably: { e2e_mc1: { n: 8000, steps: 10, stepsPerS: 40000 }, e2e_mc8: { stepsPerS: 90000 } } }).map((r) => [r.key, r]),
    )
    expect(rows.e2e_mc1.scenario).toBe('e2e_mc1 steps/s (8,000 runs × 10 steps)')
    // A result without its size (an older results file) keeps the default's label.
    expect(rows.e2e_mc8.scenario).toBe('e2e_mc8 steps/s (2,000 runs × 10 steps)')
  })

  it('refuses a size that is not a whole number of runs, naming the flag', () => {
    for (const bad of ['0', '5', 'x', '2.5']) {
      const r = spawnSync(process.execPath, ['bench/run.js', '--runs', bad], { encoding: 'utf8' })
      expect(r.status).not.toBe(0)
      expect(r.stderr).toContain(`--runs takes a whole number of runs from 10 to 1000000 (got ${bad})`)
    }
  })
})
