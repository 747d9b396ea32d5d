// Removes the temp databases the suites made: vitest's worker processes do
// not always run 'exit' handlers, so helpers.tempDir cannot rely on them.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'

export default function setup() {
  const started = Date.now()
  return () => {
    const tmp = os.tmpdir()
    for (const name of fs.readdirSync(tmp)) {
      if (!name.startsWith('durably-')) continue
      const dir = path.join(tmp, name)
      try {
        if (fs.statSync(dir).mtimeMs >= started - 1000) fs.rmSync(dir, { recursive: true, force: true })
      } catch {
        // already gone
      }
    }
  }
}
