// Issue 13, item 4: the database file replaced, or its -wal deleted, under a
// live instance. Before: SQLite kept writing through its open descriptors
// into unlinked files, every run accepted from then on was silently lost.
// Now the worker compares the file's identity (device, inode) on every
// heartbeat tick: it reports worker:error DB_REPLACED once, and every write
// (step, trigger) fails with DB_REPLACED. Each case runs in a child process.
import fs from 'node:fs'
import path from 'node:path'
import { fork } from 'node:child_process'
import { afterAll, describe, expect, it } from 'vitest'
import helpers from '../helpers.js'
import { fixture } from './util.mjs'

const { tempDir, until, sleep } = helpers

const children = new Set()
afterAll(() => {
  for (const c of children) c.kill('SIGKILL')
})

function start(db) {
  const child = fork(fixture('stress-replaced.js'), [db], { silent: true })
  children.add(child)
  const lines = []
  let buf = ''
  child.stdout.on('data', (c) => {
    buf += c
    let i
    while ((i = buf.indexOf('\n')) >= 0) {
      lines.push(buf.slice(0, i))
      buf = buf.slice(i + 1)
    }
  })
  let stderr = ''
  child.stderr.on('data', (c) => (stderr += c))
  const exited = new Promise((r) => child.on('exit', (code) => r(code)))
  return { child, lines, exited, stderr: () => stderr }
}

const has = (w, line) => w.lines.includes(line)

describe('the database file changed under a live instance', () => {
  for (const [label, act] of [
    [
      'its -wal deleted',
      (db) => fs.rmSync(`${db}-wal`),
    ],
    [
      'the file replaced by another (mv over it)',
      (db) => {
        fs.copyFileSync(db, `${db}.copy`)
        fs.renameSync(`${db}.copy`, db)
      },
    ],
  ]) {
    it(`${label}: worker:error DB_REPLACED, then every write refused`, async () => {
      const db = path.join(tempDir('durably-replaced-'), 'r.db')
      const w = start(db)
      await until(() => has(w, 'ready') || w.child.exitCode !== null, { timeout: 20_000, what: 'steps running' })
      expect(w.lines.filter((l) => l.startsWith('worker-error') || l.startsWith('fatal'))).toEqual([])
      act(db)
      await until(() => w.lines.some((l) => l.startsWith('worker-error DB_REPLACED')), {
        timeout: 5_000,
        what: `DB_REPLACED to be reported (${w.lines.join(' | ')})`,
      })
      // The run's next step write is refused (its execution stops), and so is a trigger.
      await until(() => has(w, 'step-rejected DB_REPLACED'), { timeout: 5_000, what: 'the step write refused' })
      w.child.send('probe')
      await until(() => w.lines.some((l) => l.startsWith('trigger ')), { timeout: 5_000, what: 'the probe' })
      expect(w.lines).toContain('trigger DB_REPLACED')
      await sleep(400) // several heartbeat ticks: reported once, not on every tick
      expect(w.lines.filter((l) => l === 'worker-error DB_REPLACED').length).toBeGreaterThanOrEqual(1)
      const errors = w.lines.filter((l) => l.startsWith('worker-error'))
      expect(errors.every((l) => l === 'worker-error DB_REPLACED'), errors.join('\n')).toBe(true)
      // Reported by the file check once, plus once for the refused step write (its execution stopped).
      expect(errors.length).toBeLessThanOrEqual(2)
      w.child.send('close')
      expect(await w.exited).toBe(0)
      expect(w.lines).toContain('closed ok')
    }, 40_000)
  }
})
