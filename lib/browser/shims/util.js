'use strict'
// The browser bundle's stand-in for node:util: `inspect` only shows a bad
// option value in an error message (lib/options.js).

function inspect(v) {
  if (typeof v === 'string') return `'${v}'`
  if (typeof v === 'function') return `[Function${v.name ? `: ${v.name}` : ''}]`
  try {
    return JSON.stringify(v) ?? String(v)
  } catch {
    return String(v)
  }
}

module.exports = { inspect }
