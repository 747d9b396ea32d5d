'use strict'
// Standard Schema (https://standardschema.dev) validation: Zod 4, Valibot,
// ArkType… all expose `~standard.validate`. No validator is a dependency.

const { ValidationError } = require('./errors')

function isSchema(s) {
  return s != null && typeof s === 'object' || typeof s === 'function'
    ? s['~standard'] != null && typeof s['~standard'].validate === 'function'
    : false
}

function formatPath(path) {
  if (!path || path.length === 0) return ''
  return path
    .map((p) => (p !== null && typeof p === 'object' && 'key' in p ? p.key : p))
    .map((k, i) => (typeof k === 'number' ? `[${k}]` : i === 0 ? String(k) : `.${String(k)}`))
    .join('')
}

function issuesMessage(issues) {
  return issues
    .map((i) => {
      const p = formatPath(i.path)
      return p ? `${p}: ${i.message}` : i.message
    })
    .join('; ')
}

function settle(result, what) {
  if (result.issues) throw new ValidationError(`${what}: ${issuesMessage(result.issues)}`)
  return result.value
}

/**
 * Validates `value`; returns the (possibly transformed) value, or a Promise of
 * it for async schemas. No schema → the value as is.
 */
function validate(schema, value, what) {
  if (!schema) return value
  const result = schema['~standard'].validate(value)
  if (result && typeof result.then === 'function') return result.then((r) => settle(r, what))
  return settle(result, what)
}

module.exports = { isSchema, validate }
