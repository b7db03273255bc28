/* Cortado console: a hash-routed page over the scheduler's JSON API (/api/v1/).
 * Plain ES2020, no dependencies. Pages: #/ (APIs), #/apis/<name>, #/apis/<name>/requests/<id>. */
'use strict';

const TOKEN_KEY = 'cortado-console-token';
const REQUESTS_POLL_MS = 3000;   // the API page's requests and dead letters
const DETAIL_POLL_MS = 2000;     // a request that is not final yet
const MAX_BACKOFF_MS = 15000;    // the watch stream's reconnect delay, at most
const WATCH_STALL_MS = 12000;    // no answer on the stream for this long: reconnect
const SVG_NS = 'http://www.w3.org/2000/svg';

const app = {
  apis: [],        // the latest ApiStatus list
  apisSeq: 0,      // bumped on every list received
  page: null,      // the page shown: {kind, ctl, timers, onApis, onResize}
  watch: null,     // the watch stream: {ctl, backoff, timer, stopped}
  filters: {},     // requests filter by API name, kept while the tab lives
};

/* ---------- DOM helpers ---------- */

const $ = (sel, root = document) => root.querySelector(sel);

/** Creates an element: props are attributes, plus text, class, testid and on<event>. */
function h(tag, props, ...children) {
  return build(document.createElement(tag), props, children);
}

/** Creates an SVG element, the same way. */
function s(tag, props, ...children) {
  return build(document.createElementNS(SVG_NS, tag), props, children);
}

function build(el, props, children) {
  for (const [k, v] of Object.entries(props || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'text') el.textContent = v;
    else if (k === 'class') el.setAttribute('class', v);
    else if (k === 'testid') el.dataset.testid = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

/** Draws nodes (or text) into a container by updating what is there (see morph): elements that stay are kept,
 * so focus, scroll positions and references to them survive the refreshes. */
function draw(container, ...nodes) {
  const fresh = nodes.flat(Infinity).filter((n) => n !== null && n !== undefined && n !== false)
    .map((n) => (n instanceof Node ? n : document.createTextNode(String(n))));
  morphChildren(container, fresh);
}

const keyOf = (node) => (node.nodeType === Node.ELEMENT_NODE ? node.getAttribute('data-testid') : null);

/** Makes `old` match `fresh`: same kind of node, so its attributes and children are updated; else replaced. */
function morph(old, fresh) {
  if (old.nodeName !== fresh.nodeName || keyOf(old) !== keyOf(fresh)) { old.replaceWith(fresh); return; }
  if (old.nodeType !== Node.ELEMENT_NODE) {
    if (old.nodeValue !== fresh.nodeValue) old.nodeValue = fresh.nodeValue;
    return;
  }
  for (const { name } of [...old.attributes]) if (!fresh.hasAttribute(name)) old.removeAttribute(name);
  for (const { name, value } of fresh.attributes) if (old.getAttribute(name) !== value) old.setAttribute(name, value);
  morphChildren(old, [...fresh.childNodes]);
}

/** Morphs a parent's children into `fresh`: children with a data-testid are matched by it, others in order. */
function morphChildren(parent, fresh) {
  const keyed = new Map([...parent.childNodes].filter(keyOf).map((n) => [keyOf(n), n]));
  let cursor = parent.firstChild;
  for (const node of fresh) {
    const key = keyOf(node);
    const match = key ? keyed.get(key) : cursor && !keyOf(cursor) ? cursor : null;
    if (!match) { parent.insertBefore(node, cursor); continue; }
    keyed.delete(key);
    if (match === cursor) cursor = cursor.nextSibling; else parent.insertBefore(match, cursor);
    morph(match, node);
  }
  while (cursor) { const next = cursor.nextSibling; cursor.remove(); cursor = next; }
}

/* ---------- formatting ---------- */

const num = (v) => (Number.isFinite(Number(v)) ? Number(v) : 0);
const enc = encodeURIComponent;
const sum = (xs) => xs.reduce((a, b) => a + b, 0);

/** A Timestamp as a Date; null when unset (absent, null or the epoch). */
function toDate(ts) {
  if (!ts) return null;
  const d = new Date(ts);
  return Number.isNaN(d.getTime()) || d.getTime() <= 0 ? null : d;
}

/** A Duration string ("10s", "0.500s") in seconds. */
const seconds = (d) => num(String(d || '').replace(/s$/, ''));

/** Milliseconds, compactly: "12 ms", "1.4 s", "3 min 2 s", "2 h 5 min", "3 d 4 h". */
function fmtDuration(ms) {
  if (ms === null || !Number.isFinite(ms)) return '—';
  ms = Math.max(0, ms);
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const secs = ms / 1000;
  if (secs < 10) return `${secs.toFixed(1)} s`;
  if (secs < 60) return `${Math.round(secs)} s`;
  const t = Math.round(secs);
  const d = Math.floor(t / 86400), hr = Math.floor((t % 86400) / 3600);
  const min = Math.floor((t % 3600) / 60), sec = t % 60;
  if (d) return `${d} d ${hr} h`;
  if (hr) return `${hr} h ${min} min`;
  return sec ? `${min} min ${sec} s` : `${min} min`;
}

/** Seconds of latency: "0.42 s", "3.1 ms", "12 s". */
function fmtSeconds(secs) {
  if (secs < 0.01) return `${Number((secs * 1000).toPrecision(2))} ms`;
  if (secs < 60) return `${Number(secs.toPrecision(2))} s`;
  return fmtDuration(secs * 1000);
}

/** A window length in words: 900 → "15 minutes". */
function fmtWindow(secs) {
  if (secs >= 60 && secs % 60 === 0) return secs === 60 ? 'minute' : `${secs / 60} minutes`;
  return fmtDuration(secs * 1000);
}

function fmtBytes(n) {
  n = num(n);
  if (n < 1024) return `${n} byte${n === 1 ? '' : 's'}`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

/** How long ago: "just now", "42 s ago", "5 min ago", "3 h ago", "2 d ago". */
function fmtAgo(date) {
  const secs = Math.round((Date.now() - date.getTime()) / 1000);
  if (secs < 5) return 'just now';
  const [unit, size] = [['d', 86400], ['h', 3600], ['min', 60], ['s', 1]].find(([, n]) => secs >= n);
  return `${Math.floor(secs / size)} ${unit} ago`;
}

const fmtAbsolute = (date) => date.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'medium' });

/** A <time> showing a relative time, the absolute one in its title; "—" when unset. */
function timeEl(ts) {
  const date = toDate(ts);
  if (!date) return h('span', { class: 'muted', text: '—' });
  return h('time', { datetime: date.toISOString(), title: fmtAbsolute(date), text: fmtAgo(date) });
}

/** The word for an enum value: its name without prefix, lower case ("GAVE_UP" → "gave up"), unless renamed. */
function enumWord(value, prefix, renamed = {}) {
  const key = String(value || '').replace(prefix, '');
  return key in renamed ? renamed[key] : key.toLowerCase().replace(/_/g, ' ') || 'unknown';
}

const apiStateWord = (v) => enumWord(v, 'API_STATE_');
const statusWord = (v) => enumWord(v, 'REQUEST_STATUS_', { IN_QUEUE: 'queued', IN_PROGRESS: 'running' });
const priorityWord = (v) => enumWord(v, 'PRIORITY_', { UNSPECIFIED: 'normal', '': 'normal' });
const replicaWord = (v) => enumWord(v, 'REPLICA_STATE_');
const webhookWord = (v) => enumWord(v, 'WEBHOOK_STATE_', { UNSPECIFIED: 'none' });

/** Colour family of a word (always shown with the word itself). */
const TONES = { live: 'ok', ready: 'ok', completed: 'ok', delivered: 'ok', failed: 'bad', unplaceable: 'bad',
  'gave up': 'bad', paused: 'warn', stopped: 'warn', 'dead letter': 'warn', starting: 'info', idle: 'info',
  queued: 'info', running: 'info', pending: 'info', draining: 'info' };
const badge = (word, props = {}) => h('span', { class: `badge tone-${TONES[word] || 'neutral'}`, text: word, ...props });

const isFinal = (status) => !/IN_QUEUE|IN_PROGRESS/.test(String(status));

/** Queued requests with their split by priority: "5 (high 0 · normal 5 · low 0)". */
function queuedText(api) {
  const by = api.queued_by_priority || {};
  const parts = ['high', 'normal', 'low'].map((p) => `${p} ${num(by[p])}`);
  return h('span', {}, String(num(api.queued)), h('span', { class: 'muted breakdown', text: ` (${parts.join(' · ')})` }));
}

/** Time a request waited and ran, in ms (null when not known). */
function phases(summary) {
  const sub = toDate(summary.submitted_at), start = toDate(summary.started_at), end = toDate(summary.finished_at);
  const now = Date.now();
  const inQueue = /IN_QUEUE/.test(summary.status), running = /IN_PROGRESS/.test(summary.status);
  const queued = sub && (start ? start - sub : inQueue ? now - sub : end ? end - sub : null);
  const ran = start && (end ? end - start : running ? now - start : null);
  return { queued, ran, inQueue, running };
}

/* ---------- HTTP ---------- */

/** Calls /api/v1/<path> with the console header and the token; throws an Error with .status on 4xx/5xx. */
async function apiFetch(path, { method = 'GET', body, signal } = {}) {
  const headers = { 'X-Cortado-Console': '1', Accept: 'application/json' };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(`/api/v1/${path}`, {
    method, headers, signal, cache: 'no-store', credentials: 'same-origin',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!res.ok) throw await errorFrom(res);
  return res;
}

/** The error of a failed answer: its JSON `message` when it has one, with its status and gRPC code. */
async function errorFrom(res) {
  let message = `The scheduler answered ${res.status} ${res.statusText}`.trim();
  let code = 0;
  try {
    const data = JSON.parse(await res.text());
    if (data && data.message) message = data.message;
    code = num(data && data.code);
  } catch (_) { /* not JSON: keep the status line */ }
  if (res.status === 401) showTokenForm();
  return Object.assign(new Error(message), { status: res.status, code });
}

const getJson = async (path, opts) => (await apiFetch(path, opts)).json();
const postJson = (path, opts) => getJson(path, { ...opts, method: 'POST', body: {} });
const aborted = (err) => err && err.name === 'AbortError';

/* ---------- outcome region, token form, confirmation dialog ---------- */

/** Puts an action's outcome (text or nodes) in the polite live region. */
function announce(content, isError = false) {
  const region = $('[data-testid="outcome"]');
  region.classList.toggle('is-error', isError);
  region.replaceChildren(...[content].flat());
}

/** An error message shown next to a control. */
const inlineError = (err) => h('p', { class: 'inline-error', text: err.message || String(err) });

function showTokenForm() {
  const form = $('[data-testid="token-form"]');
  if (!form.hidden) return;
  form.hidden = false;
  const had = sessionStorage.getItem(TOKEN_KEY);
  announce(had ? 'The scheduler refused the token: enter it again.' : 'The scheduler asks for its token.', true);
  $('#token-input').focus();
}

/** Stores the token for this tab (never in a URL) and retries the page. */
function useToken(event) {
  event.preventDefault();
  const input = $('#token-input');
  const token = input.value.trim();
  if (!token) { input.reportValidity(); return; }
  sessionStorage.setItem(TOKEN_KEY, token);
  input.value = '';
  event.target.hidden = true;
  announce('Token saved for this tab; retrying.');
  stopWatch();
  route();
}

/** Asks for confirmation in the shared <dialog>; resolves true when confirmed. */
function confirmAction({ title = 'Please confirm', message, confirmLabel, dismissLabel = 'Go back', danger = false }) {
  const dialog = $('[data-testid="confirm-dialog"]');
  if (dialog.open) return Promise.resolve(false);
  const trigger = document.activeElement && document.activeElement.dataset.testid;
  $('#confirm-title').textContent = title;
  $('#confirm-message').textContent = message;
  $('#confirm-button').textContent = confirmLabel;
  $('#confirm-button').className = danger ? 'danger' : '';
  $('#dismiss-button').textContent = dismissLabel;
  dialog.returnValue = '';
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => {
      // The trigger may have been redrawn meanwhile: focus its replacement.
      if (trigger && (!document.activeElement || document.activeElement === document.body)) {
        const again = $(`[data-testid="${CSS.escape(trigger)}"]`);
        if (again) again.focus();
      }
      resolve(dialog.returnValue === 'confirm');
    }, { once: true });
    dialog.showModal();
    $('#dismiss-button').focus();
  });
}

/** Runs a confirmed action: a busy button, the outcome announced, errors shown by the control too.
 * Answers the error's message (null on success). */
async function runAction(button, errorSlot, action) {
  errorSlot.replaceChildren();
  button.disabled = true;
  try {
    await action();
    return null;
  } catch (err) {
    if (aborted(err)) return null;
    announce(err.message, true);
    errorSlot.replaceChildren(inlineError(err));
    return err.message;
  } finally {
    button.disabled = false;
  }
}

/* ---------- live updates: the apis:watch stream ---------- */

/** Shows the live indicator's state: connecting, live, reconnecting or off. */
function setLive(state) {
  const el = $('[data-testid="live-status"]');
  const words = { connecting: 'connecting…', live: 'live', reconnecting: 'reconnecting…', off: 'off' };
  const titles = { off: 'Live updates are off on this page', reconnecting: 'Live updates paused, reconnecting…' };
  if (el.dataset.state === state) return;
  const was = el.dataset.state;
  el.dataset.state = state;
  el.textContent = words[state];
  el.title = titles[state] || 'Live updates';
  // The banner (a polite live region) says when updates stop, and clears when they come back.
  const banner = $('[data-testid="live-banner"]');
  if (state === 'reconnecting') banner.textContent = 'live updates paused, reconnecting…';
  else if (was === 'reconnecting') banner.textContent = '';
}

function startWatch() {
  if (app.watch) return;
  app.watch = { ctl: null, backoff: 1000, timer: 0, stopped: false };
  runWatch(app.watch);
}

function stopWatch() {
  const w = app.watch;
  if (!w) return;
  w.stopped = true;
  if (w.ctl) w.ctl.abort();
  clearTimeout(w.timer);
  app.watch = null;
}

/** Splits a stream into top-level JSON objects, whatever separates them (newlines, "[", ",", "]"). */
function jsonObjectSplitter(onObject) {
  let buf = '', depth = 0, inString = false, escaped = false, start = -1, i = 0;
  return (text) => {
    buf += text;
    for (; i < buf.length; i++) {
      const c = buf[i];
      if (inString) {
        if (escaped) escaped = false;
        else if (c === '\\') escaped = true;
        else if (c === '"') inString = false;
      } else if (c === '"') inString = true;
      else if (c === '{') { if (depth++ === 0) start = i; }
      else if (c === '}' && depth > 0 && --depth === 0) {
        onObject(buf.slice(start, i + 1));
        buf = buf.slice(i + 1);
        i = -1;
      }
    }
    if (depth === 0) { buf = ''; i = 0; }
  };
}

/** One connection of the watch stream; reconnects with back-off when it ends or fails. */
async function runWatch(w) {
  w.ctl = new AbortController();
  let lastSeen = Date.now();
  const stall = setInterval(() => { if (Date.now() - lastSeen > WATCH_STALL_MS) w.ctl.abort(); }, 2000);
  const split = jsonObjectSplitter((text) => {
    let msg;
    try { msg = JSON.parse(text); } catch (_) { return; }
    if (!msg || (!Array.isArray(msg.apis) && msg.message)) return;  // an error frame
    lastSeen = Date.now();
    w.backoff = 1000;
    setLive('live');
    onApis(msg.apis || []);
  });
  try {
    const res = await apiFetch('apis:watch', { signal: w.ctl.signal });
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      split(decoder.decode(value, { stream: true }));
    }
  } catch (err) {
    if (err.status === 401) { clearInterval(stall); stopWatch(); setLive('off'); return; }
  } finally {
    clearInterval(stall);
  }
  if (w.stopped) return;
  setLive('reconnecting');
  w.timer = setTimeout(() => { if (!w.stopped) runWatch(w); }, w.backoff);
  w.backoff = Math.min(w.backoff * 2, MAX_BACKOFF_MS);
}

/** A new APIs list (from the stream or a GET): keep it, fill the header's select, tell the page. */
function onApis(list) {
  app.apis = list;
  app.apisSeq += 1;
  fillApiSelect(list.map((a) => a.name));
  if (app.page && app.page.onApis) app.page.onApis(list);
}

/** Fills the "Open a request" select with the API names, keeping the choice. */
function fillApiSelect(names, selected) {
  const select = $('#open-api');
  const route = parseRoute();
  const want = selected || select.value || route.name;
  if (select.dataset.names !== names.join('\n')) {
    select.dataset.names = names.join('\n');
    const options = names.map((n) => h('option', { value: n, text: n }));
    select.replaceChildren(h('option', { value: '', text: names.length ? 'Choose…' : 'No APIs' }), ...options);
  }
  if (want && names.includes(want)) select.value = want;
}

/* ---------- charts (inline SVG) ---------- */

/** The chart's slots: a 15-minute axis of `interval` slots, the points at its right end. */
function activitySlots(activity = {}) {
  const interval = seconds(activity.interval) || 10;
  const windowSecs = seconds(activity.window) || 900;
  const points = activity.points || [];
  const slots = Math.max(points.length, Math.round(Math.max(900, windowSecs) / interval), 1);
  return { interval, windowSecs, points, slots, offset: slots - points.length };
}

/** A round number at least v: 1, 2, 5 × 10^k. */
function niceMax(v) {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 5, 10].map((m) => m * p).find((x) => x >= v);
}

/** Weighted mean latency over the points that finished something, in seconds (null if none). */
function meanLatency(points) {
  const counted = points.filter((p) => num(p.completed) + num(p.failed) > 0);
  const n = sum(counted.map((p) => num(p.completed) + num(p.failed)));
  if (!n) return null;
  return sum(counted.map((p) => num(p.mean_latency_seconds) * (num(p.completed) + num(p.failed)))) / n;
}

/** Frame of a chart: svg with title/desc, y ticks and x labels; answers {svg, x, y, slotW}. */
function chartFrame({ width, testid, title, desc, yMax, yFmt, slots, interval, extra }) {
  const H = 170, m = { l: 46, r: 10, t: 10, b: 24 };
  const pw = width - m.l - m.r, ph = H - m.t - m.b;
  const uid = `${testid}-label`;
  const svg = s('svg', {
    class: 'chart', width, height: H, viewBox: `0 0 ${width} ${H}`, role: 'img',
    'aria-labelledby': `${uid}-t ${uid}-d`, 'data-testid': testid, ...extra,
  }, s('title', { id: `${uid}-t`, text: title }), s('desc', { id: `${uid}-d`, text: desc }));
  const y = (v) => m.t + ph - (v / yMax) * ph;
  for (const v of [0, yMax / 2, yMax]) {
    svg.append(s('line', { class: 'grid', x1: m.l, x2: m.l + pw, y1: y(v), y2: y(v) }),
      s('text', { class: 'tick', x: m.l - 6, y: y(v) + 4, 'text-anchor': 'end', text: yFmt(v) }));
  }
  const total = slots * interval;
  const marks = [0, 1 / 3, 2 / 3, 1];
  marks.forEach((f, i) => {
    const ago = Math.round((total * (1 - f)) / 60);
    svg.append(s('text', {
      class: 'tick', x: m.l + f * pw, y: H - 6,
      'text-anchor': i === 0 ? 'start' : i === marks.length - 1 ? 'end' : 'middle',
      text: ago ? `−${ago} min` : 'now',
    }));
  });
  return { svg, y, slotW: pw / slots, x0: m.l, base: m.t + ph };
}

/** Completed and failed per interval, stacked bars; data-total is what is plotted. */
function throughputChart(activity, width) {
  const { interval, windowSecs, points, slots, offset } = activitySlots(activity);
  const totals = points.map((p) => num(p.completed) + num(p.failed));
  const total = sum(totals);
  const yMax = niceMax(Math.max(1, ...totals));
  const { svg, y, slotW, x0, base } = chartFrame({
    width, testid: 'throughput-chart', yMax, slots, interval, yFmt: (v) => String(Math.round(v * 10) / 10),
    title: `Requests finished per ${fmtDuration(interval * 1000)}`,
    desc: `${sum(points.map((p) => num(p.completed)))} completed and ${sum(points.map((p) => num(p.failed)))} failed `
      + `in the last ${fmtWindow(windowSecs)}, at most ${Math.max(0, ...totals)} in one interval.`,
    extra: { 'data-total': total },
  });
  const w = Math.max(1, slotW - 1);
  points.forEach((p, i) => {
    const x = x0 + (offset + i) * slotW;
    const c = num(p.completed), f = num(p.failed);
    if (!c && !f) return;
    const start = toDate(p.start);
    const g = s('g', {}, s('title', { text: `${start ? start.toLocaleTimeString() : ''}: ${c} completed, ${f} failed` }));
    if (c) g.append(s('rect', { class: 'bar-completed', x, width: w, y: y(c), height: base - y(c) }));
    if (f) g.append(s('rect', { class: 'bar-failed', x, width: w, y: y(c + f), height: y(c) - y(c + f) }));
    svg.append(g);
  });
  return svg;
}

/** Mean latency per interval as a line, broken where nothing finished. */
function latencyChart(activity, width) {
  const { interval, windowSecs, points, slots, offset } = activitySlots(activity);
  const values = points.map((p) => (num(p.completed) + num(p.failed) > 0 ? num(p.mean_latency_seconds) : null));
  const peak = Math.max(0, ...values.filter((v) => v !== null));
  const mean = meanLatency(points);
  const yMax = niceMax(peak || 1);
  const { svg, y, slotW, x0 } = chartFrame({
    width, testid: 'latency-chart', yMax, slots, interval, yFmt: (v) => (v ? fmtSeconds(v) : '0'),
    title: 'Mean latency (submission to outcome)',
    desc: mean === null ? `No request finished in the last ${fmtWindow(windowSecs)}.`
      : `Mean ${fmtSeconds(mean)}, highest ${fmtSeconds(peak)}, over the last ${fmtWindow(windowSecs)}.`,
  });
  let run = [];
  const flush = () => {
    if (run.length > 1) svg.append(s('polyline', { class: 'line-latency', points: run.join(' ') }));
    run = [];
  };
  values.forEach((v, i) => {
    if (v === null) { flush(); return; }
    const x = x0 + (offset + i + 0.5) * slotW;
    run.push(`${x.toFixed(1)},${y(v).toFixed(1)}`);
    svg.append(s('circle', { class: 'dot-latency', cx: x, cy: y(v), r: 2 },
      s('title', { text: `${fmtSeconds(v)} mean` })));
  });
  flush();
  return svg;
}

/** A small sparkline of throughput (completed + failed per interval). */
function sparkline(api) {
  const { points, slots, offset, interval } = activitySlots(api.activity);
  const totals = points.map((p) => num(p.completed) + num(p.failed));
  const W = 100, H = 26, max = Math.max(1, ...totals);
  const coords = totals.map((t, i) => `${(((offset + i) / Math.max(1, slots - 1)) * W).toFixed(1)},${(H - 2 - (t / max) * (H - 4)).toFixed(1)}`);
  const label = `Throughput over the last 15 minutes: ${sum(totals)} requests, at most ${Math.max(0, ...totals)} per ${fmtDuration(interval * 1000)}`;
  return s('svg', {
    class: 'spark', width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': label,
    'data-testid': `spark-${api.name}`, 'data-total': sum(totals),
  }, s('title', { text: label }),
  s('line', { class: 'spark-base', x1: 0, x2: W, y1: H - 2, y2: H - 2 }),
  coords.length > 1 ? s('polyline', { class: 'spark-line', points: coords.join(' ') }) : null);
}

/* ---------- pages: shared ---------- */

/** Starts a page: aborts the previous one's calls and timers. */
function newPage(kind) {
  if (app.page) {
    app.page.ctl.abort();
    app.page.timers.forEach(clearTimeout);
  }
  app.page = { kind, ctl: new AbortController(), timers: [], rowErrors: {}, onApis: null, onResize: null };
  return app.page;
}

/** Calls fn now and again every ms after it settles, while the page lives and fn does not answer false. */
function poll(page, fn, ms) {
  page.timers.forEach(clearTimeout);
  const gen = (page.pollGen = (page.pollGen || 0) + 1);  // a newer poll of the page ends this one
  const tick = async () => {
    if (await fn() !== false && !page.ctl.signal.aborted && page.pollGen === gen) page.timers.push(setTimeout(tick, ms));
  };
  tick();
}

/** Shows a page's <template> (index.html) in <main>; answers its [data-slot] elements by name. */
function showTemplate(id) {
  const root = document.getElementById(id).content.firstElementChild.cloneNode(true);
  const slots = {};
  root.querySelectorAll('[data-slot]').forEach((el) => { slots[el.dataset.slot] = el; });
  $('#main').replaceChildren(root);
  return slots;
}

const errorBox = (err, ...more) => h('div', { class: 'error-box', role: 'alert' }, h('p', { text: err.message || String(err) }), more);
const section = (props, title, ...children) => h('section', { class: 'card', ...props }, title ? h('h2', { text: title }) : null, children);
/** A table that scrolls on its own (and turns into cards on phones). */
const tableWrap = (table) => h('div', { class: 'table-wrap' }, table);
const th = (text) => h('th', { scope: 'col', text });
const td = (label, ...children) => h('td', { 'data-label': label }, children);
const dlRow = (term, ...desc) => [h('dt', { text: term }), h('dd', {}, desc)];
const requestHref = (name, id) => `#/apis/${enc(name)}/requests/${enc(id)}`;

/* ---------- APIs page ---------- */

function renderApisPage() {
  const page = newPage('apis');
  document.title = 'APIs · Cortado console';
  const { body } = showTemplate('tpl-apis-page');
  const drawList = (list) => draw(body, apisTable(list));
  page.onApis = drawList;
  if (app.apisSeq) drawList(app.apis);
  const seq = app.apisSeq;
  getJson('apis', { signal: page.ctl.signal })
    .then((data) => { if (app.apisSeq === seq) onApis(data.apis || []); })
    .catch((err) => { if (!aborted(err) && !app.apisSeq) body.replaceChildren(errorBox(err)); });
}

function apisTable(list) {
  if (!list.length) {
    return h('p', { class: 'empty', testid: 'apis-empty' }, 'No APIs deployed yet. Deploy one with ',
      h('code', { text: 'cortado deploy <folder>' }), '.');
  }
  return tableWrap(h('table', { class: 'responsive', testid: 'apis-table' },
    h('caption', { text: 'Deployed APIs, with their last 15 minutes' }),
    h('thead', {}, h('tr', {}, ['API', 'State', 'Replicas', 'Queued', 'In flight', 'Completed (15 min)',
      'Failed (15 min)', 'Throughput', 'Last deploy'].map(th))),
    h('tbody', {}, list.map(apiRow))));
}

function apiRow(api) {
  const act = api.activity || {};
  return h('tr', { testid: `api-row-${api.name}` },
    h('th', { scope: 'row', 'data-label': 'API' }, h('a', { href: `#/apis/${enc(api.name)}`, text: api.name })),
    td('State', stateBadges(api)),
    td('Replicas', `${num(api.ready_replicas)}/${num(api.desired_replicas)}`),
    td('Queued', queuedText(api)),
    td('In flight', String(num(api.in_flight))),
    td('Completed (15 min)', String(num(act.completed))),
    td('Failed (15 min)', String(num(act.failed))),
    td('Throughput', sparkline(api)),
    td('Last deploy', h('span', { class: 'nowrap' }, `v${num(api.version)} · `, timeEl(api.deployed_at))));
}

const stateBadges = (api) => h('span', { class: 'badges' }, badge(apiStateWord(api.state)),
  api.paused ? badge('paused') : null);

/* ---------- API page ---------- */

function renderApiPage(name) {
  const page = newPage('api');
  document.title = `${name} · Cortado console`;
  const slots = showTemplate('tpl-api-page');
  const { status, charts, requests, filter } = slots;
  const pauseButton = slots.pause, deadLetters = slots['dead-letters'];
  slots.name.textContent = name;
  filter.value = app.filters[name] || '';
  fillApiSelect(app.apis.map((a) => a.name), name);

  // Status and charts: from a GET, then from the watch stream.
  const drawApi = (api) => {
    page.api = api;
    draw(status, apiStatus(api));
    draw(charts, activityCharts(api, charts));
    pauseButton.disabled = false;
    pauseButton.textContent = api.paused ? 'Resume dispatch' : 'Pause dispatch';
  };
  page.onApis = (list) => { const api = list.find((a) => a.name === name); if (api) drawApi(api); };
  page.onResize = () => page.api && draw(charts, activityCharts(page.api, charts));
  const cached = app.apis.find((a) => a.name === name);
  if (cached) drawApi(cached);
  getJson(`apis/${enc(name)}`, { signal: page.ctl.signal })
    .then((data) => drawApi(data.api))
    .catch((err) => { if (!aborted(err)) status.replaceChildren(errorBox(err, h('p', {}, h('a', { href: '#/', text: 'Back to the APIs' })))); });

  pauseButton.addEventListener('click', () => togglePause(page, name, pauseButton, slots['pause-error'], drawApi));

  // Requests and dead letters: polled.
  const load = async () => {
    await Promise.all([loadRequests(page, name, filter, requests), loadDeadLetters(page, name, deadLetters)]);
  };
  filter.addEventListener('change', () => {
    app.filters[name] = filter.value;
    requests.replaceChildren(h('p', { class: 'loading', text: 'Loading…' }));
    loadRequests(page, name, filter, requests);
  });
  page.reload = load;
  poll(page, load, REQUESTS_POLL_MS);
}

/** The status summary: state, message, replicas, queue, in flight, dispatch. */
function apiStatus(api) {
  const replicas = api.replicas || [];
  return [
    h('dl', { class: 'facts' },
      dlRow('State', stateBadges(api)),
      dlRow('Dispatch', api.paused ? 'paused: queued requests wait until resumed' : 'running'),
      dlRow('Replicas', `${num(api.ready_replicas)} of ${num(api.desired_replicas)} ready`),
      dlRow('Queued', queuedText(api)),
      dlRow('In flight', String(num(api.in_flight))),
      dlRow('Since replicas started', `${num(api.completed)} completed, ${num(api.failed)} failed`),
      dlRow('Webhooks undelivered', String(num(api.webhooks_undelivered))),
      dlRow('Deployed', `v${num(api.version)} · `, timeEl(api.deployed_at))),
    api.message ? h('div', { class: 'message' }, h('h3', { text: 'Message' }),
      h('pre', { class: 'pre error-pre', testid: 'api-message', tabindex: '0', text: api.message })) : null,
    replicas.length ? tableWrap(h('table', { class: 'responsive', testid: 'replicas-table' },
      h('caption', { text: 'Replicas and where they run' }),
      h('thead', {}, h('tr', {}, ['Replica', 'State', 'Host', 'Executor', 'GPUs'].map(th))),
      h('tbody', {}, replicas.map((r) => h('tr', {},
        h('th', { scope: 'row', 'data-label': 'Replica', text: `#${num(r.replica)}` }),
        td('State', badge(replicaWord(r.state))),
        td('Host', r.hostname || '—'),
        td('Executor', h('code', { text: r.executor_id || '—' })),
        td('GPUs', (r.gpu_indices || []).length ? r.gpu_indices.join(', ') : 'none'))))))
      : h('p', { class: 'muted', text: 'No replica runs now.' }),
  ];
}

/** The throughput and latency charts with their text summaries. */
function activityCharts(api, container) {
  const act = api.activity || {};
  // Two charts side by side on wide screens (see style.css), else one above the other.
  const full = container.clientWidth || 640;
  const cols = window.matchMedia('(min-width: 1000px)').matches ? 2 : 1;
  const width = Math.max(260, Math.floor((full - 24 * (cols - 1)) / cols) - 2);
  const { windowSecs, points } = activitySlots(act);
  const mean = meanLatency(points);
  const inWindow = `in the last ${fmtWindow(windowSecs)}`;
  const values = points.filter((p) => num(p.completed) + num(p.failed) > 0).map((p) => num(p.mean_latency_seconds));
  return [
    h('figure', { class: 'chart-box' },
      h('figcaption', {}, 'Requests finished per interval ',
        h('span', { class: 'legend' }, h('span', { class: 'swatch swatch-completed' }), 'completed ',
          h('span', { class: 'swatch swatch-failed' }), 'failed')),
      throughputChart(act, width),
      h('p', { class: 'chart-summary', testid: 'throughput-summary',
        text: `${num(act.completed)} completed, ${num(act.failed)} failed ${inWindow}`
          + (mean === null ? '.' : `; mean latency ${fmtSeconds(mean)}.`) })),
    h('figure', { class: 'chart-box' },
      h('figcaption', { text: 'Mean latency, submission to outcome' }),
      latencyChart(act, width),
      h('p', { class: 'chart-summary', testid: 'latency-summary',
        text: mean === null ? `No request finished ${inWindow}, so there is no latency to show.`
          : `Mean latency ${fmtSeconds(mean)}; highest ${fmtSeconds(Math.max(...values))} per interval ${inWindow}.` })),
  ];
}

/** Pauses or resumes dispatch after confirmation. */
async function togglePause(page, name, button, errorSlot, drawApi) {
  const paused = page.api && page.api.paused;
  const ok = await confirmAction(paused ? {
    title: 'Resume dispatch?',
    message: `Resume dispatch for ${name}? Its queued requests are handed to its replicas again.`,
    confirmLabel: 'Resume dispatch',
  } : {
    title: 'Pause dispatch?',
    message: `Pause dispatch for ${name}? Requests in flight finish; new requests are still accepted and wait in the queue until you resume.`,
    confirmLabel: 'Pause dispatch',
    danger: true,
  });
  if (!ok) return;
  await runAction(button, errorSlot, async () => {
    const data = await postJson(`apis/${enc(name)}:${paused ? 'resume' : 'pause'}`, { signal: page.ctl.signal });
    drawApi(data.api);
    announce(`Dispatch ${data.api.paused ? 'paused' : 'resumed'} for ${name}.`);
  });
}

/** Loads one list of the API page into its container; an error replaces it until the next success. */
async function loadInto(page, path, container, render, stillWanted = () => true) {
  try {
    const data = await getJson(path, { signal: page.ctl.signal });
    if (stillWanted()) draw(container, render(data));
  } catch (err) {
    if (aborted(err)) return;
    draw(container, errorBox(err));
  }
}

/** Loads the requests list with the filter's status (and drops the answer if the filter changed meanwhile). */
function loadRequests(page, name, select, container) {
  const status = select.value;
  return loadInto(page, `apis/${enc(name)}/requests?status=${enc(status)}&limit=50`, container,
    (data) => requestsTable(name, data, status), () => select.value === status);
}

function requestsTable(name, data, status) {
  const list = data.requests || [];
  const note = data.truncated ? h('p', { class: 'note', testid: 'truncated-note',
    text: `Only the ${num(data.scanned)} most recent records were searched; open an older request by its id.` }) : null;
  if (!list.length) {
    return [h('p', { class: 'empty', testid: 'requests-empty', text: status ? 'No request with this status.' : 'No requests yet.' }), note];
  }
  return [tableWrap(h('table', { class: 'responsive', testid: 'requests-table' },
    h('caption', { text: `Most recent requests of ${name}, newest first` }),
    h('thead', {}, h('tr', {}, ['Request', 'Status', 'Priority', 'Attempts', 'Submitted', 'Queued', 'Running', 'Error'].map(th))),
    h('tbody', {}, list.map((r) => requestRow(name, r))))), note];
}

function requestRow(name, r) {
  const ph = phases(r);
  return h('tr', { testid: `request-row-${r.id}` },
    h('th', { scope: 'row', 'data-label': 'Request' },
      h('a', { href: requestHref(name, r.id), title: r.id, class: 'mono', text: r.id.length > 12 ? `${r.id.slice(0, 12)}…` : r.id })),
    td('Status', badge(statusWord(r.status))),
    td('Priority', priorityWord(r.priority)),
    td('Attempts', String(num(r.attempts))),
    td('Submitted', timeEl(r.submitted_at)),
    td('Queued', fmtDuration(ph.queued)),
    td('Running', fmtDuration(ph.ran)),
    td('Error', r.error_type ? h('code', { text: r.error_type }) : h('span', { class: 'muted', text: '—' })));
}

const loadDeadLetters = (page, name, container) => loadInto(page, `apis/${enc(name)}/dead-letters`, container,
  (data) => deadLettersTable(page, name, data.dead_letters || []));

function deadLettersTable(page, name, list) {
  if (!list.length) return h('p', { class: 'empty', text: 'No dead letters.' });
  return tableWrap(h('table', { class: 'responsive', testid: 'dead-letters-table' },
    h('caption', { text: `Dead letters of ${name}, newest first` }),
    h('thead', {}, h('tr', {}, ['Request', 'Error', 'Failed', 'Submitted', 'Body', 'Action'].map(th))),
    h('tbody', {}, list.map((d) => {
      // A failed replay's message stays by its button across the refreshes.
      const errorSlot = h('div', { class: 'control-error' }, page.rowErrors[d.id] ? inlineError(page.rowErrors[d.id]) : null);
      const button = h('button', { type: 'button', class: 'secondary small', testid: `replay-${d.id}`, text: 'Replay',
        'aria-label': `Replay request ${d.id}` });
      button.addEventListener('click', () => replay(page, name, d.id, button, errorSlot));
      return h('tr', { testid: `dead-letter-row-${d.id}` },
        h('th', { scope: 'row', 'data-label': 'Request' },
          h('a', { href: requestHref(name, d.id), title: d.id, class: 'mono', text: `${d.id.slice(0, 12)}…` })),
        td('Error', h('code', { text: d.error_type }), d.error_message ? h('div', { class: 'muted small-text', text: d.error_message }) : null),
        td('Failed', timeEl(d.failed_at)),
        td('Submitted', timeEl(d.submitted_at)),
        td('Body', `${d.content_type || 'unknown type'} · ${fmtBytes(d.body_bytes)}`),
        td('Action', button, errorSlot));
    }))));
}

/** Replays a dead letter after confirmation; links to the new request. */
async function replay(page, name, id, button, errorSlot) {
  const message = `Replay request ${id}? Its body is queued again under a new id, and the dead letter is removed.`;
  if (!await confirmAction({ title: 'Replay this request?', message, confirmLabel: 'Replay' })) return;
  page.rowErrors[id] = await runAction(button, errorSlot, async () => {
    const data = await postJson(`apis/${enc(name)}/dead-letters/${enc(id)}:replay`, { signal: page.ctl.signal });
    announce(['Replayed as request ', h('a', { href: requestHref(name, data.id), testid: 'replayed-link', class: 'mono', text: data.id }), '.']);
    if (page.reload) page.reload();
  });
}

/* ---------- request page ---------- */

function renderRequestPage(name, id) {
  const page = newPage('request');
  document.title = `Request ${id} · Cortado console`;
  fillApiSelect(app.apis.map((a) => a.name), name);
  if (!app.apisSeq) getJson('apis', { signal: page.ctl.signal }).then((d) => onApis(d.apis || [])).catch(() => {});
  const parts = showTemplate('tpl-request-page');
  parts.id.textContent = id;
  for (const link of [parts['crumb-api'], parts['api-link']]) Object.assign(link, { href: `#/apis/${enc(name)}`, textContent: name });
  const load = async () => {
    try {
      const detail = await getJson(`apis/${enc(name)}/requests/${enc(id)}`, { signal: page.ctl.signal });
      drawDetail(page, name, id, detail, parts);
      const final = isFinal(detail.summary && detail.summary.status);
      setLive(final ? 'off' : 'live');
      return !final;
    } catch (err) {
      if (aborted(err)) return false;
      draw(parts.summary, errorBox(err, h('p', {}, h('a', { href: `#/apis/${enc(name)}`, text: `Back to ${name}` }))));
      setLive(err.status >= 500 || !err.status ? 'reconnecting' : 'off');
      return err.status >= 500 || !err.status;  // retry only what may pass
    }
  };
  page.reload = () => poll(page, load, DETAIL_POLL_MS);
  page.reload();
}

/** Draws each part of a request's detail that changed. */
function drawDetail(page, name, id, d, parts) {
  const summary = d.summary || {};
  const final = isFinal(summary.status);
  draw(parts.summary, requestSummary(page, name, id, d, parts['action-error']));
  const err = d.error || {};
  draw(parts.error, (err.type || err.message || err.traceback ? section({ testid: 'request-error' }, 'Error',
    h('p', {}, h('strong', { testid: 'error-type', text: err.type || 'Error' }), err.message ? `: ${err.message}` : ''),
    err.traceback ? h('pre', { class: 'pre error-pre', testid: 'traceback', tabindex: '0', text: err.traceback }) : null) : []));
  draw(parts.payload, section({ testid: 'payload-preview' }, 'Payload', preview(d.payload, 'No payload kept.')));
  draw(parts.result, section({ testid: 'result-preview' }, 'Result',
    preview(d.result, final ? 'No result.' : 'No result yet.')));
  draw(parts.record, section({ testid: 'record' }, 'Record',
    h('p', { class: 'muted' }, 'What ', h('code', { text: `GET /${name}/${id}` }), ' answers.'),
    h('pre', { class: 'pre', testid: 'record-json', tabindex: '0', text: prettyJson(d.record_json) })));
  const hook = d.webhook || {};
  draw(parts.webhook, (hook.url ? webhookSection(hook) : []));
  draw(parts.logs, logSection(d.log_lines || []));
}

/** Status, phases, cancel and replay buttons of a request. */
function requestSummary(page, name, id, d, errorSlot) {
  const r = d.summary || {};
  const ph = phases(r);
  const actions = h('div', { class: 'actions' });
  if (ph.inQueue || ph.running) {
    const cancel = h('button', { type: 'button', class: 'danger', testid: 'cancel-button', text: 'Cancel request' });
    cancel.addEventListener('click', () => cancelRequest(page, name, id, cancel, errorSlot));
    actions.append(cancel);
  }
  if (d.dead_letter) {
    const replayButton = h('button', { type: 'button', class: 'secondary', testid: `replay-${id}`, text: 'Replay' });
    replayButton.addEventListener('click', () => replay(page, name, id, replayButton, errorSlot));
    actions.append(replayButton);
  }
  return section({ 'aria-label': 'Status and phases' }, null,
    h('div', { class: 'status-line' },
      badge(statusWord(r.status), { testid: 'request-status' }),
      d.dead_letter ? badge('dead letter') : null,
      d.trace_url ? h('a', { href: d.trace_url, target: '_blank', rel: 'noopener noreferrer', testid: 'trace-link', text: 'View trace in Jaeger' }) : null,
      actions),
    h('ol', { class: 'phases', testid: 'phases', 'aria-label': 'Phases' },
      phaseStep('Submitted', r.submitted_at),
      phaseGap('queued', ph.queued, ph.inQueue),
      phaseStep('Started', r.started_at),
      phaseGap('ran', ph.ran, ph.running),
      phaseStep('Finished', r.finished_at)),
    h('dl', { class: 'facts' },
      dlRow('Attempts', String(num(r.attempts))),
      dlRow('Priority', priorityWord(r.priority))));
}

/** One phase of the timeline: its name, relative and absolute time. */
function phaseStep(name, ts) {
  const date = toDate(ts);
  return h('li', { class: `phase${date ? ' reached' : ''}` }, h('span', { class: 'phase-name', text: name }),
    date ? [timeEl(ts), h('span', { class: 'abs', text: fmtAbsolute(date) })] : h('span', { class: 'muted', text: 'not yet' }));
}

/** The time between two phases: "queued 2.0 s", "ran 1.4 s so far". */
const phaseGap = (verb, ms, ongoing) => h('li', { class: 'phase-gap' },
  ms === null ? `${verb} —` : `${verb} ${fmtDuration(ms)}${ongoing ? ' so far' : ''}`);

/** Cancels the request after confirmation, then refreshes the page. */
async function cancelRequest(page, name, id, button, errorSlot) {
  const message = `Cancel request ${id}? A queued request is dropped; a running one is stopped. This cannot be undone.`;
  if (!await confirmAction({ title: 'Cancel this request?', message, confirmLabel: 'Cancel request', dismissLabel: 'Keep it', danger: true })) return;
  await runAction(button, errorSlot, async () => {
    const data = await postJson(`apis/${enc(name)}/requests/${enc(id)}:cancel`, { signal: page.ctl.signal });
    announce(data.outcome === 'cancelled' ? `Request ${id} cancelled.`
      : `Request ${id} had already finished (${statusWord(data.summary && data.summary.status)}); nothing changed.`);
    page.reload();
  });
}

/** Pretty-prints JSON text; answers it unchanged when it does not parse. */
function prettyJson(text) {
  try { return JSON.stringify(JSON.parse(text), null, 2); } catch (_) { return text || ''; }
}

/** A body or result preview: its text, else its type and size. */
function preview(p, emptyText) {
  p = p || {};
  const size = num(p.size);
  const meta = [p.content_type || (size ? 'unknown type' : ''), size || p.content_type ? fmtBytes(size) : '',
    p.retained === false && (size || p.content_type) ? 'no longer kept' : '', p.truncated ? 'showing the start only' : '']
    .filter(Boolean).join(' · ');
  if (p.text) {
    const isJson = /json/i.test(p.content_type || '');
    const text = isJson && !p.truncated ? prettyJson(p.text) : p.text;
    return [h('p', { class: 'muted', text: meta }), h('pre', { class: 'pre', tabindex: '0', text })];
  }
  return h('p', { class: meta ? '' : 'muted', text: meta || emptyText });
}

function webhookSection(hook) {
  return section({ testid: 'webhook' }, 'Webhook', h('dl', { class: 'facts' },
    dlRow('URL', h('code', { class: 'wrap', text: hook.url })),
    dlRow('State', badge(webhookWord(hook.state))),
    dlRow('Attempts', String(num(hook.attempts))),
    dlRow('First attempt', timeEl(hook.first_attempt_at)),
    dlRow('Last attempt', timeEl(hook.last_attempt_at)),
    hook.last_error ? dlRow('Last error', h('code', { class: 'wrap', text: hook.last_error })) : null));
}

/** Log lines: time, level, message of each JSON line; the raw line when it does not parse. */
function logSection(lines) {
  if (!lines.length) return section({ testid: 'log-lines' }, 'Log lines', h('p', { class: 'muted', text: 'No log lines.' }));
  const rows = lines.map((line) => {
    let rec = null;
    try { rec = JSON.parse(line); } catch (_) { /* raw */ }
    if (!rec || typeof rec !== 'object') return h('tr', {}, h('td', { colspan: 3, class: 'mono raw', 'data-label': 'Line', text: line }));
    const t = typeof rec.time === 'number' ? new Date(rec.time < 1e12 ? rec.time * 1000 : rec.time) : toDate(rec.time || rec.timestamp);
    const level = String(rec.level || rec.levelname || '').toUpperCase();
    return h('tr', { class: `level-${level.toLowerCase()}` },
      td('Time', t && !Number.isNaN(t.getTime()) ? h('time', { datetime: t.toISOString(), title: fmtAbsolute(t), text: t.toLocaleTimeString() }) : String(rec.time || '')),
      td('Level', h('span', { class: 'level', text: level || '—' })),
      td('Message', h('span', { class: 'log-message', text: rec.message !== undefined ? String(rec.message) : line })));
  });
  return section({ testid: 'log-lines' }, 'Log lines', tableWrap(h('table', { class: 'log-table' },
    h('caption', { class: 'visually-hidden', text: 'Log lines of the handler for this request, oldest first' }),
    h('thead', {}, h('tr', {}, ['Time', 'Level', 'Message'].map(th))),
    h('tbody', {}, rows))));
}

/* ---------- router and start ---------- */

function safeDecode(part) {
  try { return decodeURIComponent(part); } catch (_) { return part; }
}

/** The page a hash names. */
function parseRoute() {
  const parts = location.hash.replace(/^#\/?/, '').split('/').filter(Boolean).map(safeDecode);
  if (parts[0] === 'apis' && parts[1]) {
    if (parts[2] === 'requests' && parts[3]) return { page: 'request', name: parts[1], id: parts[3] };
    return { page: 'api', name: parts[1] };
  }
  return { page: 'apis' };
}

/** Shows the page of the current hash; the watch stream runs only where it is used. */
function route() {
  const r = parseRoute();
  const navLink = $('[data-testid="nav-apis"]');
  if (r.page === 'apis') navLink.setAttribute('aria-current', 'page'); else navLink.removeAttribute('aria-current');
  if (r.page === 'request') {
    stopWatch();
    renderRequestPage(r.name, r.id);
  } else {
    startWatch();
    if (r.page === 'api') renderApiPage(r.name); else renderApisPage();
  }
}

/** "Open a request": goes to the request page. */
function openRequest(event) {
  event.preventDefault();
  const form = event.target;
  const name = $('#open-api').value;
  const id = $('#open-id').value.trim();
  if (!name || !id) { form.reportValidity(); return; }
  location.hash = requestHref(name, id);
}

function start() {
  $('[data-testid="open-request-form"]').addEventListener('submit', openRequest);
  $('[data-testid="token-form"]').addEventListener('submit', useToken);
  window.addEventListener('hashchange', () => {
    announce([]);  // an outcome belongs to the page it happened on
    route();
    const heading = $('#main h1');
    if (heading) heading.focus();
  });
  let resizeTimer = 0;
  window.addEventListener('resize', () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => app.page && app.page.onResize && app.page.onResize(), 200);
  });
  route();
}

document.addEventListener('DOMContentLoaded', start);
