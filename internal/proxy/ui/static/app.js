// The FODC console: reads the proxy's public HTTP API (same origin) and
// draws the fleet, the topology graph, configuration drift, lifecycle,
// crash records, pressure profiles and a metric explorer. window.fodc holds
// the latest data, for tests and the curious.
'use strict';

const fodc = (window.fodc = { graph: null, cy: null, fleet: [], refreshes: 0, errors: [] });
const REFRESH_MS = 5000;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

async function getJSON(path) {
  const resp = await fetch(path, { credentials: 'same-origin', headers: { Accept: 'application/json' } });
  if (!resp.ok) {
    let msg = resp.status + ' ' + resp.statusText;
    try { msg = (await resp.json()).error || msg; } catch (_) { /* not JSON */ }
    throw new Error(path + ': ' + msg);
  }
  return resp.json();
}

function ago(iso) {
  if (!iso) return '';
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  return s < 60 ? s + ' s ago' : s < 3600 ? Math.round(s / 60) + ' min ago' : Math.round(s / 3600) + ' h ago';
}

function address(n) {
  const p = n.primary_address;
  return p && p.ip ? p.ip + ':' + p.port : '';
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

// ---- fleet ----
// streamsSummary names the agent release the open streams suggest.
const UPSTREAM_KINDS = ['register', 'metrics', 'topology', 'lifecycle', 'schema_registry', 'crash', 'pressure'];
function streamsSummary(streams) {
  if (!streams.length) return '';
  const upstream = streams.filter((s) => UPSTREAM_KINDS.includes(s)).length;
  const ext = streams.filter((s) => !UPSTREAM_KINDS.includes(s));
  // Only our agent opens the extensions; an upstream agent's streams say its release.
  const who = ext.length ? 'this project' : upstream >= 7 ? 'HEAD' : upstream >= 4 ? 'v0.10.1–3' : upstream === 3 ? 'v0.10.0' : '?';
  return `${upstream} of 7 (${who})` + (ext.length ? ' + ' + ext.join(', ') : '');
}

function renderFleet() {
  const q = document.getElementById('fleet-filter').value.trim().toLowerCase();
  const rows = fodc.fleet
    .filter((n) => !q || [n.pod_name, n.node_role, n.tier, n.status].join(' ').toLowerCase().includes(q))
    .map((n) => {
      const note = n.disconnect_reason || (n.last_rejection ? 'reply refused: ' + n.last_rejection.reason : '');
      return el('tr', { 'data-pod': n.pod_name || n.id },
        el('td', { text: n.pod_name || n.id }),
        el('td', { text: n.node_role || '' }),
        el('td', { text: n.tier || '' }),
        el('td', { class: 'status' }, el('span', { class: 'status-' + n.status, text: n.status })),
        el('td', { text: address(n) }),
        el('td', { text: ago(n.last_heartbeat || n.last_seen) }),
        el('td', { title: (n.streams || []).join(', '), text: streamsSummary(n.streams || []) }),
        el('td', { class: n.config_drift ? 'drift-bad' : '', text: n.config_drift || 0 }),
        el('td', { class: n.crashes ? 'crash-bad' : '', text: n.crashes || 0 }),
        el('td', { class: 'muted', text: note }));
    });
  fill(document.querySelector('#fleet-table tbody'), rows);
}

// ---- graph ----
function errorColour(r) {
  return r >= 0.05 ? '#c62828' : r >= 0.01 ? '#ef6c00' : '#2e7d32';
}
const statusColour = { online: '#2e7d32', unconnected: '#ef6c00', offline: '#c62828', no_agent: '#9e9e9e' };

function graphElements(g, withLifecycle) {
  const nodes = g.nodes.map((n) => ({
    data: { id: n.id, label: n.id + (n.tier ? ' (' + n.tier + ')' : ''), role: n.node_role || '', tier: n.tier || '', colour: statusColour[n.status] || '#607d8b' },
  }));
  const known = new Set(g.nodes.map((n) => n.id));
  // Pipeline edges are drawn one per node pair: rates summed, the worst
  // error ratio, the details on click.
  const pairs = new Map();
  for (const e of g.edges) {
    if (!known.has(e.source) || !known.has(e.target)) continue;
    if (e.layer === 'lifecycle' && !withLifecycle) continue;
    const key = e.layer + '|' + e.source + '|' + e.target;
    const p = pairs.get(key) || { layer: e.layer, source: e.source, target: e.target, rate: 0, errors: 0, parts: [] };
    p.rate += e.rate || 0;
    p.errors += (e.rate || 0) * (e.error_ratio || 0);
    p.parts.push(e);
    pairs.set(key, p);
  }
  for (const p of pairs.values()) p.errorRatio = p.rate > 0 ? p.errors / p.rate : 0;
  const edges = [...pairs.values()].map((p, i) => ({
    data: {
      id: 'e' + i, source: p.source, target: p.target, layer: p.layer,
      width: p.layer === 'pipeline' ? Math.min(12, 1 + Math.log2(1 + p.rate)) : 2,
      // No rate yet (fewer than two points in the window) is not health:
      // such an edge is grey until there is traffic to judge.
      colour: p.layer !== 'pipeline' ? '#607d8b' : p.rate > 0 ? errorColour(p.errorRatio) : '#9e9e9e',
      label: p.layer === 'pipeline' ? p.rate.toFixed(1) + '/s' + (p.errorRatio >= 0.01 ? ' ' + (100 * p.errorRatio).toFixed(0) + '% err' : '') : 'lifecycle',
      parts: p.parts,
    },
    classes: p.layer,
  }));
  return { nodes, edges };
}

function renderGraph() {
  const g = fodc.graph;
  if (!g || typeof cytoscape !== 'function') return;
  const els = graphElements(g, document.getElementById('graph-lifecycle').checked);
  if (!fodc.cy) {
    fodc.cy = cytoscape({
      container: document.getElementById('cy'),
      style: [
        { selector: 'node', style: { 'background-color': 'data(colour)', label: 'data(label)', 'font-size': 11, 'text-valign': 'bottom', 'text-margin-y': 4 } },
        { selector: 'edge', style: { width: 'data(width)', 'line-color': 'data(colour)', 'target-arrow-color': 'data(colour)', 'target-arrow-shape': 'triangle', 'curve-style': 'bezier', label: 'data(label)', 'font-size': 9, 'text-rotation': 'autorotate' } },
        { selector: 'edge.lifecycle', style: { 'line-style': 'dashed' } },
      ],
      wheelSensitivity: 0.2,
    });
    fodc.cy.on('tap', 'edge', (ev) => {
      const parts = ev.target.data('parts') || [];
      const lines = parts.map((p) => p.layer === 'pipeline'
        ? `${p.operation} ${p.group}: ${(p.rate || 0).toFixed(2)}/s, ${(100 * (p.error_ratio || 0)).toFixed(1)}% errors` +
          (p.p99_seconds != null ? `, p99 ${(1000 * p.p99_seconds).toFixed(0)} ms` : '') +
          (p.bytes_per_second != null ? `, ${(p.bytes_per_second / 1048576).toFixed(1)} MiB/s` : '') + ` (${p.recorded_by})`
        : 'lifecycle call');
      document.getElementById('edge-detail').textContent = ev.target.data('source') + ' → ' + ev.target.data('target') + ': ' + lines.join('; ');
    });
  }
  const cy = fodc.cy;
  cy.batch(() => {
    cy.elements().remove();
    cy.add(els.nodes);
    cy.add(els.edges);
  });
  // Rows by place in the pipeline: liaisons on top, then the hot, warm and
  // cold tiers; nodes of a row spread over every other column and centred,
  // so that an edge between rows never runs through a node.
  const rank = (n) => (/liaison/i.test(n.data('role')) ? 0 : ({ hot: 1, warm: 2, cold: 3 })[n.data('tier')] ?? 4);
  const rows = new Map();
  cy.nodes().sort((a, b) => a.id().localeCompare(b.id())).forEach((n) => {
    const r = rank(n);
    rows.set(r, [...(rows.get(r) || []), n.id()]);
  });
  const width = Math.max(1, ...[...rows.values()].map((ids) => 2 * ids.length - 1));
  const order = [...rows.keys()].sort((a, b) => a - b);
  const place = new Map();
  order.forEach((r, row) => {
    const ids = rows.get(r);
    const offset = (width - (2 * ids.length - 1)) / 2;
    ids.forEach((id, i) => place.set(id, { row, col: offset + 2 * i }));
  });
  cy.layout({ name: 'grid', rows: order.length, cols: width, position: (n) => place.get(n.id()), padding: 30, avoidOverlap: true, animate: false }).run();
}

// ---- configuration drift ----
async function loadDrift() {
  const rep = await getJSON('/cluster/config/consistency');
  const rows = [];
  for (const g of rep.groups || []) {
    for (const d of g.differences || []) {
      const values = (d.values || []).map((v) => `${v.value} — ${(v.nodes || []).join(', ')}`).join(' | ');
      rows.push(el('tr', { 'data-param': d.param }, el('td', { text: g.role }), el('td', {}, el('code', { text: d.param })), el('td', { text: values })));
    }
  }
  if (!rows.length) rows.push(el('tr', {}, el('td', { colspan: 3, class: 'muted', text: 'Every role group agrees.' })));
  fill(document.querySelector('#drift-table tbody'), rows);
  const unsupported = rep.unsupported || [];
  document.getElementById('drift-note').textContent = unsupported.length ? 'Not compared (agents without the configuration extension): ' + unsupported.join(', ') : '';
}

// ---- lifecycle ----
async function loadLifecycle() {
  const body = document.getElementById('lifecycle-body');
  try {
    const lc = await getJSON('/cluster/lifecycle');
    const parts = [];
    const s = lc.agent_summary || {};
    parts.push(el('p', { text: `${s.responded ?? 0} of ${s.requested ?? 0} agents reported` + (lc.error ? ' — ' + lc.error : '') }));
    const groups = lc.groups || [];
    if (groups.length) {
      const rows = groups.map((g) => el('tr', {}, el('td', { text: g.name || '' }), el('td', { text: (g.catalog || '').replace('CATALOG_', '').toLowerCase() }),
        el('td', { text: ((g.schema_consistency && g.schema_consistency.status) || 'not judged').replace('CONSISTENCY_STATUS_', '').toLowerCase() })));
      parts.push(el('table', {}, el('thead', {}, el('tr', {}, el('th', { text: 'Group' }), el('th', { text: 'Catalog' }), el('th', { text: 'Schema consistency' }))), el('tbody', {}, ...rows)));
    }
    body.replaceChildren(...parts);
  } catch (e) {
    body.textContent = e.message;
  }
}

// ---- crashes and profiles ----
async function loadCrashes() {
  const d = await getJSON('/diagnostics');
  const recs = Array.isArray(d) ? d : d.records || [];
  const rows = recs.map((r) => {
    const p = r.panic_record || r.panic || {};
    return el('tr', {}, el('td', { text: r.pod_name || '' }), el('td', { text: p.occurred_at || r.fetched_at || '' }), el('td', { text: p.component || '' }), el('td', { text: p.panic_value || p.value || '' }), el('td', { text: r.artifact_dir || '' }));
  });
  if (!rows.length) rows.push(el('tr', {}, el('td', { colspan: 5, class: 'muted', text: 'No crash records.' })));
  fill(document.querySelector('#crash-table tbody'), rows);
}

async function loadProfiles() {
  const d = await getJSON('/pressure-profiles');
  const profs = Array.isArray(d) ? d : d.profiles || [];
  const rows = profs.map((p) => {
    const links = (p.profiles || []).map((t) => {
      const typ = t.type;
      const a = el('a', { href: `/pressure-profiles/${encodeURIComponent(p.pod_name)}/${encodeURIComponent(p.profile_id)}/${encodeURIComponent(typ)}`, text: typ });
      return a;
    });
    const cell = el('td', {});
    links.forEach((a, i) => { if (i) cell.append(' '); cell.append(a); });
    return el('tr', {}, el('td', { text: p.pod_name || '' }), el('td', { text: p.captured_at || '' }), el('td', { text: p.profile_id || '' }), cell);
  });
  if (!rows.length) rows.push(el('tr', {}, el('td', { colspan: 4, class: 'muted', text: 'No pressure profiles.' })));
  fill(document.querySelector('#profile-table tbody'), rows);
}

// ---- metric explorer ----
async function showChart() {
  const name = document.getElementById('explorer-family').value.trim();
  const pod = document.getElementById('explorer-pod').value;
  const secs = Number(document.getElementById('explorer-window').value);
  const svg = document.getElementById('chart');
  const legend = document.getElementById('chart-legend');
  svg.replaceChildren();
  if (!name) { legend.textContent = 'Pick a metric.'; return; }
  const start = new Date(Date.now() - secs * 1000).toISOString();
  const qs = new URLSearchParams({ start_time: start });
  if (pod) qs.set('pod_name', pod);
  const data = await getJSON('/metrics-windows?' + qs);
  const lines = [];
  for (const m of Array.isArray(data) ? data : data.metrics || []) {
    if (m.name !== name) continue;
    const pts = (m.data || m.points || []).map((p) => [Date.parse(p.timestamp), Number(p.value)]).filter((p) => isFinite(p[0]) && isFinite(p[1]));
    if (pts.length) lines.push({ labels: m.labels || {}, pts });
  }
  if (!lines.length) { legend.textContent = 'No samples of ' + name + ' in the window.'; return; }
  const xs = lines.flatMap((l) => l.pts.map((p) => p[0]));
  const ys = lines.flatMap((l) => l.pts.map((p) => p[1]));
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const W = 900, H = 300, pad = 30;
  const sx = (x) => pad + ((x - x0) / Math.max(1, x1 - x0)) * (W - 2 * pad);
  const sy = (y) => H - pad - ((y - y0) / (y1 - y0 || 1)) * (H - 2 * pad);
  const ns = 'http://www.w3.org/2000/svg';
  const colours = ['#1565c0', '#c62828', '#2e7d32', '#ef6c00', '#6a1b9a', '#00838f', '#5d4037', '#455a64'];
  lines.slice(0, 24).forEach((l, i) => {
    const path = document.createElementNS(ns, 'polyline');
    path.setAttribute('fill', 'none');
    path.setAttribute('stroke', colours[i % colours.length]);
    path.setAttribute('stroke-width', '1.5');
    path.setAttribute('points', l.pts.map((p) => sx(p[0]).toFixed(1) + ',' + sy(p[1]).toFixed(1)).join(' '));
    svg.append(path);
  });
  const axis = document.createElementNS(ns, 'text');
  axis.setAttribute('x', '4'); axis.setAttribute('y', '14'); axis.setAttribute('font-size', '11');
  axis.textContent = `${y1.toPrecision(4)} (max) … ${y0.toPrecision(4)} (min)`;
  svg.append(axis);
  legend.textContent = lines.slice(0, 24).map((l) => JSON.stringify(l.labels)).join('  ');
  fodc.chartLines = lines.length;
}

// ---- refresh loop ----
async function refresh() {
  const jobs = [
    getJSON('/cluster/graph').then((g) => {
      fodc.graph = g;
      fodc.fleet = g.nodes;
      renderFleet();
      renderGraph();
      const sel = document.getElementById('explorer-pod');
      const have = new Set([...sel.options].map((o) => o.value));
      for (const n of g.nodes) if (n.pod_name && !have.has(n.pod_name)) sel.append(el('option', { value: n.pod_name, text: n.pod_name }));
    }),
    getJSON('/health').then((h) => {
      const b = document.getElementById('health');
      b.textContent = h.status + ((h.reasons || []).length ? ': ' + h.reasons.join('; ') : '');
      b.className = 'badge ' + h.status;
    }),
    loadDrift(), loadLifecycle(), loadCrashes(), loadProfiles(),
  ];
  const results = await Promise.allSettled(jobs);
  fodc.errors = results.filter((r) => r.status === 'rejected').map((r) => String(r.reason && r.reason.message || r.reason));
  document.getElementById('updated').textContent = 'updated ' + new Date().toLocaleTimeString() + (fodc.errors.length ? ' — ' + fodc.errors.join('; ') : '');
  fodc.refreshes++;
}

async function loadFamilies() {
  // Family names for the explorer, from the answer's TYPE lines.
  const resp = await fetch('/metrics', { credentials: 'same-origin' });
  if (!resp.ok) return;
  const text = await resp.text();
  const list = document.getElementById('explorer-families');
  const names = new Set();
  for (const line of text.split('\n')) {
    const m = /^# TYPE (\S+) (\S+)/.exec(line);
    if (m && !m[1].startsWith('fodc_') && !m[1].startsWith('go_') && !m[1].startsWith('process_')) names.add(m[1]);
  }
  list.replaceChildren(...[...names].sort().map((n) => el('option', { value: n })));
}

document.getElementById('fleet-filter').addEventListener('input', renderFleet);
document.getElementById('graph-lifecycle').addEventListener('change', renderGraph);
document.getElementById('explorer-go').addEventListener('click', () => showChart().catch((e) => { document.getElementById('chart-legend').textContent = e.message; }));
refresh();
loadFamilies().catch(() => { /* the explorer still takes typed names */ });
setInterval(refresh, REFRESH_MS);
