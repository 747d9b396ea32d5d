// A consumer project's CommonJS module (require condition of "exports").
import durably = require('durably')

const d = durably.createDurably({ path: ':memory:' })
d.on('run:complete', (e) => e.output)
export const handler = durably.toNodeHandler(durably.createDurablyHandler(d))
