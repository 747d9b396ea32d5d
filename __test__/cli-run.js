'use strict'
// Runs the `durably` CLI for real (node bin/durably.js) for the CLI suites
// (cli.test.mjs on SQLite files, cli-pg.test.mjs on PostgreSQL).

const path = require('node:path')
const { spawn } = require('node:child_process')
const { ROOT } = require('./helpers.js')

const BIN = path.join(ROOT, 'bin', 'durably.js')

/**
 * Runs the CLI to its end: { code, stdout, stderr }. `db` becomes DURABLY_DB;
 * no DURABLY_DB or DURABLY_DATABASE_URL of the caller's environment leaks in
 * unless `env` sets it.
 */
function cli(args, { env = {}, db } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      cwd: ROOT,
      env: { ...process.env, NO_COLOR: '', FORCE_COLOR: '', DURABLY_DB: db ?? '', DURABLY_DATABASE_URL: '', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (c) => (stdout += c))
    child.stderr.on('data', (c) => (stderr += c))
    child.on('error', reject)
    child.on('exit', (code) => resolve({ code, stdout, stderr }))
  })
}

/** `cli` with --json: also `body`, the parsed stdout (undefined when empty). */
async function json(args, opts) {
  const r = await cli([...args, '--json'], opts)
  return { ...r, body: r.stdout ? JSON.parse(r.stdout) : undefined }
}

/**
 * Starts `durably tail --json --interval 50 <args…>` and collects the
 * events it prints: { child, events, exit } (exit resolves with its code).
 */
function tailJson(args) {
  const child = spawn(process.execPath, [BIN, 'tail', '--json', '--interval', '50', ...args], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const events = []
  let buf = ''
  child.stdout.on('data', (c) => {
    buf += c
    for (let i; (i = buf.indexOf('\n')) >= 0; buf = buf.slice(i + 1)) events.push(JSON.parse(buf.slice(0, i)))
  })
  const exit = new Promise((resolve) => child.on('exit', (code) => resolve(code)))
  return { child, events, exit }
}

module.exports = { BIN, cli, json, tailJson }
