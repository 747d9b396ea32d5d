// The TypeScript examples run as a user would (`npx tsx examples/<name>.ts`),
// each on a fresh database file, and must exit 0 on their own with the
// output they promise. (Their types are checked by types.test.js.)
import path from 'node:path'
import { spawn } from 'node:child_process'
import { createRequire } from 'node:module'
import { describe, expect, test } from 'vitest'
import helpers from './helpers.js'

const { ROOT, tempDb, tempDir, spawnNode, until } = helpers
const require = createRequire(import.meta.url)
const TSX = path.join(path.dirname(require.resolve('tsx/package.json')), 'dist', 'cli.mjs')

/** Runs an example with tsx; resolves its stdout lines once it exited 0 by itself. */
async function runExample(name) {
  const p = spawnNode(TSX, [path.join(ROOT, 'examples', name)], { env: { DURABLY_DB: tempDb(`${name}.db`) } })
  const killer = setTimeout(() => p.child.kill('SIGKILL'), 60_000)
  const { code, signal, stderr } = await p.exited
  clearTimeout(killer)
  expect({ code, signal, stderr }, p.lines.join('\n')).toEqual({ code: 0, signal: null, stderr: '' })
  return p.lines
}

const line = (lines, prefix) => lines.find((l) => l.startsWith(prefix))

describe('examples', () => {
  test('sync-users.ts: typed job fails on a flaky step, retry() finishes it without repeating steps', async () => {
    const lines = await runExample('sync-users.ts')
    expect(line(lines, 'triggered')).toMatch(/^triggered\s+\w{26} \(created\)$/)
    expect(line(lines, 'run:fail')).toContain('step save-acme-u3: upstream 503')
    expect(line(lines, 'completed')).toMatch(/synced 4 users, newest joined 2024-01-04T00:00:00.000Z$/)
    // fetch-users ran once; 4 saves + the failed one again.
    expect(line(lines, 'api calls')).toMatch(/fetchUsers=1 save=5$/)
    expect(line(lines, 'steps')).toMatch(/fetch-users:completed( save-acme-u\d:completed){4}$/)
    expect(line(lines, 'logs')).toMatch(/info starting/)
    // Progress writes are coalesced, but the last value always lands.
    expect(lines).toContain('run:progress 4/4 saved acme-u4')
    expect(line(lines, 'second run')).toMatch(/synced 4 users$/)
  }, 90_000)

  test('crash-resume.ts: a SIGKILLed worker\'s run is resumed by a new process', async () => {
    const lines = await runExample('crash-resume.ts')
    expect(lines).toContain('[main] worker exited with signal SIGKILL')
    expect(line(lines, '[main] found run')).toMatch(/\(idempotent, status (running|pending)\)$/)
    expect(lines).toContain('[main] run completed: charged 3 orders')
    const executed = lines.slice(lines.indexOf('[main] what really executed:') + 1).map((l) => l.trim().split(' (')[0])
    // Completed steps ran once; the interrupted one ran again in the new process.
    expect(executed).toEqual(['download', 'charge-o1', 'charge-o2', 'charge-o2', 'charge-o3', 'send-report'])
    expect(lines.filter((l) => l.startsWith('[main] executing step'))).toEqual([
      '[main] executing step charge-o2',
      '[main] executing step charge-o3',
      '[main] executing step send-report',
    ])
  }, 90_000)

  test('http-server.ts: trigger, SSE and tenant scoping over node:http', async () => {
    const lines = await runExample('http-server.ts')
    expect(line(lines, 'POST /trigger')).toBe('POST /trigger 200 created')
    const sse = lines.filter((l) => l.startsWith('SSE'))
    expect(sse[0]).toMatch(/^SSE\s+run:snapshot (pending|running)$/)
    expect(sse.at(-2)).toMatch(/run:progress \{"current":3,"total":3,"message":"c.png"\}$/)
    expect(sse.at(-1)).toMatch(/run:complete \{"resized":3\}$/)
    expect(line(lines, 'GET /run ')).toMatch(/completed terminal=true tenant=acme$/)
    expect(line(lines, 'GET /runs')).toMatch(/acme sees 1, globex sees 0$/)
    expect(line(lines, 'other tenant')).toBe('other tenant 404, no tenant 401')
  }, 90_000)
})

/** Starts `node examples/demo.js` in `cwd` (the demo uses ./durably.db); collects its stdout lines. */
function startDemo(cwd) {
  const demo = path.join(ROOT, 'examples', 'demo.js')
  const child = spawn(process.execPath, [demo], { cwd, stdio: ['ignore', 'pipe', 'pipe'] })
  const lines = []
  let buf = ''
  let stderr = ''
  child.stdout.on('data', (chunk) => {
    buf += chunk
    const parts = buf.split('\n')
    buf = parts.pop()
    lines.push(...parts)
  })
  child.stderr.on('data', (c) => (stderr += c))
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal, stderr })))
  const killer = setTimeout(() => child.kill('SIGKILL'), 60_000)
  exited.then(() => clearTimeout(killer))
  return { child, lines, exited }
}

describe('demo (npm run demo) with two processes on one database', () => {
  test('a second demo while the first is alive says so (not "killed"), waits, and reports the other finished', async () => {
    const cwd = tempDir()
    const a = startDemo(cwd)
    const ran = (step) => () => a.lines.some((l) => l.includes(step))
    await until(ran('fetch-page-1'), { timeout: 20_000, what: 'the first demo to commit a step' })
    const b = startDemo(cwd)
    const [ra, rb] = await Promise.all([a.exited, b.exited])
    expect(ra, a.lines.join('\n')).toEqual({ code: 0, signal: null, stderr: '' })
    expect(rb, b.lines.join('\n')).toEqual({ code: 0, signal: null, stderr: '' })
    expect(line(b.lines, 'Found run')).toMatch(/marked running by another process/)
    expect(line(b.lines, '  Another process is still running this run')).toBeDefined()
    expect(b.lines.filter((l) => /killed;|Taking the run over/.test(l)), b.lines.join('\n')).toEqual([])
    expect(line(b.lines, 'Done:')).toMatch(/^Done: the other process imported 150 orders/)
    expect(b.lines).toContain('Steps executed in this process: 0. Run again to start a new import.')
    expect(a.lines).toContain('Steps executed in this process: 7. Run again to start a new import.')
  }, 90_000)

  test('a demo started after the first was SIGKILLed says its heartbeat went stale, takes over and finishes', async () => {
    const cwd = tempDir()
    const a = startDemo(cwd)
    const ran = (step) => () => a.lines.some((l) => l.includes(step))
    await until(ran('fetch-page-2'), { timeout: 20_000, what: 'the first demo to commit two steps' })
    a.child.kill('SIGKILL')
    expect((await a.exited).signal).toBe('SIGKILL')
    const b = startDemo(cwd)
    const rb = await b.exited
    expect(rb, b.lines.join('\n')).toEqual({ code: 0, signal: null, stderr: '' })
    expect(line(b.lines, 'Found run')).toMatch(/marked running by another process, [23] step\(s\) committed so far/)
    expect(line(b.lines, '  Taking the run over')).toMatch(/stopped renewing its heartbeat/)
    expect(b.lines.filter((l) => l.includes('still running this run'))).toEqual([])
    expect(line(b.lines, 'Done:')).toMatch(/^Done: imported 150 orders/)
    // The steps A committed are replayed, not run again: B ran the rest (7 steps in all).
    const ranInB = b.lines.filter((l) => l.includes('ran now, result committed')).length
    const committedByA = Number(/, (\d) step/.exec(line(b.lines, 'Found run'))[1])
    expect(ranInB + committedByA).toBe(7)
  }, 90_000)
})

