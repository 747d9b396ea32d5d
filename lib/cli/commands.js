'use strict'
// The CLI's commands. Each is { usage, help, options (node:util parseArgs),
// check?(values, positionals, UsageError), run(context) → exit code }.

const { NotFoundError } = require('../errors')
const { table, fmtTime, fmtDuration, between, runDuration, fmtProgress, fmtLabels, parseDuration, toJson, oneLine, clean } = require('./format')

const { STATUSES, TERMINAL } = require('../status')
const PAGE = 500
/** Resolves after `ms`, or at once when `signal` aborts; leaves no listener behind (tail sleeps thousands of times). */
const sleep = (ms, signal) =>
  new Promise((resolve) => {
    if (signal?.aborted) return resolve()
    const wake = () => {
      clearTimeout(t)
      signal?.removeEventListener('abort', wake)
      resolve()
    }
    const t = setTimeout(wake, ms)
    signal?.addEventListener('abort', wake, { once: true })
  })

const FILTER_OPTIONS = {
  status: { type: 'string', multiple: true },
  job: { type: 'string', multiple: true },
  label: { type: 'string', multiple: true },
}

const COMMON_HELP = `
Common options:
  --db <db>       the database file, or a postgres:// URL
                  (default: $DURABLY_DB, then $DURABLY_DATABASE_URL)
  --schema <s>    PostgreSQL: the schema durably uses (default durably)
  --json          machine-readable output: one JSON document
  -h, --help      this help`

function intOption(values, name, UsageError, { min = 0, max = Number.MAX_SAFE_INTEGER } = {}) {
  const v = values[name]
  if (v === undefined) return undefined
  if (!/^\d+$/.test(v) || Number(v) < min || Number(v) > max) {
    throw new UsageError(`--${name} must be an integer from ${min} to ${max} (got ${JSON.stringify(v)})`)
  }
  return Number(v)
}

/** `--status`, `--job`, `--label k=v` → a getRuns filter. */
function runFilter(values, UsageError) {
  const filter = {}
  const statuses = (values.status ?? []).flatMap((s) => s.split(','))
  for (const s of statuses) {
    if (!STATUSES.includes(s)) throw new UsageError(`unknown status ${JSON.stringify(s)} (one of ${STATUSES.join(', ')})`)
  }
  if (statuses.length) filter.status = statuses
  if (values.job?.length) filter.jobName = values.job
  if (values.label?.length) {
    filter.labels = {}
    for (const l of values.label) {
      const i = l.indexOf('=')
      if (i <= 0) throw new UsageError(`--label must be key=value (got ${JSON.stringify(l)})`)
      filter.labels[l.slice(0, i)] = l.slice(i + 1)
    }
  }
  return filter
}

function oneRunId(positionals, UsageError) {
  if (positionals.length !== 1) throw new UsageError(`expected one run id (got ${positionals.length})`)
}

async function mustGetRun(durably, id) {
  const run = await durably.getRun(id)
  if (!run) throw new NotFoundError(`run ${id} not found`)
  return run
}

async function allMatching(durably, filter) {
  const runs = []
  for (let offset = 0; ; offset += PAGE) {
    const page = await durably.getRuns({ ...filter, limit: PAGE, offset })
    runs.push(...page)
    if (page.length < PAGE) return runs
  }
}

function runRows(runs, paint) {
  return runs.map((r) => [
    r.id,
    oneLine(r.jobName),
    paint.status(r.status),
    fmtProgress(r.progress),
    fmtLabels(r.labels),
    fmtTime(r.createdAt),
    fmtDuration(runDuration(r)),
  ])
}

const RUN_HEADERS = ['ID', 'JOB', 'STATUS', 'PROGRESS', 'LABELS', 'CREATED', 'DURATION']

// ---- runs ------------------------------------------------------------------------------

const runs = {
  usage: 'Usage: durably runs [--status s] [--job j] [--label k=v] [--limit n] [--offset n]',
  options: { ...FILTER_OPTIONS, limit: { type: 'string' }, offset: { type: 'string' } },
  get help() {
    return `${this.usage}

Lists runs, newest first. Filters may be repeated (--status failed --status cancelled,
or --status failed,cancelled); all --label filters must match.
  --limit n    at most n runs (default 20)
  --offset n   skip the first n${COMMON_HELP}`
  },
  async run({ durably, values, json, out, paint, UsageError }) {
    const filter = runFilter(values, UsageError)
    filter.limit = intOption(values, 'limit', UsageError, { min: 1, max: 100_000 }) ?? 20
    const offset = intOption(values, 'offset', UsageError)
    if (offset !== undefined) filter.offset = offset
    const list = await durably.getRuns(filter)
    if (json) return out(toJson(list))
    if (list.length === 0) return out(paint.dim('no runs match'))
    out(table(RUN_HEADERS, runRows(list, paint), paint))
  },
}

// ---- show ------------------------------------------------------------------------------

function logLines(logs, paint) {
  const level = { info: paint.blue, warn: paint.yellow, error: paint.red }
  return logs.map((l) => {
    const data = l.data === null || l.data === undefined ? '' : ` ${paint.dim(oneLine(toJson(l.data, false)))}`
    return `${paint.grey(fmtTime(l.timestamp))}  ${(level[l.level] ?? String)(l.level.padEnd(5))}  ${paint.dim(`[${oneLine(l.stepName ?? '-')}]`)} ${oneLine(l.message)}${data}`
  })
}

const show = {
  usage: 'Usage: durably show <runId>',
  options: {},
  get help() {
    return `${this.usage}

Shows one run: status, input, output, error, labels, its steps with their
durations (the failed one marked) and its persisted logs.${COMMON_HELP}`
  },
  check: (v, p, UsageError) => oneRunId(p, UsageError),
  async run({ durably, positionals, json, out, paint }) {
    const run = await mustGetRun(durably, positionals[0])
    const [steps, logs] = await Promise.all([durably.getSteps(run.id), durably.getLogs(run.id)])
    if (json) return out(toJson({ run, steps, logs }))
    const kv = [
      ['Run', paint.bold(run.id)],
      ['Job', oneLine(run.jobName)],
      ['Status', paint.status(run.status)],
      ['Labels', fmtLabels(run.labels)],
      ['Progress', fmtProgress(run.progress)],
      ['Attempts', String(run.attempt)],
      ['Created', fmtTime(run.createdAt)],
      ['Started', fmtTime(run.startedAt)],
      ['Finished', fmtTime(run.completedAt)],
      ['Duration', fmtDuration(runDuration(run))],
      ['Input', oneLine(toJson(run.input, false) ?? 'undefined')],
    ]
    if (run.output !== null) kv.push(['Output', oneLine(toJson(run.output, false))])
    if (run.idempotencyKey !== null) kv.push(['Idempotency key', oneLine(run.idempotencyKey)])
    if (run.concurrencyKey !== null) kv.push(['Concurrency key', oneLine(run.concurrencyKey)])
    const w = Math.max(...kv.map(([k]) => k.length))
    for (const [k, v] of kv) out(`${paint.grey(k.padEnd(w))}  ${v}`)
    if (run.error) out(`${paint.grey('Error'.padEnd(w))}  ${paint.red(clean(run.error))}`)
    out('')
    out(paint.bold(`Steps (${steps.length})`))
    if (steps.length) {
      const rows = steps.map((s) => [
        String(s.index),
        s.status === 'failed' ? paint.red(`✗ ${oneLine(s.name)}`) : oneLine(s.name),
        paint.status(s.status),
        fmtDuration(between(s.startedAt, s.completedAt)),
        s.error ? paint.red(oneLine(s.error)) : '',
      ])
      out(table(['#', 'STEP', 'STATUS', 'DURATION', 'ERROR'], rows, paint))
    }
    out('')
    out(paint.bold(`Logs (${logs.length})`))
    for (const line of logLines(logs, paint)) out(line)
  },
}

// ---- logs ------------------------------------------------------------------------------

const logs = {
  usage: 'Usage: durably logs <runId> [-f] [--interval ms]',
  options: { follow: { type: 'boolean', short: 'f' }, interval: { type: 'string' } },
  get help() {
    return `${this.usage}

Prints a run's persisted logs (the worker must use withLogPersistence()).
  -f, --follow      keep printing new logs until the run finishes
  --interval ms     how often to look for new logs with -f (default 500)
With --json: one JSON array; with -f --json: one JSON object per line.${COMMON_HELP}`
  },
  check: (v, p, UsageError) => oneRunId(p, UsageError),
  async run({ durably, values, positionals, json, out, paint, UsageError, signal }) {
    const id = positionals[0]
    const every = intOption(values, 'interval', UsageError, { min: 10, max: 600_000 }) ?? 500
    await mustGetRun(durably, id)
    if (!values.follow) {
      const list = await durably.getLogs(id)
      if (json) return out(toJson(list))
      for (const line of logLines(list, paint)) out(line)
      return
    }
    const stop = stopSignal(signal)
    let printed = 0
    for (;;) {
      const run = await durably.getRun(id)
      const list = await durably.getLogs(id)
      for (const l of list.slice(printed)) out(json ? toJson(l, false) : logLines([l], paint)[0])
      printed = list.length
      if (!run) throw new NotFoundError(`run ${id} was deleted`)
      if (TERMINAL.has(run.status) || stop.aborted) return
      await sleep(every, stop)
    }
  },
}

/** Aborts on SIGINT/SIGTERM (or the caller's signal), so following commands end cleanly with 0. */
function stopSignal(outer) {
  const ac = new AbortController()
  const stop = () => ac.abort()
  process.once('SIGINT', stop)
  process.once('SIGTERM', stop)
  outer?.addEventListener('abort', stop, { once: true })
  return ac.signal
}

// ---- retry / cancel / delete ---------------------------------------------------------------

/** Applies `action` to each id; reports each; exit code of the first failure (0 when none). */
async function each(ids, action, { json, out, paint, stderr }, verb) {
  const results = []
  for (const id of ids) {
    try {
      const run = await action(id)
      results.push({ runId: id, ok: true, status: run ? run.status : 'deleted' })
      if (!json) out(`${paint.green('✓')} ${verb} ${id}${run ? ` (${paint.status(run.status)})` : ''}`)
    } catch (err) {
      const code = require('./main').exitCodeOf(err)
      results.push({ runId: id, ok: false, error: err.message, code: err.code ?? 'ERROR', exitCode: code })
      if (!json) stderr.write(`${paint.red('✗')} ${id}: ${err.message}\n`)
    }
  }
  const failed = results.find((r) => !r.ok)
  if (json) out(toJson({ results }))
  return failed ? failed.exitCode : 0
}

const retry = {
  usage: 'Usage: durably retry <runId…> | --failed [--job j] [--label k=v]',
  options: { failed: { type: 'boolean' }, job: FILTER_OPTIONS.job, label: FILTER_OPTIONS.label },
  get help() {
    return `${this.usage}

Puts failed or cancelled runs back to pending as the same runs: their completed
steps replay, the failed step runs again, in whichever worker claims them.
  --failed        every failed run (narrowed by --job and --label)
Exit code 4 when a run is not failed or cancelled, 3 when it does not exist.${COMMON_HELP}`
  },
  check(values, positionals, UsageError) {
    if (values.failed && positionals.length) throw new UsageError('give run ids or --failed, not both')
    if (!values.failed && !positionals.length) throw new UsageError('give run ids or --failed')
    if (!values.failed && (values.job || values.label)) throw new UsageError('--job and --label only go with --failed')
  },
  async run(ctx) {
    const { durably, values, positionals, UsageError } = ctx
    let ids = positionals
    if (values.failed) ids = (await allMatching(durably, { ...runFilter(values, UsageError), status: ['failed'] })).map((r) => r.id)
    if (values.failed && ids.length === 0 && !ctx.json) ctx.out(ctx.paint.dim('no failed runs match'))
    return each(ids, (id) => durably.retry(id), ctx, 'retried')
  },
}

const cancel = {
  usage: 'Usage: durably cancel <runId…>',
  options: {},
  get help() {
    return `${this.usage}

Cancels pending or running runs. A run executing in another process is told
at its next heartbeat: its AbortSignal fires and no later step is stored.
Exit code 4 when a run has already finished, 3 when it does not exist.${COMMON_HELP}`
  },
  check: (v, p, UsageError) => {
    if (!p.length) throw new UsageError('give the ids of the runs to cancel')
  },
  run: (ctx) => each(ctx.positionals, (id) => ctx.durably.cancel(id), ctx, 'cancelled'),
}

const del = {
  usage: 'Usage: durably delete <runId…>',
  options: {},
  get help() {
    return `${this.usage}

Deletes finished (completed, failed or cancelled) runs with their steps and logs.
Exit code 4 when a run is still pending or running, 3 when it does not exist.${COMMON_HELP}`
  },
  check: (v, p, UsageError) => {
    if (!p.length) throw new UsageError('give the ids of the runs to delete')
  },
  run: (ctx) =>
    each(
      ctx.positionals,
      async (id) => {
        await ctx.durably.deleteRun(id)
        return null
      },
      ctx,
      'deleted',
    ),
}

// ---- purge -----------------------------------------------------------------------------

const purge = {
  usage: 'Usage: durably purge --older-than <duration> [--dry-run]',
  options: { 'older-than': { type: 'string' }, 'dry-run': { type: 'boolean' } },
  get help() {
    return `${this.usage}

Deletes finished runs (with steps and logs) that finished longer ago than
<duration>: 500ms, 45s, 30m, 12h, 7d or 2w. Pending and running runs stay.
  --dry-run   only count what would be deleted${COMMON_HELP}`
  },
  check(values, positionals, UsageError) {
    if (positionals.length) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`)
    if (values['older-than'] === undefined) throw new UsageError('--older-than is required (e.g. --older-than 7d)')
    if (parseDuration(values['older-than']) === null) {
      throw new UsageError(`--older-than must be a duration over zero like 7d, 12h, 30m (got ${JSON.stringify(values['older-than'])})`)
    }
  },
  async run({ durably, values, json, out }) {
    const olderThan = new Date(Date.now() - parseDuration(values['older-than']))
    if (values['dry-run']) {
      const finished = await allMatching(durably, { status: [...TERMINAL] })
      const n = finished.filter((r) => Date.parse(r.completedAt ?? r.updatedAt) < olderThan.getTime()).length
      if (json) return out(toJson({ dryRun: true, olderThan: olderThan.toISOString(), wouldDelete: n }))
      return out(`would delete ${n} run(s) finished before ${olderThan.toISOString()}`)
    }
    let total = 0
    for (;;) {
      const n = await durably.purgeRuns({ olderThan, limit: 1000 })
      total += n
      if (n < 1000) break
    }
    if (json) return out(toJson({ dryRun: false, olderThan: olderThan.toISOString(), deleted: total }))
    out(`deleted ${total} run(s) finished before ${olderThan.toISOString()}`)
  },
}

// ---- stats -----------------------------------------------------------------------------

const stats = {
  usage: 'Usage: durably stats',
  options: {},
  get help() {
    return `${this.usage}

How many runs there are per status, in total and per job.${COMMON_HELP}`
  },
  async run({ durably, json, out, paint }) {
    const s = await durably.getStats()
    if (json) return out(toJson(s))
    const rows = Object.entries(s.byJob).map(([job, c]) => [oneLine(job), ...STATUSES.map((st) => String(c[st])), String(c.total)])
    rows.push([paint.bold('all'), ...STATUSES.map((st) => paint.bold(String(s.byStatus[st]))), paint.bold(String(s.total))])
    out(table(['JOB', ...STATUSES.map((st) => paint.status(st.toUpperCase())), 'TOTAL'], rows, paint))
  },
}

// ---- tail ------------------------------------------------------------------------------

const EVENT_BY_STATUS = { running: 'run:start', completed: 'run:complete', failed: 'run:fail', cancelled: 'run:cancel' }

/** What changed between two observations of one run (null: first sight of it). */
function changes(prev, run) {
  if (!prev) return run.status === 'pending' ? ['run:trigger'] : ['run:trigger', EVENT_BY_STATUS[run.status]]
  if (prev.status !== run.status) {
    if (run.status === 'pending') return [TERMINAL.has(prev.status) ? 'run:retry' : 'run:requeue']
    return [EVENT_BY_STATUS[run.status]]
  }
  if (JSON.stringify(prev.progress) !== JSON.stringify(run.progress)) return ['run:progress']
  return []
}

const tail = {
  usage: 'Usage: durably tail [--job j] [--label k=v] [--interval ms]',
  options: { job: FILTER_OPTIONS.job, label: FILTER_OPTIONS.label, interval: { type: 'string' } },
  get help() {
    return `${this.usage}

Follows runs as they change, whichever process triggers or executes them,
until Ctrl-C. Changes are read from the database every --interval ms (default 500):
run:trigger, run:start, run:progress, run:complete, run:fail, run:cancel,
run:retry, run:requeue (handed back to pending) and run:delete.
With --json: one JSON object per line.${COMMON_HELP}`
  },
  check(values, positionals, UsageError) {
    if (positionals.length) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`)
  },
  async run({ durably, values, json, out, paint, stderr, UsageError, signal }) {
    const filter = runFilter(values, UsageError)
    const every = intOption(values, 'interval', UsageError, { min: 10, max: 600_000 }) ?? 500
    const stop = stopSignal(signal)
    const seen = new Map() // id → { status, progress, updatedAt }
    const emit = (type, run) => {
      const e = {
        type,
        runId: run.id,
        jobName: run.jobName,
        status: type === 'run:delete' ? 'deleted' : run.status,
        labels: run.labels,
        progress: run.progress,
        error: run.error,
        attempt: run.attempt,
        timestamp: new Date().toISOString(),
      }
      if (json) return out(toJson(e, false))
      const detail = type === 'run:fail' ? paint.red(oneLine(run.error ?? '')) : type === 'run:progress' ? fmtProgress(run.progress) : ''
      out(`${paint.grey(fmtTime(e.timestamp))}  ${type.padEnd(12)}  ${run.id}  ${oneLine(run.jobName)}  ${paint.status(e.status)}  ${detail}`.trimEnd())
    }
    let first = true
    if (!json) stderr.write(paint.dim('following runs (Ctrl-C to stop)…\n'))
    while (!stop.aborted) {
      const now = new Map()
      for (const r of await durably.getRuns({ ...filter, limit: 100 })) now.set(r.id, r)
      for (const r of await durably.getRuns({ ...filter, status: ['pending', 'running'], limit: 10_000 })) now.set(r.id, r)
      // Runs seen before that left both windows: deleted, finished, or only
      // pushed out of the newest 100 (then forgotten).
      for (const [id, prev] of seen) {
        if (now.has(id)) continue
        const r = await durably.getRun(id)
        if (!r) {
          if (!first) emit('run:delete', prev.run)
          seen.delete(id)
        } else if (TERMINAL.has(prev.status) && r.status === prev.status) seen.delete(id)
        else now.set(id, r)
      }
      // Oldest first, so a batch of changes prints in the order runs were created.
      for (const r of [...now.values()].sort((a, b) => (a.id < b.id ? -1 : 1))) {
        const prev = seen.get(r.id)
        if (!first) for (const type of changes(prev, r)) emit(type, r)
        seen.set(r.id, { status: r.status, progress: r.progress, run: r })
      }
      first = false
      await sleep(every, stop)
    }
  },
}

const COMMANDS = { runs, show, logs, retry, cancel, delete: del, purge, stats, tail }

module.exports = { COMMANDS, changes, runFilter, sleep }
