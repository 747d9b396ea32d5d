'use strict'
// The dashboard's static files (lib/ui/*.html|css|js), served by the HTTP
// handler under `<basePath>/ui` with a strict CSP. No build step: the files
// on disk are what the browser gets.

const fs = require('node:fs')
const path = require('node:path')
const { ValidationError } = require('../errors')

const FILES = {
  '/ui': ['index.html', 'text/html; charset=utf-8'],
  '/ui/app.js': ['app.js', 'text/javascript; charset=utf-8'],
  '/ui/app.css': ['app.css', 'text/css; charset=utf-8'],
}

// Only the page's own files and the handler's routes; no inline script or
// style, so even a value that slipped into markup could not execute.
const CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "connect-src 'self'",
  "img-src 'self' data:",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ')

const UI_HEADERS = {
  'content-security-policy': CSP,
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
  'cache-control': 'no-cache',
}

const cache = new Map()
function read(name) {
  let text = cache.get(name)
  if (text === undefined) {
    text = fs.readFileSync(path.join(__dirname, name), 'utf8')
    cache.set(name, text)
  }
  return text
}

const escapeHtml = (s) =>
  String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c])

/** `ui` option → `null` (no dashboard) or `{ title, readOnly }` (`readOnly` may be `(ctx, request) => boolean`). */
function checkUiOption(ui) {
  if (ui === undefined || ui === false || ui === null) return null
  if (ui === true) return { title: 'durably', readOnly: false }
  if (typeof ui !== 'object' || Array.isArray(ui)) {
    throw new ValidationError('createDurablyHandler: ui must be true or { readOnly?, title? }')
  }
  for (const k of Object.keys(ui)) {
    if (k !== 'readOnly' && k !== 'title') throw new ValidationError(`createDurablyHandler: unknown ui option ${k}`)
  }
  const { title = 'durably', readOnly = false } = ui
  if (typeof title !== 'string' || title.length > 200) {
    throw new ValidationError('createDurablyHandler: ui.title must be a string of at most 200 characters')
  }
  if (typeof readOnly !== 'boolean' && typeof readOnly !== 'function') {
    throw new ValidationError('createDurablyHandler: ui.readOnly must be a boolean or (ctx, request) => boolean')
  }
  return { title, readOnly }
}

/** Whether this request may only read (the dashboard hides actions; the handler answers 403). */
async function isReadOnly(ui, ctx, request) {
  if (!ui) return false
  if (typeof ui.readOnly === 'function') return (await ui.readOnly(ctx, request)) === true
  return ui.readOnly
}

/** The response for a dashboard path, or null when `routePath` is not one. */
function uiResponse(ui, routePath, base, readOnly, method) {
  const file = FILES[routePath]
  if (!file) return null
  if (method !== 'GET' && method !== 'HEAD') {
    return new Response(JSON.stringify({ error: `method ${method} not allowed on ${routePath} (allowed: GET)` }), {
      status: 405,
      headers: { 'content-type': 'application/json; charset=utf-8', allow: 'GET' },
    })
  }
  let body = read(file[0])
  if (file[0] === 'index.html') {
    // Server-made values reach the page only as escaped attribute text.
    const config = JSON.stringify({ base, title: ui.title, readOnly })
    body = body.replaceAll('%TITLE%', escapeHtml(ui.title)).replaceAll('%BASE%', escapeHtml(base)).replace('%CONFIG%', escapeHtml(config))
  }
  return new Response(body, { status: 200, headers: { ...UI_HEADERS, 'content-type': file[1] } })
}

module.exports = { checkUiOption, isReadOnly, uiResponse, CSP }
