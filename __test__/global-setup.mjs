// Gives each `vitest run` its own temp root: TMPDIR points into it for the
// test processes (forked after this runs) and their children, and it is
// removed at the end. (Removing every recent /tmp/durably-* dir instead also
// deleted the databases of other vitest runs on the same machine mid-test.)
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'

export default function setup() {
  // Not named durably-*: older copies of this file remove those.
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'vitest-durably-'))
  fs.chmodSync(root, 0o755) // like /tmp, enterable by the unprivileged user of badfiles.test.mjs
  process.env.TMPDIR = root
  return () => fs.rmSync(root, { recursive: true, force: true })
}
