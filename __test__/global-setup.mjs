// Gives each `vitest run` its own temp root: TMPDIR points into it for the
// test processes (forked after this runs) and their children, and it is
// removed at the end. (Removing every recent /tmp/durably-* dir instead also
// deleted the databases of other vitest runs on the same machine mid-test.)
//
// Vitest runs a global setup once per project (vitest.config.mjs has two) and
// once for the root: only the first makes the root; the others keep it, so
// that TMPDIR stays short (Chromium's and PostgreSQL's socket paths under it
// must fit in 107 bytes).
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'

const MARK = 'DURABLY_VITEST_TMPDIR'

export default function setup() {
  if (process.env[MARK] && process.env[MARK] === process.env.TMPDIR) return undefined
  // Not named durably-*: older copies of this file remove those.
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'vitest-durably-'))
  fs.chmodSync(root, 0o755) // like /tmp, enterable by the unprivileged user of badfiles.test.mjs
  process.env.TMPDIR = root
  process.env[MARK] = root
  return () => fs.rmSync(root, { recursive: true, force: true })
}
