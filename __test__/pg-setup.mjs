// Setup file of the `postgres` vitest project (vitest.config.mjs): the
// schemas this test file's instances created (one per makeDurably/testStore
// call, see __test__/pg.js) are dropped once the file is done; its own
// afterEach/afterAll hooks (closeAll) have run by then.
import { createRequire } from 'node:module'
import { afterAll } from 'vitest'

const require = createRequire(import.meta.url)
const { dropSchemas } = require('./pg.js')

afterAll(async () => {
  await require('./helpers.js').closeAll()
  dropSchemas()
})
