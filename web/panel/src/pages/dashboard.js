// Operators' dashboard: hosts online / offline, counts, and each host's CPU / memory / disk over time.
import { useEffect, useState } from 'preact/hooks';
import { get } from '../api.js';
import { t } from '../i18n.js';
import { Chart, html, Loaded, StateBadge, Table, useLoad } from '../ui.js';

const SAMPLE_MS = 10000;
const KEEP = 360; // one hour of samples at 10 s
const HISTORY_KEY = 'idcs.hostHistory';

// The API has no stored host history yet: the page samples /api/server/detail while it is open and
// keeps the samples for the tab (sessionStorage), so coming back to the dashboard keeps the curve.
function loadHistory() {
  try { return JSON.parse(sessionStorage.getItem(HISTORY_KEY) || '{}'); } catch { return {}; }
}

function addSample(history, hosts) {
  const now = Math.floor(Date.now() / 1000);
  const next = { ...history };
  for (const h of hosts) {
    const old = next[h.server_name] || { x: [], cpu: [], mem: [], disk: [] };
    const push = (arr, v) => [...arr, v ?? null].slice(-KEEP);
    next[h.server_name] = {
      x: push(old.x, now), cpu: push(old.cpu, h.cpu_usage), mem: push(old.mem, h.memory_usage),
      disk: push(old.disk, h.disk_usage),
    };
  }
  sessionStorage.setItem(HISTORY_KEY, JSON.stringify(next));
  return next;
}

export function Dashboard() {
  const stats = useLoad(() => get('/api/system/stats'));
  const [hosts, setHosts] = useState(null);
  const [history, setHistory] = useState(loadHistory);
  const [error, setError] = useState('');
  useEffect(() => {
    let alive = true;
    const tick = async () => {
      try {
        const list = await get('/api/server/detail', { format: 'list' });
        if (!alive) return;
        setHosts(list);
        setHistory((h) => addSample(h, list));
        setError('');
      } catch (e) { if (alive) setError(e.message); }
    };
    tick();
    const id = setInterval(tick, SAMPLE_MS);
    return () => { alive = false; clearInterval(id); };
  }, []);
  const online = hosts ? hosts.filter((h) => h.status === 'online').length : '…';
  const offline = hosts ? hosts.length - online : '…';
  return html`<section data-testid="page-dashboard">
    <h1>${t('dashboard')}</h1>
    ${error && html`<p class="error" role="alert">${error}</p>`}
    <div class="cards">
      <div class="card stat"><span>${t('hosts_online')}</span><strong data-testid="hosts-online">${online}</strong></div>
      <div class="card stat"><span>${t('hosts_offline')}</span><strong data-testid="hosts-offline">${offline}</strong></div>
      <${Loaded} load=${stats}>${(s) => html`
        <div class="card stat"><span>${t('vms_count')}</span><strong data-testid="vms-count">${s.vms_count}</strong></div>
        <div class="card stat"><span>${t('users_count')}</span><strong>${s.users_count}</strong></div>`}</${Loaded}>
    </div>
    ${hosts && html`<${Table} rowKey=${(h) => h.server_name} rows=${hosts} empty=${t('no_hosts')} columns=${[
      { label: t('name'), render: (h) => html`<a href=${`#/vms/${encodeURIComponent(h.server_name)}`}>${h.server_name}</a>` },
      { label: t('type'), key: 'server_type' },
      { label: t('status'), render: (h) => html`<${StateBadge} value=${h.status} />` },
      { label: t('vms_count'), key: 'vms_count' },
      { label: t('cpu'), render: (h) => pct(h.cpu_usage) },
      { label: t('memory'), render: (h) => pct(h.memory_usage) },
    ]} />`}
    <h2>${t('usage')} <small class="muted">${t('usage_note')}</small></h2>
    <div class="charts">${(hosts || []).map((h) => {
      const s = history[h.server_name] || { x: [], cpu: [], mem: [], disk: [] };
      return html`<${Chart} key=${h.server_name} title=${h.server_name} x=${s.x} series=${[
        { label: t('cpu'), values: s.cpu }, { label: t('memory'), values: s.mem }, { label: t('disk'), values: s.disk }]} />`;
    })}</div>
  </section>`;
}

export const pct = (v) => (typeof v === 'number' ? `${v.toFixed(1)}%` : '–');
