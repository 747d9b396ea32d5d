// durably dashboard: a plain ES module over the handler's own routes.
// Every value from the server reaches the page through text nodes
// (textContent), never through markup, so run data cannot inject HTML.

const config = JSON.parse(document.querySelector('meta[name="durably-config"]').content)
const BASE = config.base
const STATUSES = ['pending', 'running', 'completed', 'failed', 'cancelled']
const TERMINAL = new Set(['completed', 'failed', 'cancelled'])
const PAGE_SIZE = 25
// Runs executed by other processes raise no event here: look again this often.
const POLL_MS = 5000
const main = document.getElementById('main')

// ---- small helpers ------------------------------------------------------------

/** Creates an element; string children become text nodes. */
function h(tag, props, ...children) {
  const el = document.createElement(tag)
  for (const [k, v] of Object.entries(props ?? {})) {
    if (v === undefined || v === null || v === false) continue
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v)
    else if (k === 'class') el.className = v
    else if (k === 'style') for (const [p, x] of Object.entries(v)) el.style.setProperty(p, x)
    else if (k === 'checked' || k === 'disabled' || k === 'value') el[k] = v
    else el.setAttribute(k, v === true ? '' : String(v))
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue
    el.append(c instanceof Node ? c : document.createTextNode(String(c)))
  }
  return el
}

async function api(method, path, params) {
  const url = new URL(BASE + path, location.origin)
  for (const [k, v] of params ?? []) url.searchParams.append(k, v)
  const res = await fetch(url, { method, credentials: 'same-origin', headers: { accept: 'application/json' } })
  const body = await res.json().catch(() => ({}))
  if (!res.ok) {
    const err = new Error(body.error || `${res.status} ${res.statusText}`)
    err.status = res.status
    throw err
  }
  return body
}

let toastTimer
function toast(message) {
  const el = document.getElementById('toast')
  el.textContent = message
  el.classList.add('show')
  clearTimeout(toastTimer)
  toastTimer = setTimeout(() => el.classList.remove('show'), 4000)
}

function fmtTime(iso) {
  if (!iso) return '—'
  const d = new Date(iso)
  return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString()
}

function fmtDuration(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '—'
  if (ms < 1000) return `${Math.round(ms)} ms`
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`
  const m = Math.floor(ms / 60_000)
  return m < 60 ? `${m} m ${Math.round((ms % 60_000) / 1000)} s` : `${Math.floor(m / 60)} h ${m % 60} m`
}

const between = (a, b) => (a ? (b ? Date.parse(b) : Date.now()) - Date.parse(a) : null)
// A retried run keeps its old startedAt while pending: no duration then.
const runDuration = (r) => (r.status === 'pending' ? null : between(r.startedAt, r.completedAt))

function pretty(v) {
  if (v === undefined) return 'undefined'
  try {
    return JSON.stringify(v, null, 2)
  } catch {
    return String(v)
  }
}

const badge = (status) => h('span', { class: `badge s-${status}`, 'data-status': status }, status)
const chips = (labels) => Object.entries(labels ?? {}).map(([k, v]) => h('span', { class: 'chip' }, `${k}=${v}`))

function progressCell(p) {
  const wrap = h('div', { class: 'progress' })
  fillProgress(wrap, p)
  return wrap
}

function fillProgress(wrap, p) {
  wrap.replaceChildren()
  if (!p) return wrap.append(h('small', null, '—'))
  const pct = p.total ? Math.max(0, Math.min(100, (p.current / p.total) * 100)) : null
  const bar = h('div', { class: 'bar', role: 'progressbar', 'aria-valuenow': p.current, 'aria-valuemax': p.total ?? '' })
  bar.append(h('i', { style: { width: `${pct ?? 100}%` } }))
  const text = p.total ? `${p.current}/${p.total}` : String(p.current)
  wrap.append(bar, h('small', { class: 'ptext' }, p.message ? `${text} · ${p.message}` : text))
}

/** A live event stream; `onEvent` gets parsed events. Returns a close function. */
function stream(path, params, onEvent) {
  const url = new URL(BASE + path, location.origin)
  for (const [k, v] of params) url.searchParams.append(k, v)
  const es = new EventSource(url, { withCredentials: true })
  const live = document.getElementById('live')
  es.onopen = () => live.classList.add('on')
  es.onerror = () => live.classList.remove('on')
  es.onmessage = (m) => {
    let e
    try {
      e = JSON.parse(m.data)
    } catch {
      return
    }
    onEvent(e, () => es.close())
  }
  return () => {
    es.close()
    live.classList.remove('on')
  }
}

function debounce(fn, ms) {
  let t
  return () => {
    clearTimeout(t)
    t = setTimeout(fn, ms)
  }
}

// ---- routing: all view state lives in the query string ----------------------------

let cleanup = () => {}

function navigate(search) {
  history.pushState(null, '', `${BASE}/ui${search ? `?${search}` : ''}`)
  route()
}

function route() {
  cleanup()
  cleanup = () => {}
  const params = new URLSearchParams(location.search)
  const runId = params.get('run')
  if (runId) showRun(runId)
  else showList(params)
  refreshCounts()
}

window.addEventListener('popstate', route)
document.getElementById('home').addEventListener('click', (ev) => {
  ev.preventDefault()
  navigate('')
})

async function refreshCounts() {
  const nav = document.getElementById('counts')
  try {
    const stats = await api('GET', '/stats')
    nav.replaceChildren(
      ...STATUSES.map((s) =>
        h(
          'a',
          {
            href: `${BASE}/ui?status=${s}`,
            'data-count': s,
            onclick: (ev) => {
              ev.preventDefault()
              navigate(`status=${s}`)
            },
          },
          s,
          h('b', null, String(stats.byStatus[s] ?? 0)),
        ),
      ),
    )
  } catch {
    nav.replaceChildren()
  }
}

// ---- runs list -----------------------------------------------------------------------

/** Filters from the URL: `status`, `jobName`, `label.<k>=<v>`, `page`. */
function listState(params) {
  const labels = []
  for (const [k, v] of params) if (k.startsWith('label.') && k.length > 6) labels.push([k.slice(6), v])
  return {
    status: params.get('status') ?? '',
    jobName: params.get('jobName') ?? '',
    labels,
    page: Math.max(1, Number.parseInt(params.get('page') ?? '1', 10) || 1),
  }
}

function stateSearch(st) {
  const p = new URLSearchParams()
  if (st.status) p.set('status', st.status)
  if (st.jobName) p.set('jobName', st.jobName)
  for (const [k, v] of st.labels) p.append(`label.${k}`, v)
  if (st.page > 1) p.set('page', String(st.page))
  return p.toString()
}

function parseLabels(text) {
  const out = []
  for (const part of text.split(/[,\s]+/)) {
    if (!part) continue
    const i = part.indexOf('=')
    if (i <= 0) throw new Error(`label filter "${part}" must be key=value`)
    out.push([part.slice(0, i), part.slice(i + 1)])
  }
  return out
}

function showList(params) {
  const st = listState(params)
  const selected = new Set()
  const rows = new Map() // runId → { run, tr, progress }
  const ro = config.readOnly

  const jobSelect = h('select', { name: 'jobName', 'aria-label': 'job' }, h('option', { value: '' }, 'all jobs'))
  const statusSelect = h(
    'select',
    { name: 'status', 'aria-label': 'status' },
    h('option', { value: '' }, 'all statuses'),
    STATUSES.map((s) => h('option', { value: s }, s)),
  )
  statusSelect.value = st.status
  const labelInput = h('input', {
    name: 'labels',
    placeholder: 'key=value, …',
    value: st.labels.map(([k, v]) => `${k}=${v}`).join(', '),
    size: 28,
  })
  const apply = () => {
    try {
      navigate(stateSearch({ status: statusSelect.value, jobName: jobSelect.value, labels: parseLabels(labelInput.value), page: 1 }))
    } catch (err) {
      toast(err.message)
    }
  }
  statusSelect.onchange = apply
  jobSelect.onchange = apply
  labelInput.onkeydown = (ev) => ev.key === 'Enter' && apply()

  const filters = h(
    'div',
    { class: 'card filters' },
    h('label', null, 'Status', statusSelect),
    h('label', null, 'Job', jobSelect),
    h('label', null, 'Labels', labelInput),
    h('button', { onclick: apply, id: 'apply' }, 'Apply'),
    h('button', { onclick: () => navigate(''), id: 'clear' }, 'Clear'),
  )

  const count = h('span', { class: 'muted', id: 'selected-count' })
  const bulkButtons = ro
    ? []
    : [
        h('button', { id: 'bulk-retry', onclick: () => bulk('retry') }, 'Retry selected'),
        h('button', { id: 'bulk-cancel', onclick: () => bulk('cancel') }, 'Cancel selected'),
        h('button', { id: 'bulk-delete', class: 'danger', onclick: () => bulk('delete') }, 'Delete selected'),
      ]
  const bulkBar = h('div', { class: 'bulk' }, bulkButtons, count)
  const allBox = h('input', { type: 'checkbox', 'aria-label': 'select all', id: 'select-all' })
  allBox.onchange = () => {
    for (const [id, r] of rows) {
      r.box.checked = allBox.checked
      if (allBox.checked) selected.add(id)
      else selected.delete(id)
    }
    syncBulk()
  }
  const tbody = h('tbody')
  const table = h(
    'table',
    { id: 'runs' },
    h(
      'thead',
      null,
      h('tr', null, ro ? null : h('th', null, allBox), ['Run', 'Job', 'Status', 'Progress', 'Labels', 'Created', 'Duration'].map((t) => h('th', null, t))),
    ),
    tbody,
  )
  const prev = h('button', { id: 'prev', onclick: () => navigate(stateSearch({ ...st, page: st.page - 1 })) }, '← Newer')
  const next = h('button', { id: 'next', onclick: () => navigate(stateSearch({ ...st, page: st.page + 1 })) }, 'Older →')
  const pageText = h('span', { class: 'muted' }, `page ${st.page}`)
  main.replaceChildren(filters, bulkBar, table, h('div', { class: 'pager' }, prev, pageText, next))

  function syncBulk() {
    count.textContent = selected.size ? `${selected.size} selected` : ''
    for (const b of bulkButtons) b.disabled = selected.size === 0
    allBox.checked = rows.size > 0 && [...rows.keys()].every((id) => selected.has(id))
  }

  function row(run) {
    const box = h('input', { type: 'checkbox', 'aria-label': `select ${run.id}`, checked: selected.has(run.id) })
    box.onchange = () => {
      if (box.checked) selected.add(run.id)
      else selected.delete(run.id)
      syncBulk()
    }
    const progress = progressCell(run.progress)
    const link = h('a', { href: `${BASE}/ui?run=${encodeURIComponent(run.id)}`, class: 'mono' }, run.id)
    link.onclick = (ev) => {
      ev.preventDefault()
      navigate(`run=${encodeURIComponent(run.id)}`)
    }
    const tr = h(
      'tr',
      { class: 'run', 'data-run-id': run.id, 'data-status': run.status },
      ro ? null : h('td', null, box),
      h('td', null, link),
      h('td', null, run.jobName),
      h('td', null, badge(run.status)),
      h('td', null, progress),
      h('td', { class: 'labels' }, chips(run.labels)),
      h('td', null, fmtTime(run.createdAt)),
      h('td', null, fmtDuration(runDuration(run))),
    )
    return { run, tr, box, progress }
  }

  const queryParams = (extra) => {
    const q = []
    if (st.status) q.push(['status', st.status])
    if (st.jobName) q.push(['jobName', st.jobName])
    for (const [k, v] of st.labels) q.push([`label.${k}`, v])
    return q.concat(extra ?? [])
  }

  let loading = false
  let again = false
  async function load() {
    if (loading) {
      again = true
      return
    }
    loading = true
    try {
      const runs = await api('GET', '/runs', queryParams([['limit', String(PAGE_SIZE + 1)], ['offset', String((st.page - 1) * PAGE_SIZE)]]))
      const page = runs.slice(0, PAGE_SIZE)
      rows.clear()
      tbody.replaceChildren()
      for (const run of page) {
        const r = row(run)
        rows.set(run.id, r)
        tbody.append(r.tr)
      }
      if (page.length === 0) tbody.append(h('tr', null, h('td', { colspan: 8, class: 'empty' }, 'No runs match.')))
      for (const id of [...selected]) if (!rows.has(id)) selected.delete(id)
      prev.disabled = st.page <= 1
      next.disabled = runs.length <= PAGE_SIZE
      table.dataset.loaded = String(Date.now())
      syncBulk()
    } catch (err) {
      tbody.replaceChildren(h('tr', null, h('td', { colspan: 8, class: 'empty' }, `Could not load runs: ${err.message}`)))
    } finally {
      loading = false
      if (again) {
        again = false
        load()
      }
    }
  }

  async function bulk(action) {
    const ids = [...selected]
    if (ids.length === 0) return
    if (action !== 'retry' && !confirm(`${action} ${ids.length} run(s)?`)) return
    let ok = 0
    const failed = []
    for (const id of ids) {
      try {
        if (action === 'delete') await api('DELETE', '/run', [['runId', id]])
        else await api('POST', `/${action}`, [['runId', id]])
        ok++
      } catch (err) {
        failed.push(`${id}: ${err.message}`)
      }
    }
    selected.clear()
    toast(`${action}: ${ok} done${failed.length ? `, ${failed.length} refused\n${failed.slice(0, 3).join('\n')}` : ''}`)
    load()
    refreshCounts()
  }

  api('GET', '/jobs')
    .then((jobs) => {
      for (const j of jobs) jobSelect.append(h('option', { value: j.name }, j.name))
      if (st.jobName && !jobs.some((j) => j.name === st.jobName)) jobSelect.append(h('option', { value: st.jobName }, st.jobName))
      jobSelect.value = st.jobName
    })
    .catch(() => {})
  load()

  const reload = debounce(() => {
    load()
    refreshCounts()
  }, 150)
  const subParams = []
  if (st.jobName) subParams.push(['jobName', st.jobName])
  for (const [k, v] of st.labels) subParams.push([`label.${k}`, v])
  const close = stream('/runs/subscribe', subParams, (e) => {
    const r = rows.get(e.runId)
    if (e.type === 'run:progress') {
      if (r) fillProgress(r.progress, e.progress)
      return
    }
    if (e.type === 'log:write' || e.type.startsWith('step:')) return
    reload()
  })
  const timer = setInterval(() => {
    if (document.hidden) return
    load()
    refreshCounts()
  }, POLL_MS)
  cleanup = () => {
    close()
    clearInterval(timer)
  }
}

// ---- run detail --------------------------------------------------------------------------

function showRun(runId) {
  const ro = config.readOnly
  const back = h('a', { href: `${BASE}/ui`, id: 'back' }, '← All runs')
  back.onclick = (ev) => {
    ev.preventDefault()
    history.length > 1 ? history.back() : navigate('')
  }
  const view = h('div', { id: 'run', 'data-run-id': runId }, h('p', { class: 'muted' }, 'Loading…'))
  main.replaceChildren(h('p', null, back), view)
  let closeStream = null
  let progressEl = null
  let stopped = false

  async function act(action) {
    if ((action === 'delete' || action === 'cancel') && !confirm(`${action} run ${runId}?`)) return
    try {
      const res =
        action === 'delete' ? await api('DELETE', '/run', [['runId', runId]]) : await api('POST', `/${action}`, [['runId', runId]])
      toast(`${action}: done`)
      if (action === 'delete') return navigate('')
      if (action === 'retrigger' && res.runId) return navigate(`run=${encodeURIComponent(res.runId)}`)
      load()
    } catch (err) {
      toast(`${action} refused: ${err.message}`)
    }
  }

  function render(run, steps, logs) {
    const terminal = TERMINAL.has(run.status)
    const actions = ro
      ? null
      : h(
          'div',
          { class: 'actions' },
          h('button', { id: 'retry', disabled: !(run.status === 'failed' || run.status === 'cancelled'), onclick: () => act('retry') }, 'Retry'),
          h('button', { id: 'retrigger', disabled: !terminal, onclick: () => act('retrigger') }, 'Retrigger'),
          h('button', { id: 'cancel', disabled: terminal, onclick: () => act('cancel') }, 'Cancel'),
          h('button', { id: 'delete', class: 'danger', disabled: !terminal, onclick: () => act('delete') }, 'Delete'),
        )
    progressEl = progressCell(run.progress)
    const head = h(
      'div',
      { class: 'card' },
      h('div', { class: 'head' }, h('h1', null, run.jobName), badge(run.status), h('span', { class: 'mono muted' }, run.id), actions),
      h(
        'dl',
        { class: 'meta' },
        h('dt', null, 'Labels'),
        h('dd', { class: 'labels' }, Object.keys(run.labels ?? {}).length ? chips(run.labels) : '—'),
        h('dt', null, 'Progress'),
        h('dd', null, progressEl),
        h('dt', null, 'Attempts'),
        h('dd', { id: 'attempts' }, String(run.attempt ?? '—')),
        h('dt', null, 'Created'),
        h('dd', null, fmtTime(run.createdAt)),
        h('dt', null, 'Started'),
        h('dd', null, fmtTime(run.startedAt)),
        h('dt', null, 'Finished'),
        h('dd', null, fmtTime(run.completedAt)),
        h('dt', null, 'Duration'),
        h('dd', null, fmtDuration(runDuration(run))),
      ),
    )
    const error = run.error ? h('div', { class: 'card' }, h('h2', null, 'Error'), h('pre', { class: 'error', id: 'error' }, run.error)) : null
    const io = h(
      'div',
      { class: 'grid2' },
      h('div', { class: 'card' }, h('h2', null, 'Input'), h('pre', { id: 'input' }, pretty(run.input))),
      h('div', { class: 'card' }, h('h2', null, 'Output'), h('pre', { id: 'output' }, run.output === null ? '—' : pretty(run.output))),
    )
    main.replaceChildren(h('p', null, back), h('div', { id: 'run', 'data-run-id': runId, 'data-status': run.status }, head, error, stepsCard(run, steps, logs), io))
  }

  function logLines(list) {
    if (!list.length) return null
    return h(
      'div',
      { class: 'logs' },
      list.map((l) =>
        h(
          'div',
          { class: 'log' },
          h('span', { class: 'muted' }, new Date(l.timestamp).toLocaleTimeString()),
          h('span', { class: `l-${l.level}` }, l.level),
          h('span', { class: 'msg' }, l.message),
          l.data === null || l.data === undefined ? null : h('span', { class: 'data' }, JSON.stringify(l.data)),
        ),
      ),
    )
  }

  function stepsCard(run, steps, logs) {
    const byStep = new Map()
    for (const l of logs) {
      const k = l.stepName ?? ''
      if (!byStep.has(k)) byStep.set(k, [])
      byStep.get(k).push(l)
    }
    // The timeline spans the run: from its start (or its first step) to its end (or now).
    const starts = steps.map((s) => Date.parse(s.startedAt)).filter(Number.isFinite)
    const t0 = Math.min(Date.parse(run.startedAt ?? run.createdAt), ...starts)
    const ends = steps.map((s) => Date.parse(s.completedAt ?? '')).filter(Number.isFinite)
    const t1 = Math.max(run.completedAt ? Date.parse(run.completedAt) : Date.now(), ...ends, t0 + 1)
    const span = t1 - t0
    const items = steps.map((s) => {
      const a = Date.parse(s.startedAt)
      const b = s.completedAt ? Date.parse(s.completedAt) : Date.now()
      const bar = h('i', { style: { left: `${((a - t0) / span) * 100}%`, width: `${Math.max(((b - a) / span) * 100, 0.3)}%` } })
      return h(
        'div',
        { class: `step ${s.status}`, 'data-step': s.name, 'data-status': s.status },
        h(
          'div',
          { class: 'row' },
          h('span', { class: 'muted' }, `#${s.index}`),
          h('span', { class: 'mono name' }, s.name),
          badge(s.status),
          h('span', { class: 'duration' }, fmtDuration(between(s.startedAt, s.completedAt))),
          h('div', { class: 'timeline', title: `${fmtTime(s.startedAt)} → ${fmtTime(s.completedAt)}` }, bar),
        ),
        s.error ? h('pre', { class: 'error' }, s.error) : null,
        logLines(byStep.get(s.name) ?? []),
      )
    })
    const stepNames = new Set(steps.map((s) => s.name))
    const other = logs.filter((l) => l.stepName === null || !stepNames.has(l.stepName))
    return h(
      'div',
      { class: 'card' },
      h('h2', null, `Steps (${steps.length})`),
      steps.length ? h('div', { class: 'steps', id: 'steps' }, items) : h('p', { class: 'muted' }, 'No steps yet.'),
      other.length ? h('div', { id: 'run-logs' }, h('h2', { style: { 'margin-top': '12px' } }, 'Logs outside steps'), logLines(other)) : null,
    )
  }

  let loading = false
  let again = false
  async function load() {
    if (stopped) return
    if (loading) {
      again = true
      return
    }
    loading = true
    try {
      const [run, steps, logs] = await Promise.all([
        api('GET', '/run', [['runId', runId]]),
        api('GET', '/steps', [['runId', runId]]),
        api('GET', '/logs', [['runId', runId]]),
      ])
      if (stopped) return
      render(run, steps, logs)
      if (!TERMINAL.has(run.status) && !closeStream) follow()
    } catch (err) {
      if (!stopped) view.replaceChildren(h('p', { class: 'empty' }, err.status === 404 ? 'Run not found.' : `Could not load the run: ${err.message}`))
    } finally {
      loading = false
      if (again) {
        again = false
        load()
      }
    }
  }

  const reload = debounce(load, 120)
  function follow() {
    closeStream = stream('/subscribe', [['runId', runId]], (e, close) => {
      if (e.type === 'run:progress') {
        if (progressEl) fillProgress(progressEl, e.progress)
        return
      }
      // The stream ends after the run's terminal event; do not let EventSource reconnect.
      const done = ['run:complete', 'run:fail', 'run:cancel', 'run:delete'].includes(e.type) || (e.type === 'run:snapshot' && (!e.run || TERMINAL.has(e.run.status)))
      if (done) {
        close()
        closeStream = null
      }
      if (e.type !== 'run:snapshot' || done) reload()
    })
  }

  load()
  const timer = setInterval(() => document.hidden || load(), POLL_MS)
  cleanup = () => {
    stopped = true
    clearInterval(timer)
    if (closeStream) closeStream()
  }
}

route()
