#!/usr/bin/env node
'use strict'
// `npx durably <command> --db app.db`: see lib/cli/main.js.

require('../lib/cli/main')
  .main(process.argv.slice(2))
  .then(
    (code) => {
      process.exitCode = code
    },
    (err) => {
      process.stderr.write(`error: ${err && err.stack ? err.stack : err}\n`)
      process.exitCode = 1
    },
  )
