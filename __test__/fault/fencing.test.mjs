// Issue 5, fault suite 3: fencing by lease generation.
//
// Worker A (a child process) claims a run and is frozen with SIGSTOP — inside
// a step, or after its last step before the job returns. Worker B (another
// child) sees A's heartbeat go stale, reclaims the run, replays A's committed
// steps and completes it. Then A is resumed with SIGCONT: its late step write
// and its completion are refused (A sees LeaseLostError / its signal
// aborted), and the stored result and steps stay B's. A then pushes raw
// writes under its old lease generation straight to the engine: all refused.
import fs from 'node:fs'
import path from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { createDurably, defineJob } from '../../index.js'
import helpers from '../helpers.js'
import { AUDIT_SQL, exitWithin, fixture, hasPython, lineWithin, sql } from './util.mjs'

const { tempDir, spawnNode } = helpers

const children = new Set()
afterAll(() => {
  for (const w of children) {
    w.child.kill('SIGCONT')
    w.child.kill('SIGKILL')
  }
})

const job = defineJob({
  name: 'fault-fence',
  run: async () => {
    throw new Error('the driver never executes runs')
  },
})

const spawn = (args, env) => {
  const w = spawnNode(fixture('fault-fence-worker.js'), args, { env })
  children.add(w)
  w.exited.then(() => children.delete(w))
  return w
}

const dump = (name, w) => `${name} stdout:\n${w.lines.join('\n')}\n${name} stderr:\n${w.stderr()}`

describe('fencing: a paused worker cannot write after its run was reclaimed', () => {
  for (const mode of ['step', 'between']) {
    it(`A paused ${mode === 'step' ? 'inside a step' : 'before its job returns'}: B's result stands, A's late writes are refused`, async () => {
      const dir = tempDir('durably-fault-fence-')
      const db = path.join(dir, 'fence.db')
      const resume = path.join(dir, 'resume')
      const d = createDurably({ path: db, jobs: { job } })
      await d.migrate()
      const audited = hasPython()
      if (audited) sql(db, AUDIT_SQL, { script: true })
      const run = await d.jobs.job.trigger({})

      const a = spawn([db, resume], { FAULT_WHO: 'A', FAULT_MODE: mode })
      const point = await lineWithin(a, mode === 'step' ? /^in-step / : /^paused-point /, 30_000)
      if (!point) throw new Error(dump('A', a))
      const [, runId, gen] = point.split(' ')
      expect(runId).toBe(run.id)
      expect(Number(gen)).toBe(1)
      a.child.kill('SIGSTOP')
      const stoppedAt = Date.now()
      // The step's output is only in A's memory; what A committed is on disk.
      const before = await d.getRun(run.id)
      expect(before.status).toBe('running')

      const b = spawn([db, resume], { FAULT_WHO: 'B', FAULT_MODE: mode })
      const bDone = await lineWithin(b, /^complete /, 30_000)
      if (!bDone) throw new Error(dump('B', b))
      // B could only take over once A's last heartbeat (at most heartbeatInterval = 100 ms
      // before the stop) was older than staleThreshold (400 ms).
      expect(Date.now() - stoppedAt).toBeGreaterThanOrEqual(280)
      const bExit = await exitWithin(b, 10_000)
      expect(bExit && bExit.code, dump('B', b)).toBe(0)

      const expected =
        mode === 'step'
          ? { who: 'B', first: 'A-first', slow: 'B-slow' } // A committed 'first'; B ran 'slow'
          : { who: 'B', first: 'A-first', slow: 'A-slow' } // both steps were A's; B replayed them
      const afterB = await d.getRun(run.id)
      expect(afterB.status).toBe('completed')
      expect(afterB.output).toEqual(expected)
      const stepsB = await d.getSteps(run.id)

      // Resume A: everything it tries now is refused.
      fs.writeFileSync(resume, '')
      a.child.kill('SIGCONT')
      const aExit = await exitWithin(a, 20_000)
      expect(aExit && aExit.code, dump('A', a)).toBe(0)
      const seen = a.lines
      console.log(`fault/fencing (${mode}) A saw: ${seen.join(' | ')}`)
      // A learned it lost the run: its signal fired with LeaseLostError…
      expect(seen, dump('A', a)).toContain('abort LeaseLostError LEASE_LOST')
      if (mode === 'step') {
        // …its step's write was refused and ctx.run rejected.
        expect(seen).toContain('step-fn-returns')
        expect(seen).toContain('step-rejected LeaseLostError LEASE_LOST')
        expect(seen.some((l) => l.startsWith('step-resolved'))).toBe(false)
      } else {
        expect(seen).toContain('job-returns')
      }
      expect(seen.some((l) => l.startsWith('complete ') || l.startsWith('fail '))).toBe(false)
      // Raw writes under A's generation, straight to the engine: refused.
      expect(seen).toContain('late-step l')
      expect(seen).toContain('late-complete l')
      expect(seen).toContain('late-progress l')

      const final = await d.getRun(run.id)
      expect(final.status).toBe('completed')
      expect(final.output).toEqual(expected)
      expect(final.progress).toBe(null)
      expect(final.updatedAt).toBe(afterB.updatedAt)
      expect(await d.getSteps(run.id)).toEqual(stepsB)
      if (audited) {
        const [[gens]] = sql(db, `SELECT lease_generation FROM runs WHERE id = '${run.id}'`)
        expect(gens).toBe(2) // A had 1, B 2
        const writes = sql(db, `SELECT name, output FROM fault_step_audit WHERE run_id = '${run.id}' ORDER BY rowid`)
        expect(writes).toEqual(
          mode === 'step'
            ? [
                ['first', '"A-first"'],
                ['slow', '"B-slow"'],
              ]
            : [
                ['first', '"A-first"'],
                ['slow', '"A-slow"'],
              ],
        )
        expect(sql(db, `SELECT status, output FROM fault_run_audit WHERE run_id = '${run.id}'`)).toEqual([
          ['completed', JSON.stringify(expected)],
        ])
      }
      await d.close()
    }, 60_000)
  }
})
