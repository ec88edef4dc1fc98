// tatzelwurm dashboard: plain JavaScript, no build step, served from the coordinator's assembly.
// Reads /api/* (JSON), listens to /events (server-sent events) and, once unlocked with the
// coordinator's token (kept in sessionStorage, sent as "Authorization: Bearer"), posts actions.
// Every value from the server is put into the page as text (textContent), never as HTML.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const TOKEN_KEY = 'tatzelwurm.token';
  const STATES = ['created', 'ready', 'submit', 'run', 'pause', 'terminated'];
  const VIEWS = ['tasks', 'workers', 'tags'];
  const MIN_REFRESH_GAP_MS = 1000;
  const POLL_MS = 5000;

  const ui = {
    view: 'tasks',
    filter: { state: '', type: '', tag: '', worker: '' },
    limit: 50,
    cursors: [0],          // "after" ids of the pages walked so far; the last is the current page
    page: null,            // last /api/tasks answer
    counts: null,          // last /api/counts answer
    workers: null,         // last /api/workers answer
    workersAt: 0,          // Date.now() when it arrived (heartbeat ages tick from there)
    tags: null,
    detailId: null,
    detail: null,
    token: sessionStorage.getItem(TOKEN_KEY),
    authed: false,
    live: false,
    skew: 0,               // server clock − browser clock, ms
    armed: null,           // {key, until}: a destructive action waiting for its confirming click
  };

  // ---- small helpers ---------------------------------------------------------------------------

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === 'class') node.className = value;
      else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? '' : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  const fmt = (n) => (typeof n === 'number' ? n.toLocaleString('en-US') : '–');
  const now = () => Date.now() + ui.skew;
  const iso = (ms) => new Date(ms).toISOString().replace('T', ' ').replace('Z', ' UTC');

  function span(ms) {
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 1) return '<1 s';
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60 ? (s % 60) + ' s' : ''}`.trim();
    if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
    return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
  }

  const ago = (ms) => (now() - ms < 1000 ? 'just now' : `${span(now() - ms)} ago`);

  let toastTimer = null;
  function toast(text, error) {
    const box = $('toast');
    box.textContent = text;
    box.className = error ? 'toast error' : 'toast';
    box.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { box.hidden = true; }, error ? 6000 : 3000);
  }

  async function api(path, options = {}) {
    const headers = { Accept: 'application/json' };
    if (options.auth && ui.token) headers.Authorization = `Bearer ${ui.token}`;
    let response;
    try {
      response = await fetch(path, { method: options.method || 'GET', headers, cache: 'no-store' });
    } catch (error) {
      return { ok: false, status: 0, body: { error: `coordinator unreachable (${error.message})` } };
    }
    let body = null;
    if (response.status !== 204 && response.status !== 304) {
      try { body = await response.json(); } catch { body = null; }
    }
    return { ok: response.ok, status: response.status, body };
  }

  // ---- counts ----------------------------------------------------------------------------------

  async function loadCounts() {
    const r = await api('/api/counts');
    if (!r.ok) return;
    ui.counts = r.body;
    ui.skew = r.body.now - Date.now();
    renderCounts(r.body.states);
    $('count-total').textContent = fmt(r.body.total);
    $('count-workers').textContent = fmt(r.body.workersConnected);
    $('count-slots').textContent = `${fmt(r.body.load)} / ${fmt(r.body.slots)} slots busy`;
    $('tab-workers').textContent = fmt(r.body.workers);
    $('tab-tags').textContent = fmt(r.body.tagLimits);
    setReady(r.body.storeHealthy ? 'ready' : 'store failing', r.body.storeHealthy);
  }

  function renderCounts(states) {
    let total = 0;
    for (const s of STATES) {
      $(`count-${s}`).textContent = fmt(states[s]);
      total += states[s] || 0;
    }
    $('count-total').textContent = fmt(total);
    for (const card of document.querySelectorAll('.card[data-state]')) {
      card.classList.toggle('selected', card.dataset.state === ui.filter.state && ui.view === 'tasks');
    }
  }

  async function loadReady() {
    const r = await api('/readyz');
    if (r.status === 0) setReady('unreachable', false);
    else setReady(r.ok ? 'ready' : (r.body && r.body.detail && r.body.detail.includes('store') ? 'store failing' : 'not ready'), r.ok);
  }

  function setReady(text, ok) {
    const pill = $('ready');
    pill.textContent = text;
    pill.className = ok ? 'pill on' : 'pill bad';
  }

  // ---- tasks -----------------------------------------------------------------------------------

  async function loadTasks() {
    const query = new URLSearchParams();
    for (const [key, value] of Object.entries(ui.filter)) if (value) query.set(key, value);
    query.set('after', String(ui.cursors[ui.cursors.length - 1]));
    query.set('limit', String(ui.limit));
    const r = await api(`/api/tasks?${query}`);
    if (!r.ok) {
      toast((r.body && r.body.error) || `loading tasks failed (${r.status})`, true);
      return;
    }
    ui.page = r.body;
    renderCounts(r.body.counts);
    renderTasks();
  }

  function renderTasks() {
    const page = ui.page;
    if (!page) return;
    const body = $('tasks').querySelector('tbody');
    body.replaceChildren(...page.tasks.map(taskRow));
    $('tasks-empty').hidden = page.tasks.length > 0;
    const number = ui.cursors.length;
    const from = (number - 1) * ui.limit + 1;
    const to = from + page.tasks.length - 1;
    $('page-info').textContent = page.tasks.length
      ? `page ${number} · ${fmt(from)}–${fmt(to)} of ${fmt(page.matched)} matching`
      : `${fmt(page.matched)} matching`;
    $('prev').disabled = $('first').disabled = number === 1;
    $('next').disabled = page.nextAfter === null;
  }

  function stateBadge(task) {
    let cls = `state ${task.state}`;
    if (task.state === 'terminated' && task.exitCode === -1) cls += ' killed';
    else if (task.state === 'terminated' && task.exitCode !== 0 && task.exitCode !== null) cls += ' failed';
    return el('span', { class: cls, 'data-state': task.state }, task.state);
  }

  function taskRow(task) {
    return el('tr', {
      class: 'clickable',
      'data-task-id': task.id,
      'data-state': task.state,
      onclick: (event) => { if (!event.target.closest('button')) location.hash = `#task/${task.id}`; },
    },
    el('td', { class: 'num mono' }, task.id),
    el('td', { class: 'state-cell' }, stateBadge(task), task.pendingControl ? el('span', { class: 'tag', title: 'sent to the worker, not yet confirmed' }, `${task.pendingControl} pending`) : null),
    el('td', {}, task.type),
    el('td', { class: 'num' }, task.priority),
    el('td', {}, task.tags.map((t) => el('span', { class: 'tag' }, t))),
    el('td', { class: 'mono', title: task.worker || '' }, task.workerName || task.worker || ''),
    el('td', { class: 'num' }, task.attempts || ''),
    el('td', { class: task.exitCode ? 'num exit-bad' : 'num' }, task.exitCode === null ? '' : task.exitCode),
    el('td', { class: 'ago', 'data-at': task.updatedAt, title: iso(task.updatedAt) }, ago(task.updatedAt)),
    el('td', { class: 'actions-col' }, el('div', { class: 'row-actions' }, taskActions(task))));
  }

  function taskActions(task) {
    if (!ui.authed) return [];
    const buttons = [];
    if (task.state === 'created' || task.state === 'pause') buttons.push(actionButton('play', '', () => act('tasks', task.id, 'play')));
    if (['created', 'ready', 'submit', 'run'].includes(task.state) && task.pendingControl !== 'pause' && task.pendingControl !== 'kill') {
      buttons.push(actionButton('pause', 'quiet', () => act('tasks', task.id, 'pause')));
    }
    if (task.state !== 'terminated' && task.pendingControl !== 'kill') buttons.push(actionButton('kill', 'danger quiet', () => act('tasks', task.id, 'kill'), `task:${task.id}:kill`));
    return buttons;
  }

  // A destructive action (confirmKey set) asks for a second click instead of a modal dialog. The
  // armed state outlives re-renders of the table (live updates), keyed by what it would act on.
  const ARM_MS = 4000;

  function isArmed(key) {
    return key && ui.armed && ui.armed.key === key && ui.armed.until > Date.now();
  }

  function actionButton(label, cls, run, confirmKey) {
    const armed = isArmed(confirmKey);
    const button = el('button', { type: 'button', class: `small ${cls}${armed ? ' armed' : ''}`, 'data-action': label }, armed ? `confirm ${label}` : label);
    button.addEventListener('click', async (event) => {
      event.stopPropagation();
      if (confirmKey && !isArmed(confirmKey)) {
        ui.armed = { key: confirmKey, until: Date.now() + ARM_MS };
        button.classList.add('armed');
        button.textContent = `confirm ${label}`;
        setTimeout(() => {
          if (ui.armed && ui.armed.until <= Date.now()) {
            ui.armed = null;
            renderTasks();
            renderWorkers();
            renderDetail();
          }
        }, ARM_MS + 50);
        return;
      }
      ui.armed = null;
      button.disabled = true;
      await run();
    });
    return button;
  }

  async function act(kind, id, action) {
    const r = await api(`/api/${kind}/${encodeURIComponent(id)}/${action}`, { method: 'POST', auth: true });
    const what = `${action} ${kind === 'tasks' ? 'task' : 'worker'} ${id}`;
    if (r.status === 401) {
      setAuthed(false);
      toast(`${what}: the token was refused; actions are locked`, true);
    } else if (r.ok) {
      toast(`${what}: done`);
    } else {
      toast(`${what}: ${(r.body && (r.body.message || r.body.error)) || `HTTP ${r.status}`}`, true);
    }
    refreshSoon(0);
  }

  // A change from the event stream: update the row at once, reload the rest shortly.
  function onTaskEvent(change) {
    if (ui.page) {
      const index = ui.page.tasks.findIndex((t) => t.id === change.id);
      if (index >= 0) {
        const task = {
          ...ui.page.tasks[index],
          state: change.state,
          worker: change.worker,
          workerName: change.worker === ui.page.tasks[index].worker ? ui.page.tasks[index].workerName : change.worker,
          exitCode: change.exitCode,
          updatedAt: change.at,
          reason: change.reason,
        };
        ui.page.tasks[index] = task;
        const old = document.querySelector(`#tasks tr[data-task-id="${change.id}"]`);
        if (old) {
          const row = taskRow(task);
          row.classList.add('flash');
          old.replaceWith(row);
        }
      }
    }
    if (ui.detailId === change.id) loadDetail(change.id);
    refreshSoon();
  }

  // ---- workers and tag limits ------------------------------------------------------------------

  async function loadWorkers() {
    const r = await api('/api/workers');
    if (!r.ok) return;
    ui.workers = r.body;
    ui.workersAt = Date.now();
    renderWorkers();
  }

  function renderWorkers() {
    if (!ui.workers) return;
    const list = ui.workers.workers;
    $('tab-workers').textContent = fmt(list.length);
    $('workers').querySelector('tbody').replaceChildren(...list.map(workerRow));
    $('workers-empty').hidden = list.length > 0;
    tick();
  }

  function workerRow(w) {
    const bar = el('span', { class: w.load >= w.slots ? 'bar full' : 'bar' }, el('span'));
    bar.firstChild.style.width = `${w.slots ? Math.min(100, (100 * w.load) / w.slots) : 0}%`;
    const actions = [];
    if (ui.authed) {
      if (w.draining) actions.push(actionButton('undrain', '', () => act('workers', w.id, 'undrain')));
      else actions.push(actionButton('drain', 'quiet', () => act('workers', w.id, 'drain')));
      if (!w.stopping) actions.push(actionButton('stop', 'danger quiet', () => act('workers', w.id, 'stop'), `worker:${w.id}:stop`));
    }
    return el('tr', { 'data-worker-id': w.id },
      el('td', {}, w.name),
      el('td', { class: 'mono' }, w.id),
      el('td', {}, el('span', { class: `state ${w.state}`, 'data-state': w.state }, w.state)),
      el('td', {}, w.types.length ? w.types.map((t) => el('span', { class: 'tag' }, t)) : el('span', { class: 'tag' }, 'any')),
      el('td', { class: 'load' }, bar, `${w.load} / ${w.slots}`),
      el('td', { class: 'hb', 'data-age': w.heartbeatAgeMs }, span(w.heartbeatAgeMs)),
      el('td', { class: 'ago', 'data-at': w.connectedAt, title: iso(w.connectedAt) }, ago(w.connectedAt)),
      el('td', { class: 'actions-col' }, el('div', { class: 'row-actions' }, actions)));
  }

  async function loadTags() {
    const r = await api('/api/tag-limits');
    if (!r.ok) return;
    ui.tags = r.body.limits;
    $('tab-tags').textContent = fmt(ui.tags.length);
    $('tags').querySelector('tbody').replaceChildren(...ui.tags.map((t) => {
      const bar = el('span', { class: t.running >= t.limit ? 'bar full' : 'bar' }, el('span'));
      bar.firstChild.style.width = `${t.limit ? Math.min(100, (100 * t.running) / t.limit) : 100}%`;
      return el('tr', { 'data-tag': t.tag },
        el('td', { class: 'mono' }, t.tag),
        el('td', { class: 'num' }, fmt(t.running)),
        el('td', { class: 'num' }, fmt(t.limit)),
        el('td', {}, bar));
    }));
    $('tags-empty').hidden = ui.tags.length > 0;
  }

  // Ages tick between loads: heartbeat age is the server's age plus the time since it answered.
  function tick() {
    const since = Date.now() - ui.workersAt;
    for (const cell of document.querySelectorAll('#workers td.hb')) {
      const age = Number(cell.dataset.age) + since;
      cell.textContent = span(age);
      cell.classList.toggle('stale', age > 5000);
    }
    for (const cell of document.querySelectorAll('td.ago')) cell.textContent = ago(Number(cell.dataset.at));
    $('clock').textContent = `server time ${iso(now())}`;
  }

  // ---- task detail -----------------------------------------------------------------------------

  async function loadDetail(id) {
    const r = await api(`/api/tasks/${id}`);
    if (ui.detailId !== id) return;
    if (r.status === 404) {
      ui.detail = null;
      $('d-title').textContent = `task ${id}`;
      $('d-fields').replaceChildren(el('dt', {}, 'not found'), el('dd', {}, 'no such task (it may have been purged after its retention)'));
      $('d-history').replaceChildren();
      $('d-actions').replaceChildren();
      return;
    }
    if (!r.ok) return;
    ui.detail = r.body;
    renderDetail();
  }

  function renderDetail() {
    const t = ui.detail;
    if (!t) return;
    $('d-title').replaceChildren(`task ${t.id} `, stateBadge(t));
    const fields = [
      ['type', t.type],
      ['priority', t.priority],
      ['tags', t.tags.length ? t.tags.map((x) => el('span', { class: 'tag' }, x)) : '—'],
      ['policy', t.policy],
      ['worker', t.worker ? `${t.workerName || t.worker} (${t.worker}${t.workerLease ? `, ${t.workerLease}` : ''})` : '—'],
      ['pending', t.pendingControl || '—'],
      ['runs lost', t.attempts],
      ['exit code', t.exitCode === null ? '—' : t.exitCode],
      ['error', t.error || '—'],
      ['reason', t.reason || '—'],
      ['payload', `${fmt(t.payloadSize)} bytes`],
      ['result', t.hasResult ? 'yes' : t.noReply ? 'not kept (no-reply)' : 'no'],
      ['created', `${iso(t.createdAt)} (${ago(t.createdAt)})`],
      ['updated', `${iso(t.updatedAt)} (${ago(t.updatedAt)})`],
    ];
    $('d-fields').replaceChildren(...fields.flatMap(([k, v]) => [el('dt', {}, k), el('dd', { 'data-field': k }, v)]));
    let previous = null;
    $('d-history').replaceChildren(...t.history.map((h) => {
      const item = el('li', { 'data-state': h.state },
        stateBadge({ state: h.state, exitCode: h.state === 'terminated' ? t.exitCode : null }),
        el('span', { class: 'when', title: iso(h.at) }, iso(h.at), previous === null ? '' : ` · +${span(h.at - previous)}`),
        h.reason ? el('span', { class: 'why' }, h.reason) : null);
      previous = h.at;
      return item;
    }));
    $('d-actions').replaceChildren(...taskActions(t));
  }

  // ---- auth ------------------------------------------------------------------------------------

  async function verifyToken() {
    const r = await api('/api/auth', { auth: true });
    setAuthed(r.status === 204);
    return ui.authed;
  }

  function setAuthed(authed) {
    ui.authed = authed;
    if (!authed) {
      ui.token = null;
      sessionStorage.removeItem(TOKEN_KEY);
    }
    document.body.classList.toggle('authed', authed);
    const badge = $('auth-state');
    badge.textContent = authed ? 'actions unlocked' : 'read-only';
    badge.className = authed ? 'pill on' : 'pill off';
    $('token').hidden = authed;
    $('unlock').hidden = authed;
    $('lock').hidden = !authed;
    renderTasks();
    renderWorkers();
    renderDetail();
  }

  // ---- refresh scheduling ----------------------------------------------------------------------

  // Events can arrive by the thousand (a bulk add); reload at most once a second.
  let refreshTimer = null;
  let refreshing = false;
  let again = false;
  let lastRefresh = 0;

  function refreshSoon(delay = 250) {
    if (refreshTimer !== null) return;
    const wait = Math.max(delay, MIN_REFRESH_GAP_MS - (Date.now() - lastRefresh));
    refreshTimer = setTimeout(refresh, wait);
  }

  async function refresh() {
    refreshTimer = null;
    if (refreshing) {
      again = true;
      return;
    }
    refreshing = true;
    lastRefresh = Date.now();
    try {
      await Promise.all([loadCounts(), loadTasks(), loadWorkers(), loadTags(), ui.detailId !== null ? loadDetail(ui.detailId) : null]);
    } finally {
      refreshing = false;
      if (again) {
        again = false;
        refreshSoon();
      }
    }
  }

  function connectEvents() {
    const source = new EventSource('/events');
    source.addEventListener('hello', () => {
      // Subscribed: every change from now on arrives, so reloading now leaves nothing out.
      setLive(true);
      refreshSoon(0);
    });
    source.addEventListener('task', (message) => onTaskEvent(JSON.parse(message.data)));
    source.addEventListener('resync', () => refreshSoon(0));
    source.addEventListener('error', () => setLive(false)); // EventSource reconnects by itself
  }

  function setLive(live) {
    ui.live = live;
    const pill = $('live');
    pill.textContent = live ? 'live' : 'reconnecting…';
    pill.className = live ? 'pill on' : 'pill off';
  }

  // ---- navigation --------------------------------------------------------------------------------

  function route() {
    const hash = location.hash.slice(1);
    const match = /^task\/(\d+)$/.exec(hash);
    if (match) {
      ui.detailId = Number(match[1]);
      $('detail').hidden = false;
      loadDetail(ui.detailId);
      return;
    }
    ui.detailId = null;
    ui.detail = null;
    $('detail').hidden = true;
    ui.view = VIEWS.includes(hash) ? hash : 'tasks';
    for (const view of VIEWS) $(`view-${view}`).hidden = view !== ui.view;
    for (const tab of document.querySelectorAll('.tabs a')) tab.classList.toggle('active', tab.dataset.view === ui.view);
    if (ui.page) renderCounts(ui.page.counts);
  }

  function readFilters() {
    ui.filter = {
      state: $('f-state').value,
      type: $('f-type').value.trim(),
      tag: $('f-tag').value.trim(),
      worker: $('f-worker').value.trim(),
    };
    ui.limit = Number($('f-limit').value);
    ui.cursors = [0];
  }

  function wire() {
    $('filters').addEventListener('submit', (event) => {
      event.preventDefault();
      readFilters();
      loadTasks();
    });
    $('f-clear').addEventListener('click', () => {
      $('filters').reset();
      readFilters();
      loadTasks();
    });
    for (const card of document.querySelectorAll('.card[data-state]')) {
      card.addEventListener('click', () => {
        $('f-state').value = card.dataset.state;
        readFilters();
        location.hash = '#tasks';
        loadTasks();
      });
    }
    $('next').addEventListener('click', () => {
      if (ui.page && ui.page.nextAfter !== null) {
        ui.cursors.push(ui.page.nextAfter);
        loadTasks();
      }
    });
    $('prev').addEventListener('click', () => {
      if (ui.cursors.length > 1) {
        ui.cursors.pop();
        loadTasks();
      }
    });
    $('first').addEventListener('click', () => {
      ui.cursors = [0];
      loadTasks();
    });
    $('d-close').addEventListener('click', () => { location.hash = `#${ui.view}`; });
    document.addEventListener('keydown', (event) => {
      if (event.key === 'Escape' && ui.detailId !== null) location.hash = `#${ui.view}`;
    });
    $('auth').addEventListener('submit', async (event) => {
      event.preventDefault();
      const token = $('token').value.trim();
      if (!token) return;
      ui.token = token;
      if (await verifyToken()) {
        sessionStorage.setItem(TOKEN_KEY, token);
        $('token').value = '';
        toast('actions unlocked for this tab');
      } else {
        toast('wrong token', true);
      }
    });
    $('lock').addEventListener('click', () => setAuthed(false));
    window.addEventListener('hashchange', route);
  }

  async function start() {
    wire();
    route();
    connectEvents();
    if (ui.token) await verifyToken();
    await refresh();
    setInterval(() => { loadCounts(); loadWorkers(); loadTags(); loadReady(); }, POLL_MS);
    setInterval(tick, 1000);
    document.body.dataset.loaded = 'true';
  }

  start();
})();
