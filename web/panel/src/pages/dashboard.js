// Operators' dashboard: hosts online / offline, counts, and each host's CPU / memory / disk over time.
import { useEffect, useState } from 'preact/hooks';
import { get } from '../api.js';
import { t } from '../i18n.js';
import { Chart, html, Loaded, StateBadge, Table, useLoad } from '../ui.js';

const REFRESH_MS = 15000;
const HISTORY_MINUTES = 60;

/** Each host's status history (GET /api/server/history/<hs>) as chart columns. */
async function loadHistory(hosts) {
  const entries = await Promise.all(hosts.map(async (h) => {
    try {
      const samples = await get(`/api/server/history/${encodeURIComponent(h.server_name)}`, { limit: HISTORY_MINUTES });
      return [h.server_name, {
        x: samples.map((p) => p.timestamp), cpu: samples.map((p) => p.cpu_usage),
        mem: samples.map((p) => p.memory_usage), disk: samples.map((p) => p.disk_usage),
      }];
    } catch {
      return [h.server_name, { x: [], cpu: [], mem: [], disk: [] }];
    }
  }));
  return Object.fromEntries(entries);
}

export function Dashboard() {
  const stats = useLoad(() => get('/api/system/stats'));
  const [hosts, setHosts] = useState(null);
  const [history, setHistory] = useState({});
  const [error, setError] = useState('');
  useEffect(() => {
    let alive = true;
    const tick = async () => {
      try {
        const list = await get('/api/server/detail', { format: 'list' });
        if (!alive) return;
        setHosts(list);
        setError('');
        const history = await loadHistory(list);
        if (alive) setHistory(history);
      } catch (e) { if (alive) setError(e.message); }
    };
    tick();
    const id = setInterval(tick, REFRESH_MS);
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
