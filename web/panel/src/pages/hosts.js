// Hosts: add / edit with the engine's own options as a form, test, open or close for new VMs, scan, delete.
import { useState } from 'preact/hooks';
import { del, get, post, put, seg } from '../api.js';
import { t } from '../i18n.js';
import { attempt, ConfirmButton, Field, Form, html, Loaded, Modal, notify, StateBadge, Table, useLoad } from '../ui.js';
import { pct } from './dashboard.js';

/** "30" -> 30, "true" -> true, "" -> dropped: engine options are typed by the engine, sent as JSON. */
function typedValue(v) {
  if (typeof v !== 'string') return v;
  const s = v.trim();
  if (s === '') return undefined;
  if (s === 'true' || s === 'false') return s === 'true';
  if (/^-?\d+(\.\d+)?$/.test(s)) return Number(s);
  return s;
}

function HostForm({ engines, host, onDone }) {
  const editing = !!host;
  const [form, setForm] = useState(() => ({
    server_name: host?.server_name || '', server_type: host?.server_type || engines[0]?.name || '',
    server_addr: host?.server_addr || '', server_user: host?.server_user || '', server_pass: '',
    server_area: host?.server_area || '', ports_start: host?.config?.ports_start ?? '',
    ports_close: host?.config?.ports_close ?? '', public_addr: host?.config?.public_addr ?? '',
  }));
  const [initial] = useState(() => Object.fromEntries(
    Object.entries(host?.options || {}).map(([k, v]) => [k, String(v)])));
  const [options, setOptions] = useState(initial);
  const engine = engines.find((e) => e.name === form.server_type);
  // typed options: a list of {name, type, default, help, secret, required, choices}; older engines: {name: help}
  const declared = Array.isArray(engine?.options) ? engine.options
    : Object.entries(engine?.options || {}).map(([name, help]) => ({ name, help }));
  const submit = async () => {
    const body = {};
    for (const [k, v] of Object.entries(form)) {
      const value = ['ports_start', 'ports_close'].includes(k) ? typedValue(String(v)) : v;
      if (editing && (value === '' || value === undefined || (k === 'server_name'))) continue;
      if (!editing && (value === '' || value === undefined) && !['server_user', 'server_pass'].includes(k)) continue;
      body[k] = value;
    }
    const opts = {};
    for (const [k, v] of Object.entries(options)) {
      if (editing && v === initial[k]) continue; // unchanged (a secret is shown as "set", never sent back)
      const value = typedValue(v);
      if (value !== undefined) opts[k] = value;
    }
    body.options = opts;
    const saved = await attempt(() => (editing
      ? put(`/api/server/update/${seg(host.server_name)}`, body) : post('/api/server/create', body)), t('saved'));
    if (saved) onDone(saved);
  };
  return html`<${Form} onSubmit=${submit} submit=${t('save')} testid="host-form">
    <div class="grid2">
      <${Field} form=${form} setForm=${setForm} name="server_name" label=${t('name')} required />
      <${Field} form=${form} setForm=${setForm} name="server_type" label=${t('engine')}
        options=${engines.map((e) => ({ value: e.name, label: `${e.title || e.name} (${e.name})` }))} />
      <${Field} form=${form} setForm=${setForm} name="server_addr" label=${t('address')} required=${!editing} />
      <${Field} form=${form} setForm=${setForm} name="server_user" label=${t('server_user')} />
      <${Field} form=${form} setForm=${setForm} name="server_pass" type="password" label=${t('server_pass')} />
      <${Field} form=${form} setForm=${setForm} name="server_area" label=${t('area')} />
      <${Field} form=${form} setForm=${setForm} name="ports_start" type="number" label=${t('ports_start')} min="1" max="65535" />
      <${Field} form=${form} setForm=${setForm} name="ports_close" type="number" label=${t('ports_close')} min="1" max="65535" />
      <${Field} form=${form} setForm=${setForm} name="public_addr" label=${t('public_addr')} />
    </div>
    ${declared.length > 0 && html`<fieldset><legend>${t('engine_options')}</legend>
      <div class="grid2">${declared.map((o) => html`
        <${Field} form=${options} setForm=${setOptions} name=${o.name} label=${o.name} required=${!!o.required}
          hint=${o.default != null ? `${o.help || ''} (default ${o.default})` : o.help}
          type=${o.secret ? 'password' : 'text'}
          options=${o.type === 'choice' ? [{ value: '', label: '' }, ...o.choices.map((c) => ({ value: c, label: c }))]
            : undefined} />`)}</div></fieldset>`}
  </${Form}>`;
}

export function Hosts() {
  const hosts = useLoad(() => get('/api/server/detail', { format: 'list' }));
  const engines = useLoad(() => get('/api/system/engine/detail'));
  const [editing, setEditing] = useState(null); // null: closed, {}: new, host: edit
  const act = async (fn, text) => { await attempt(fn, text); hosts.reload(); };
  return html`<section data-testid="page-hosts">
    <div class="row"><h1>${t('hosts')}</h1><span class="grow"></span>
      <button class="primary" data-testid="add-host" onClick=${() => setEditing({})}>${t('add_host')}</button></div>
    <${Loaded} load=${hosts}>${(list) => html`<${Table} testid="hosts-table" rowKey=${(h) => h.server_name} rows=${list}
      empty=${t('no_hosts')} columns=${[
        { label: t('name'), render: (h) => html`<a href=${`#/vms/${encodeURIComponent(h.server_name)}`}>${h.server_name}</a>` },
        { label: t('type'), key: 'server_type' },
        { label: t('address'), key: 'server_addr' },
        { label: t('status'), render: (h) => html`<${StateBadge} value=${h.status} />
          ${h.error && html`<small class="error">${h.error}</small>`}` },
        { label: t('vms_count'), key: 'vms_count' },
        { label: t('cpu'), render: (h) => pct(h.cpu_usage) },
        { label: t('memory'), render: (h) => pct(h.memory_usage) },
        { label: t('open_for_vms'), render: (h) => (h.enabled ? t('yes') : t('no')) },
        { label: t('actions'), render: (h) => html`<div class="actions">
          <button onClick=${() => setEditing(h)}>${t('edit')}</button>
          <button data-testid="host-test" onClick=${() => act(async () => {
            const s = await get(`/api/server/status/${seg(h.server_name)}`);
            if (s.status !== 'online') throw new Error(`${h.server_name}: ${s.error || t('offline')}`);
            notify(`${h.server_name}: ${t('online')} ${s.version || ''}`, 'ok');
          })}>${t('test')}</button>
          <button onClick=${() => act(() => post(`/api/server/powers/${seg(h.server_name)}`, { enable: !h.enabled }),
            h.enabled ? t('closed_for_vms') : t('open_for_vms'))}>${h.enabled ? t('close') : t('open')}</button>
          <button onClick=${() => act(async () => {
            const r = await post(`/api/client/scaner/${seg(h.server_name)}`);
            await post(`/api/server/backup/scan/${seg(h.server_name)}`);
            return r;
          }, t('done'))}>${t('scan')}</button>
          <${ConfirmButton} label=${t('delete')} question=${t('confirm_delete_host', { name: h.server_name })}
            onConfirm=${() => act(() => del(`/api/server/delete/${seg(h.server_name)}`, undefined, { force: 'true' }),
              t('done'))} />
        </div>` },
      ]} />`}</${Loaded}>
    ${editing && html`<${Modal} title=${editing.server_name ? `${t('edit')} ${editing.server_name}` : t('add_host')}
      onClose=${() => setEditing(null)}>
      <${Loaded} load=${engines}>${(list) => html`<${HostForm} engines=${list} host=${editing.server_name ? editing : null}
        onDone=${() => { setEditing(null); hosts.reload(); }} />`}</${Loaded}></${Modal}>`}
  </section>`;
}
