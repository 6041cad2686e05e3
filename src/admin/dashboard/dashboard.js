'use strict';
// The dashboard's script: everything it shows comes from the admin API of the node that
// served it, called with the token the operator entered (kept in this tab's
// sessionStorage, never in a cookie). Remote text (reasons, names) is only ever set as
// text, never parsed as HTML.

const STATES = ['connected', 'channel_opening', 'channel_needed', 'connecting',
  'discovering', 'disconnected', 'failed'];
const TOKEN_KEY = 'btp-nips-node-token';
// The chart keeps this many samples, one every SAMPLE_MS (ten minutes).
const SAMPLE_MS = 2000;
const SAMPLES = 300;
// The full peer list is re-read this often besides after each event (a missed event
// cannot leave the page wrong for long).
const REFRESH_MS = 5000;
const LOG_LINES = 200;

const state = {
  token: null,
  canWrite: false,
  peers: new Map(),
  info: null,
  selected: null,
  samples: [],
  rtts: [],          // heartbeat RTTs (ms) since the last sample
  heartbeats: false, // whether the stream sends heartbeat events
  lastEventId: null,
  streamAbort: null,
  refreshTimer: null,
};

const $ = (id) => document.getElementById(id);

// An element with attributes and children (strings become text nodes).
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') node.className = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function shortKey(hex) { return hex ? hex.slice(0, 8) + '…' + hex.slice(-4) : ''; }
function peerLabel(p) {
  return p.npub ? p.npub.slice(0, 12) + '…' + p.npub.slice(-6) : shortKey(p.nostr_pubkey);
}
function ms(rttUs) { return rttUs == null ? '' : (rttUs / 1000).toFixed(1) + ' ms'; }
function when(at) { return at ? new Date(at).toLocaleTimeString() : ''; }
function badge(s) { return el('span', { class: 'badge state-' + s }, s); }
// Wei (a decimal string, as the API writes it) with its value in ether beside it.
function wei(text) {
  if (text == null) return '';
  let eth = '';
  try {
    const n = BigInt(text);
    const whole = n / 10n ** 18n;
    const frac = (n % 10n ** 18n).toString().padStart(18, '0').slice(0, 6).replace(/0+$/, '');
    eth = ' (' + whole + (frac ? '.' + frac : '') + ' ETH)';
  } catch (_) { /* not a number: shown as it came */ }
  return text + ' wei' + eth;
}
function setStatus(text, isError) {
  const s = $('status');
  s.textContent = text;
  s.className = isError ? 'error' : '';
}

// The token: from the link's fragment (`#token=…`, which the browser never sends to a
// server), else from this tab's storage, else asked for.
function takeToken() {
  const m = location.hash.match(/token=([0-9A-Za-z._~-]+)/);
  if (m) {
    sessionStorage.setItem(TOKEN_KEY, m[1]);
    history.replaceState(null, '', location.pathname + location.search);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

function showLogin(message) {
  if (state.streamAbort) state.streamAbort.abort();
  clearInterval(state.refreshTimer);
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  $('app').hidden = true;
  $('login').hidden = false;
  $('login-error').textContent = message || '';
  $('token-input').focus();
}

async function api(method, path, body) {
  const headers = { 'Authorization': 'Bearer ' + state.token };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(path, {
    method, headers, cache: 'no-store',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try { data = await response.json(); } catch (_) { /* not JSON */ }
  if (response.status === 401) {
    showLogin((data && data.error) || 'the node refused the token');
    throw new Error('unauthorized');
  }
  return { status: response.status, data };
}

// Whether the token may act: a POST with no body is refused for the read-only token
// (403) before its body is read; the admin token gets 400 (no body) and nothing changes.
async function probeAccess() {
  const r = await api('POST', '/v1/peers');
  state.canWrite = r.status === 400;
  $('access').textContent = state.canWrite ? 'admin token' : 'read-only token: buttons disabled';
}

async function refresh() {
  try {
    const info = await api('GET', '/v1/info');
    if (info.status === 200) state.info = info.data;
    const peers = new Map();
    let after = '';
    for (;;) {
      const r = await api('GET', '/v1/peers?limit=1000' + (after ? '&after=' + after : ''));
      if (r.status !== 200) { setStatus('peers: ' + ((r.data && r.data.error) || r.status), true); return; }
      for (const p of r.data.peers) peers.set(p.nostr_pubkey, p);
      if (!r.data.next_after) break;
      after = r.data.next_after;
    }
    state.peers = peers;
    render();
    if (state.selected) loadDetail(state.selected);
  } catch (e) {
    if (e.message !== 'unauthorized') setStatus('the node does not answer: ' + e.message, true);
  }
}

let refreshSoon = null;
function scheduleRefresh() {
  if (refreshSoon) return;
  refreshSoon = setTimeout(() => { refreshSoon = null; refresh(); }, 300);
}

function render() {
  const info = state.info;
  if (info) {
    $('node-id').textContent = info.node_id;
    $('node-facts').textContent = [info.npub, info.ilp_address,
      'up ' + Math.floor(info.uptime_seconds / 60) + ' min'].filter(Boolean).join(' · ');
  }
  renderPeers();
  renderInbox();
}

function actionButtons(p) {
  const disabled = !state.canWrite;
  const title = disabled ? 'the read-only token may not act' : undefined;
  const stop = (f) => (e) => { e.stopPropagation(); f(); };
  return el('td', { class: 'actions' },
    el('button', { class: 'retry', type: 'button', title,
      disabled: disabled || !(p.state === 'failed' || p.state === 'disconnected'),
      onclick: stop(() => act(p, 'retry')) }, 'Retry'),
    el('button', { class: 'disconnect', type: 'button', title,
      disabled: disabled || p.stopped_by_operator,
      onclick: stop(() => act(p, 'disconnect')) }, 'Disconnect'),
    el('button', { class: 'approve', type: 'button', title,
      disabled: disabled || p.state !== 'channel_needed',
      onclick: stop(() => act(p, 'approve-channel')) }, 'Approve channel'));
}

function renderPeers() {
  const box = $('peers');
  box.replaceChildren();
  const all = [...state.peers.values()];
  $('peer-count').textContent = '(' + all.length + ')';
  if (all.length === 0) { box.append(el('p', { class: 'muted' }, 'No peers yet.')); return; }
  for (const s of STATES) {
    const group = all.filter((p) => p.state === s)
      .sort((a, b) => a.priority - b.priority || a.nostr_pubkey.localeCompare(b.nostr_pubkey));
    if (group.length === 0) continue;
    const rows = group.map((p) => el('tr', {
      class: 'peer' + (state.selected === p.nostr_pubkey ? ' selected' : ''),
      'data-peer': p.nostr_pubkey, 'data-state': p.state,
      onclick: () => select(p.nostr_pubkey),
    },
    el('td', { class: 'mono', title: p.nostr_pubkey }, peerLabel(p)),
    el('td', {}, badge(p.state), p.stopped_by_operator ? ' stopped' : '', p.followed ? '' : ' (not followed)'),
    el('td', { class: 'num' }, p.priority),
    el('td', { class: 'num' }, ms(p.rtt_us)),
    el('td', { class: 'fault' }, p.failure_reason || ''),
    el('td', { class: 'num' }, p.reconnect_attempts || ''),
    el('td', { class: 'num' }, p.next_attempt_in_seconds == null ? '' : p.next_attempt_in_seconds + ' s'),
    actionButtons(p)));
    box.append(el('h3', {}, badge(s), ' ', group.length),
      el('table', { 'data-group': s },
        el('thead', {}, el('tr', {}, ['peer', 'state', 'priority', 'latency', 'last fault',
          'attempts', 'next attempt', ''].map((h) => el('th', {}, h)))),
        el('tbody', {}, rows)));
  }
}

// The channel policy as /v1/info tells it: the deposit an approval proposes and what the
// auto-open caps have left; null when the node has no channel policy.
function policyText(policy) {
  if (!policy) return null;
  const parts = ['proposed deposit ' + wei(policy.deposit_wei) + ' (chain.deposit_wei)'];
  if (!policy.auto_open) {
    parts.push('auto-open off: every channel waits here');
  } else {
    parts.push('auto-open caps: ' + wei(policy.per_channel_cap_wei) + ' per channel, '
      + wei(policy.total_cap_wei) + ' in all');
    parts.push(policy.total_cap_left_wei != null
      ? wei(policy.total_cap_left_wei) + ' left of the total cap'
      : 'left of the total cap unknown (' + (policy.unknown_reason || 'not read') + ')');
  }
  return parts.join(' · ');
}

function renderInbox() {
  const box = $('inbox');
  box.replaceChildren();
  const waiting = [...state.peers.values()].filter((p) => p.state === 'channel_needed');
  $('inbox-count').textContent = '(' + waiting.length + ')';
  const policy = state.info && state.info.chain ? state.info.chain.channel_policy : null;
  const text = policyText(policy);
  if (text) box.append(el('p', { id: 'inbox-policy' }, text));
  if (waiting.length === 0) {
    box.append(el('p', { class: 'muted' }, 'None: no peer waits for a channel.'));
    return;
  }
  const proposed = policy ? policy.deposit_wei : null;
  box.append(el('table', {},
    el('thead', {}, el('tr', {}, ['peer', 'pays to', 'why', 'proposed deposit',
      'deposit (wei, empty: the proposed one)', ''].map((h) => el('th', {}, h)))),
    el('tbody', {}, waiting.map((p) => {
      const deposit = el('input', { type: 'text', inputmode: 'numeric',
        placeholder: proposed || 'default', 'data-deposit': p.nostr_pubkey, disabled: !state.canWrite });
      return el('tr', { 'data-inbox': p.nostr_pubkey },
        el('td', { class: 'mono' }, peerLabel(p)),
        el('td', { class: 'mono' }, p.base_address || ''),
        el('td', { class: 'fault' }, p.failure_reason || ''),
        el('td', { class: 'num proposed' }, proposed ? wei(proposed) : 'chain.deposit_wei'),
        el('td', {}, deposit),
        el('td', {}, el('button', { type: 'button', disabled: !state.canWrite,
          onclick: () => act(p, 'approve-channel', deposit.value.trim()) }, 'Approve')));
    }))));
}

async function act(p, action, deposit) {
  let body = {};
  if (action === 'disconnect') body = { reason: 'disconnected from the dashboard' };
  if (action === 'approve-channel' && deposit) body = { deposit_wei: deposit };
  try {
    const r = await api('POST', '/v1/peers/' + p.nostr_pubkey + '/' + action, body);
    if (r.status === 202) setStatus(action + ' ' + peerLabel(p) + ': accepted (now ' + r.data.state + ')');
    else setStatus(action + ' ' + peerLabel(p) + ': ' + ((r.data && r.data.error) || r.status), true);
  } catch (e) {
    if (e.message !== 'unauthorized') setStatus(action + ': ' + e.message, true);
  }
  scheduleRefresh();
}

function select(pubkey) {
  state.selected = pubkey;
  renderPeers();
  loadDetail(pubkey);
}

async function loadDetail(pubkey) {
  const [peer, history] = await Promise.all([
    api('GET', '/v1/peers/' + pubkey), api('GET', '/v1/peers/' + pubkey + '/history?limit=50')]);
  if (state.selected !== pubkey) return;
  const box = $('detail');
  box.replaceChildren();
  $('detail-box').hidden = false;
  if (peer.status !== 200) {
    box.append(el('p', { class: 'error' }, (peer.data && peer.data.error) || String(peer.status)));
    return;
  }
  const p = peer.data;
  $('detail-title').textContent = peerLabel(p);
  const facts = [
    ['pubkey', p.nostr_pubkey], ['npub', p.npub], ['state', badge(p.state)],
    ['followed', p.followed ? 'yes' : 'no'], ['priority', p.priority],
    ['latency', ms(p.rtt_us)], ['last heartbeat', when(p.last_heartbeat)],
    ['ILP address', p.ilp_address], ['endpoint', p.endpoint], ['last fault', p.failure_reason],
    ['attempts', p.reconnect_attempts],
  ];
  const channel = [
    ['channel', p.channel_id || 'none'], ['open transaction', p.channel_tx_hash],
    ['opening since', when(p.channel_opening_since)], ['pays to', p.base_address],
  ];
  // As the contract stores it now (read by the node when the peer has a channel).
  const onChain = p.channel;
  if (onChain && onChain.error) {
    channel.push(['on chain', el('span', { class: 'error' }, onChain.error)]);
  } else if (onChain) {
    channel.push(['deposit', wei(onChain.deposit_wei)], ['claimed', wei(onChain.claimed_wei)],
      ['expires', new Date(onChain.expiry * 1000).toLocaleString()],
      ['closed', onChain.closed ? 'yes' : 'no']);
  }
  const dl = (pairs) => el('dl', {}, pairs.filter(([, v]) => v !== undefined && v !== null && v !== '')
    .map(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
  box.append(dl(facts), el('h3', {}, 'Channel'), dl(channel), el('h3', {}, 'History'));
  const transitions = (history.data && history.data.transitions) || [];
  box.append(el('table', { id: 'history' },
    el('thead', {}, el('tr', {}, ['at', 'from', 'to', 'reason'].map((h) => el('th', {}, h)))),
    el('tbody', {}, transitions.map((t) => el('tr', {},
      el('td', {}, when(t.at)), el('td', {}, t.from ? badge(t.from) : 'new'),
      el('td', {}, badge(t.to)), el('td', { class: 'fault' }, t.reason || ''))))));
}

function log(text) {
  const list = $('log');
  list.prepend(el('li', {}, new Date().toLocaleTimeString() + '  ' + text));
  while (list.children.length > LOG_LINES) list.lastChild.remove();
}

// One event of the stream, by its name: the page shows the kinds it knows and logs the rest.
function onEvent(name, data) {
  const who = (pk) => {
    const p = pk && state.peers.get(pk);
    return p ? peerLabel(p) : shortKey(pk);
  };
  switch (name) {
    case 'peer_state':
      // The table is re-read rather than patched: the first connection replays the
      // node's recent events, which are history, not the peers' state now.
      log(who(data.pubkey) + ': ' + (data.from || 'new') + ' → ' + data.to + (data.reason ? ' (' + data.reason + ')' : ''));
      scheduleRefresh();
      break;
    case 'heartbeat': {
      const rtt = data.rtt_ms ?? (data.rtt_us != null ? data.rtt_us / 1000 : null)
        ?? (data.rtt_seconds != null ? data.rtt_seconds * 1000 : null);
      if (rtt != null) { state.rtts.push(rtt); state.heartbeats = true; }
      break;
    }
    case 'channel':
      log(who(data.pubkey) + ': channel ' + [data.tx || data.tx_hash, data.confirmations != null
        ? data.confirmations + '/' + (data.required ?? data.of ?? '?') + ' confirmations' : '']
        .filter(Boolean).join(' '));
      scheduleRefresh();
      break;
    case 'follow':
      log(who(data.pubkey) + (data.followed ? ' followed' : ' unfollowed')
        + (data.by === 'operator' ? ' by the operator' : ' in the follow list'));
      scheduleRefresh();
      break;
    case 'missed':
      log(data.missed + ' earlier events are not shown (' + data.reason + ')');
      scheduleRefresh();
      break;
    default:
      log(name + ' ' + JSON.stringify(data));
  }
}

// The event stream. EventSource cannot send an Authorization header, so the stream is read
// with fetch: the same bearer token as every other call, no cookie (which a forged request
// from another site would carry) and no token in a URL (which logs and history keep).
// After a break it reconnects with Last-Event-ID, and the node replays what was missed.
async function streamEvents() {
  const abort = new AbortController();
  state.streamAbort = abort;
  const headers = { 'Authorization': 'Bearer ' + state.token };
  // The first connection asks for every event the node still keeps (ids start at 1), so
  // the log starts with what happened before the page was opened.
  headers['Last-Event-ID'] = state.lastEventId || '0';
  try {
    const response = await fetch('/v1/events', { headers, signal: abort.signal, cache: 'no-store' });
    if (response.status === 401) { showLogin('the node refused the token'); return; }
    if (!response.ok) throw new Error('event stream: HTTP ' + response.status);
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, '\n');
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const frame = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let name = 'message', data = '', id = null;
        for (const line of frame.split('\n')) {
          if (line.startsWith(':')) continue;
          const colon = line.indexOf(':');
          const field = colon < 0 ? line : line.slice(0, colon);
          const text = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
          if (field === 'event') name = text;
          else if (field === 'data') data += (data ? '\n' : '') + text;
          else if (field === 'id') id = text;
        }
        if (id) state.lastEventId = id;
        if (!data) continue;
        try { onEvent(name, JSON.parse(data)); } catch (_) { log(name + ' ' + data); }
      }
    }
  } catch (e) {
    if (abort.signal.aborted) return;
    setStatus(e.message, true);
  }
  if (state.token && state.streamAbort === abort) setTimeout(streamEvents, 2000);
}

// The chart: peers per state and the heartbeat round trip, one sample every SAMPLE_MS.
function sample() {
  const counts = Object.fromEntries(STATES.map((s) => [s, 0]));
  for (const p of state.peers.values()) counts[p.state] = (counts[p.state] || 0) + 1;
  let rtt = null;
  if (state.rtts.length) {
    rtt = state.rtts.reduce((a, b) => a + b, 0) / state.rtts.length;
  } else if (!state.heartbeats) {
    // No heartbeat events on this stream: the connected peers' smoothed round trips.
    const rtts = [...state.peers.values()].filter((p) => p.state === 'connected' && p.rtt_us != null)
      .map((p) => p.rtt_us / 1000);
    if (rtts.length) rtt = rtts.reduce((a, b) => a + b, 0) / rtts.length;
  }
  state.rtts = [];
  state.samples.push({ t: Date.now(), counts, rtt });
  if (state.samples.length > SAMPLES) state.samples.shift();
  drawChart();
}

function drawChart() {
  const canvas = $('chart');
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 900, height = canvas.clientHeight || 180;
  canvas.width = width * ratio; canvas.height = height * ratio;
  const g = canvas.getContext('2d');
  g.scale(ratio, ratio);
  g.clearRect(0, 0, width, height);
  const pad = { l: 34, r: 50, t: 8, b: 18 };
  const w = width - pad.l - pad.r, h = height - pad.t - pad.b;
  const samples = state.samples;
  // Whole numbers on the four grid lines.
  const most = Math.max(1, ...samples.map((s) => Math.max(...Object.values(s.counts))));
  const maxCount = Math.ceil(most / 4) * 4;
  const rtts = samples.map((s) => s.rtt).filter((r) => r != null);
  const maxRtt = Math.max(1, ...rtts) * 1.2;
  const x = (i) => pad.l + (SAMPLES <= 1 ? 0 : (w * (SAMPLES - samples.length + i)) / (SAMPLES - 1));
  const css = getComputedStyle(document.documentElement);
  g.strokeStyle = '#dde1e8'; g.fillStyle = '#6b7385'; g.font = '11px system-ui'; g.lineWidth = 1;
  for (let k = 0; k <= 4; k++) {
    const y = pad.t + h - (h * k) / 4;
    g.beginPath(); g.moveTo(pad.l, y); g.lineTo(pad.l + w, y); g.stroke();
    g.fillText(String(Math.round((maxCount * k) / 4)), 4, y + 4);
    g.fillText(((maxRtt * k) / 4).toFixed(1) + 'ms', pad.l + w + 4, y + 4);
  }
  g.fillText('-' + Math.round((SAMPLES * SAMPLE_MS) / 60000) + ' min', pad.l, height - 4);
  g.fillText('now', pad.l + w - 20, height - 4);
  g.lineWidth = 2;
  for (const s of STATES) {
    if (!samples.some((p) => p.counts[s] > 0)) continue;
    g.strokeStyle = css.getPropertyValue('--' + s).trim();
    g.beginPath();
    samples.forEach((p, i) => {
      const y = pad.t + h - (h * p.counts[s]) / maxCount;
      if (i === 0) g.moveTo(x(i), y); else g.lineTo(x(i), y);
    });
    g.stroke();
  }
  g.strokeStyle = '#111'; g.setLineDash([4, 3]); g.beginPath();
  let drawing = false;
  samples.forEach((p, i) => {
    if (p.rtt == null) { drawing = false; return; }
    const y = pad.t + h - (h * p.rtt) / maxRtt;
    if (drawing) g.lineTo(x(i), y); else g.moveTo(x(i), y);
    drawing = true;
  });
  g.stroke(); g.setLineDash([]);
}

function renderLegend() {
  const css = getComputedStyle(document.documentElement);
  $('legend').replaceChildren(...STATES.map((s) => el('span', {},
    el('i', { style: 'background:' + css.getPropertyValue('--' + s).trim() }), s)),
  el('span', {}, el('i', { style: 'background:#111' }), 'heartbeat RTT (right axis)'));
}

async function start() {
  $('login').hidden = true;
  $('app').hidden = false;
  try {
    await probeAccess();
  } catch (e) {
    if (e.message !== 'unauthorized') setStatus('the node does not answer: ' + e.message, true);
    return;
  }
  renderLegend();
  await refresh();
  clearInterval(state.refreshTimer);
  state.refreshTimer = setInterval(refresh, REFRESH_MS);
  setInterval(sample, SAMPLE_MS);
  sample();
  streamEvents();
}

$('login').addEventListener('submit', (e) => {
  e.preventDefault();
  const token = $('token-input').value.trim();
  if (!token) { $('login-error').textContent = 'enter a token'; return; }
  sessionStorage.setItem(TOKEN_KEY, token);
  state.token = token;
  $('token-input').value = '';
  start();
});
$('detail-close').addEventListener('click', () => {
  state.selected = null;
  $('detail-box').hidden = true;
  renderPeers();
});

state.token = takeToken();
if (state.token) start(); else showLogin('');
