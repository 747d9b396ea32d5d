// index.d.ts inference: `tsc --noEmit` over a typed fixture (and the
// examples). A drift in inference fails an `Expect<Equal<…>>` or leaves an
// `@ts-expect-error` unused, and tsc exits non-zero.
import path from 'node:path'
import { execFile } from 'node:child_process'
import { createRequire } from 'node:module'
import { expect, test } from 'vitest'
import helpers from './helpers.js'

const { ROOT } = helpers
const require = createRequire(import.meta.url)

/** Runs tsc in a child process; resolves { code, out }. */
function tsc(args) {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [require.resolve('typescript/bin/tsc'), ...args],
      { cwd: ROOT, maxBuffer: 16 * 1024 * 1024 },
      (error, stdout, stderr) => resolve({ code: error ? (error.code ?? 1) : 0, out: `${stdout}${stderr}` }),
    )
  })
}

test('index.d.ts infers job, handle, event and error types (tsc --noEmit over the fixture and examples)', async () => {
  const r = await tsc(['--noEmit', '--pretty', 'false', '-p', path.join(ROOT, '__test__', 'types', 'tsconfig.json')])
  // The compiler's messages are the useful failure output.
  expect(r.out).toBe('')
  expect(r.code).toBe(0)
}, 180_000)
