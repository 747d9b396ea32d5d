// `npm run bench -- --backend postgres` (issue 16): its flags and summary.
// (The run itself needs a server and minutes: `npm run bench -- --backend postgres --quick`.)
import { describe, expect, it } from 'vitest'
import { createRequire } from 'node:module'
import { spawnSync } from 'node:child_process'

const require = createRequire(import.meta.url)
const { parseArgs, summarize, SCENARIOS } = require('../bench/pg.js')

describe('bench --backend postgres', () => {
  it('flags: --only limited to the PostgreSQL scenarios, unknown flags and other backends refused', () => {
    expect(SCENARIOS).toEqual(['trigger', 'batch', 'e2e_mc1', 'e2e_mc8', 'multiprocess'])
    const o = parseArgs(['--backend', 'postgres', '--quick', '--only', 'e2e_mc8,trigger', '--url=postgres://h/db'])
    expect(o).toMatchObject({ quick: true, only: ['e2e_mc8', 'trigger'], url: 'postgres://h/db' })
    expect(() => parseArgs(['--only', 'latency'])).toThrow(/unknown PostgreSQL scenario\(s\) latency/)
    expect(() => parseArgs(['--peers'])).toThrow(/unknown flag --peers/)
    expect(() => parseArgs(['--backend', 'mysql'])).toThrow(/postgres only/)
  })

  it('summary: ratio ours/upstream, the mc8 target (5×), and a failed side shown with its error', () => {
    const rows = summarize({
      e2e_mc8: { durably: { stepsPerS: 5000 }, upstream: { stepsPerS: 900 } },
      e2e_mc1: { durably: { stepsPerS: 100 }, upstream: { stepsPerS: 400 } },
      trigger: { durably: { error: 'POSTGRES_UNSUPPORTED' }, upstream: { runsPerS: 700 } },
    })
    expect(rows.find((r) => r.scenario === 'e2e_mc8')).toMatchObject({ ratio: 5.56, target: 5, met: true })
    expect(rows.find((r) => r.scenario === 'e2e_mc1')).toMatchObject({ ratio: 0.25, target: null, met: null })
    expect(rows.find((r) => r.scenario === 'trigger')).toMatchObject({ ours: 'n/a (POSTGRES_UNSUPPORTED)', ratio: null })
    const slow = summarize({ e2e_mc8: { durably: { stepsPerS: 1000 }, upstream: { stepsPerS: 900 } } })
    expect(slow[0].met).toBe(false)
  })

  it('multiprocess: 4 processes / 1 against the 2.5× target, met only when every run executed exactly once', () => {
    const proc = (P, runsPerS, ofOneProcess, extra = {}) => ({
      processes: P,
      runsPerS,
      ofOneProcess,
      executedTwiceOrMore: 0,
      neverExecuted: 0,
      leftRunning: 0,
      leftPending: 0,
      ...extra,
    })
    const row = (one, four) => summarize({ multiprocess: { durably: { byProcesses: { 1: one, 4: four } } } })[0]
    expect(row(proc(1, 1000, 1), proc(4, 3000, 3))).toMatchObject({ ours: 3000, upstream: 1000, ratio: 3, target: 2.5, met: true })
    expect(row(proc(1, 1000, 1), proc(4, 2000, 2)).met).toBe(false)
    expect(row(proc(1, 1000, 1), proc(4, 3000, 3, { executedTwiceOrMore: 1 })).met).toBe(false)
    expect(row(proc(1, 1000, 1), proc(4, 3000, 3, { neverExecuted: 2 })).met).toBe(false)
    expect(summarize({ multiprocess: { durably: { error: 'exit 1' } } })[0]).toMatchObject({ ours: 'n/a (exit 1)', ratio: null, met: null })
  })

  it('npm run bench refuses an unknown backend before running anything', () => {
    const r = spawnSync(process.execPath, ['bench/run.js', '--backend', 'oracle'], { encoding: 'utf8' })
    expect(r.status).toBe(1)
    expect(r.stderr).toMatch(/unknown --backend oracle \(known: sqlite, postgres\)/)
  })
})
