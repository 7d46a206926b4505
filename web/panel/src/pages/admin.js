// Users, their quotas and host grants, tasks with live progress, the audit log with filters, settings and the API token.
import { useEffect, useState } from 'preact/hooks';
import { del, get, post, put, seg } from '../api.js';
import { t } from '../i18n.js';
import { attempt, ConfirmButton, Field, Form, html, Loaded, Modal, StateBadge, Table, useLoad } from '../ui.js';

const QUOTA = ['max_vms', 'max_cpu', 'max_ram', 'max_hdd', 'max_nat', 'max_ips', 'max_backups'];

function UserForm({ user, onDone }) {
  const [form, setForm] = useState(() => ({
    username: user?.username || '', email: user?.email || '', password: '', is_admin: !!user?.is_admin,
    ...Object.fromEntries(QUOTA.map((k) => [k, String(user?.quota?.[k] ?? -1)])),
  }));
  const submit = async () => {
    const body = { username: form.username, email: form.email, is_admin: !!form.is_admin,
      quota: Object.fromEntries(QUOTA.map((k) => [k, Number(form[k])])) };
    if (form.password) body.password = form.password;
    const saved = await attempt(() => (user ? put(`/api/users/${user.id}`, body) : post('/api/users', body)), t('saved'));
    if (saved) onDone();
  };
  return html`<${Form} onSubmit=${submit} submit=${t('save')} testid="user-form"><div class="grid2">
    <${Field} form=${form} setForm=${setForm} name="username" label=${t('username')} required />
    <${Field} form=${form} setForm=${setForm} name="email" type="email" label=${t('email')} required />
    <${Field} form=${form} setForm=${setForm} name="password" type="password" label=${t('password')} required=${!user} />
    <${Field} form=${form} setForm=${setForm} name="is_admin" type="checkbox" label=${t('admin')} />
  </div><fieldset><legend>${t('quota')} <small class="muted">${t('unlimited')}</small></legend><div class="grid3">
    ${QUOTA.map((k) => html`<${Field} form=${form} setForm=${setForm} name=${k} type="number" min="-1" label=${t(k)} />`)}
  </div></fieldset></${Form}>`;
}

/** The hosts a customer may create VMs on: grant or take back each (the server answers the new list). */
function HostGrants({ user }) {
  const hosts = useLoad(() => get('/api/server/detail', { format: 'list' }));
  const granted = useLoad(() => get(`/api/users/${seg(user.id)}/hosts`));
  const change = async (hs, grant) => {
    const path = `/api/users/${seg(user.id)}/hosts/${seg(hs)}`;
    if (await attempt(() => (grant ? post(path) : del(path)), t('saved'))) granted.reload();
  };
  return html`<div data-testid="grants"><p class="muted">${t('grants_note')}</p>
    <${Loaded} load=${hosts}>${(list) => html`<${Loaded} load=${granted}>${(mine) => html`<${Table} testid="grants-table"
      rowKey=${(h) => h.server_name} rows=${list} empty=${t('no_hosts')} columns=${[
        { label: t('host'), key: 'server_name' },
        { label: t('status'), render: (h) => (mine.includes(h.server_name) ? t('granted') : t('not_granted')) },
        { label: t('actions'), render: (h) => (mine.includes(h.server_name)
          ? html`<button class="danger" data-testid="revoke-host" onClick=${() => change(h.server_name, false)}>${t('revoke')}</button>`
          : html`<button class="primary" data-testid="grant-host" onClick=${() => change(h.server_name, true)}>${t('grant')}</button>`) },
      ]} />`}</${Loaded}>`}</${Loaded}></div>`;
}

function Users() {
  const users = useLoad(() => get('/api/users'));
  const [editing, setEditing] = useState(null);
  const [granting, setGranting] = useState(null);
  const quota = (u) => QUOTA.map((k) => {
    const max = u.quota?.[k];
    return `${t(k)} ${u.quota?.[k.replace('max_', 'used_')] ?? 0}/${max === -1 || max === undefined ? '∞' : max}`;
  }).join(' · ');
  return html`<section data-testid="page-users"><div class="row"><h1>${t('users')}</h1><span class="grow"></span>
    <button onClick=${() => attempt(() => post('/api/system/recalculate-quotas'), t('done')).then(users.reload)}>${t('recalc')}</button>
    <button class="primary" data-testid="add-user" onClick=${() => setEditing({})}>${t('add_user')}</button></div>
    <${Loaded} load=${users}>${(list) => html`<${Table} rowKey=${(u) => u.id} rows=${list} columns=${[
      { label: t('username'), key: 'username' }, { label: t('email'), key: 'email' },
      { label: t('role'), render: (u) => (u.is_admin ? t('admin') : t('customer')) },
      { label: t('quota'), render: (u) => html`<small>${quota(u)}</small>` },
      { label: t('actions'), render: (u) => html`<div class="actions"><button onClick=${() => setEditing(u)}>${t('edit')}</button>
        ${!u.is_admin && html`<button data-testid="user-hosts" onClick=${() => setGranting(u)}>${t('host_grants')}</button>`}
        <${ConfirmButton} label=${t('delete')} question=${t('confirm_delete', { name: u.username })}
          onConfirm=${async () => { await attempt(() => del(`/api/users/${u.id}`), t('done')); users.reload(); }} /></div>` },
    ]} />`}</${Loaded}>
    ${editing && html`<${Modal} title=${editing.id ? `${t('edit')} ${editing.username}` : t('add_user')} onClose=${() => setEditing(null)}>
      <${UserForm} user=${editing.id ? editing : null} onDone=${() => { setEditing(null); users.reload(); }} /></${Modal}>`}
    ${granting && html`<${Modal} title=${t('grants_of', { name: granting.username })} onClose=${() => setGranting(null)}>
      <${HostGrants} user=${granting} /></${Modal}>`}
  </section>`;
}

function Tasks() {
  const [state, setState] = useState('');
  const tasks = useLoad(() => get('/api/tasks', { limit: 100, state }), [state]);
  useEffect(() => { // live progress: poll while anything runs
    const busy = (tasks.data || []).some((tk) => tk.state === 'pending' || tk.state === 'running');
    if (!busy) return undefined;
    const id = setTimeout(tasks.reload, 1000);
    return () => clearTimeout(id);
  }, [tasks.data]);
  return html`<section data-testid="page-tasks"><div class="row"><h1>${t('tasks')}</h1><span class="grow"></span>
    <label class="field inline"><span>${t('state')}</span><select value=${state} onChange=${(e) => setState(e.target.value)}>
      ${['', 'pending', 'running', 'success', 'failed'].map((s) => html`<option value=${s}>${s ? t(s) : t('all')}</option>`)}
    </select></label><button onClick=${tasks.reload}>${t('refresh')}</button></div>
    <${Loaded} load=${tasks}>${(list) => html`<${Table} testid="tasks-table" rowKey=${(tk) => tk.id} rows=${list} columns=${[
      { label: t('kind'), key: 'kind' }, { label: t('target'), render: (tk) => `${tk.host_name || ''}/${tk.vm_uuid || ''}` },
      { label: t('state'), render: (tk) => html`<${StateBadge} value=${tk.state} />` },
      { label: t('progress'), render: (tk) => html`<progress max="100" value=${tk.progress}></progress> ${tk.progress}%` },
      { label: t('message'), key: 'message' },
      { label: t('time'), render: (tk) => new Date(tk.created_at).toLocaleString() },
    ]} />`}</${Loaded}></section>`;
}

function Audit() {
  const [filter, setFilter] = useState({ user: '', action: '', result: '', text: '' });
  const [limit, setLimit] = useState(200);
  const log = useLoad(() => get('/api/system/logger/detail', { limit }), [limit]);
  const match = (e) => (!filter.user || (e.username || '').includes(filter.user))
    && (!filter.action || (e.action || '').startsWith(filter.action))
    && (!filter.result || e.result === filter.result)
    && (!filter.text || `${e.target} ${e.detail} ${e.source_ip}`.toLowerCase().includes(filter.text.toLowerCase()));
  return html`<section data-testid="page-audit"><h1>${t('audit')}</h1>
    <div class="grid3 filters">
      <${Field} form=${filter} setForm=${setFilter} name="user" label=${t('user')} />
      <${Field} form=${filter} setForm=${setFilter} name="action" label=${t('action')} />
      <${Field} form=${filter} setForm=${setFilter} name="result" label=${t('outcome')}
        options=${[{ value: '', label: t('all') }, 'success', 'started', 'failed']} />
      <${Field} form=${filter} setForm=${setFilter} name="text" label=${t('filter')} />
      <label class="field"><span>${t('limit')}</span><select value=${limit} onChange=${(e) => setLimit(Number(e.target.value))}>
        ${[100, 200, 500, 1000].map((n) => html`<option value=${n}>${n}</option>`)}</select></label>
    </div>
    <${Loaded} load=${log}>${(list) => html`<${Table} testid="audit-table" rowKey=${(e) => e.id} rows=${list.filter(match)} columns=${[
      { label: t('time'), render: (e) => new Date(e.time).toLocaleString() }, { label: t('user'), key: 'username' },
      { label: t('action'), key: 'action' }, { label: t('target'), key: 'target' },
      { label: t('outcome'), key: 'result' }, { label: t('detail'), key: 'detail' }, { label: 'IP', key: 'source_ip' },
    ]} />`}</${Loaded}></section>`;
}

function ApiToken() {
  const [token, setToken] = useState(null);
  return html`<div class="card"><h3>${t('api_token')}</h3>
    <p><code>${token ?? '••••••••'}</code></p>
    <div class="row"><button onClick=${async () => {
      if (token) { setToken(null); return; }
      const d = await attempt(() => get('/api/token/current'));
      if (d) setToken(d.token);
    }}>${token ? t('hide') : t('show')}</button>
    <${ConfirmButton} label=${t('reset')} question=${`${t('reset')} ${t('api_token')}?`} onConfirm=${async () => {
      const d = await attempt(() => post('/api/token/reset'), t('done'));
      if (d) setToken(d.token);
    }} /></div></div>`;
}

function ChangePassword() {
  const [form, setForm] = useState({ old_password: '', new_password: '' });
  return html`<div class="card"><h3>${t('change_password')}</h3><${Form} submit=${t('save')} onSubmit=${async () => {
    if (await attempt(() => post('/api/users/change-password', form), t('saved'))) setForm({ old_password: '', new_password: '' });
  }}><${Field} form=${form} setForm=${setForm} name="old_password" type="password" label=${t('old_password')} required />
    <${Field} form=${form} setForm=${setForm} name="new_password" type="password" label=${t('new_password')} required /></${Form}></div>`;
}

function SystemSettings() {
  const settings = useLoad(() => get('/api/system/settings'));
  const [form, setForm] = useState(null);
  useEffect(() => {
    if (settings.data) {
      setForm(Object.fromEntries(Object.entries(settings.data.settings).map(([k, v]) => [k,
        typeof v === 'object' ? JSON.stringify(v) : String(v)])));
    }
  }, [settings.data]);
  const submit = async () => {
    const changes = {};
    for (const [k, spec] of Object.entries(settings.data.schema)) {
      const raw = form[k];
      let value = raw;
      if (spec.type === 'int' || spec.type === 'float') value = Number(raw);
      else if (spec.type === 'bool') value = raw === 'true';
      else if (spec.type === 'dict' || spec.type === 'list') value = JSON.parse(raw || '{}');
      if (JSON.stringify(value) !== JSON.stringify(settings.data.settings[k])) changes[k] = value;
    }
    if (Object.keys(changes).length === 0) return;
    if (await attempt(() => post('/api/system/settings', changes), t('saved'))) settings.reload();
  };
  return html`<div class="card"><h3>${t('settings')}</h3><${Loaded} load=${settings}>${(s) => form && html`
    <${Form} submit=${t('save')} onSubmit=${() => attempt(submit)} testid="settings-form"><div class="grid2">
      ${Object.entries(s.schema).map(([k, spec]) => html`<${Field} form=${form} setForm=${setForm} name=${k} label=${k}
        hint=${spec.description} type=${spec.type === 'int' || spec.type === 'float' ? 'number' : 'text'}
        min=${spec.min} max=${spec.max} />`)}</div></${Form}>`}</${Loaded}></div>`;
}

function Engines() {
  const engines = useLoad(() => get('/api/system/engine/detail'));
  return html`<div class="card"><h3>${t('engines')}</h3><${Loaded} load=${engines}>${(list) => html`<${Table} rows=${list}
    columns=${[{ label: t('name'), render: (e) => `${e.title || e.name} (${e.name} ${e.version})` },
      { label: t('capabilities'), render: (e) => html`<small>${e.capabilities.join(', ')}</small>` }]} />`}</${Loaded}></div>`;
}

export function Admin({ page, user }) {
  if (page === 'users') return html`<${Users} />`;
  if (page === 'tasks') return html`<${Tasks} />`;
  if (page === 'audit') return html`<${Audit} />`;
  return html`<section data-testid="page-settings"><h1>${t('settings')}</h1>
    <${ChangePassword} />
    ${user.is_admin && html`<${SystemSettings} /><${ApiToken} /><${Engines} />`}</section>`;
}
