// Lists of VMs. Operators: the VMs of every host; create (image from the host's list, owner), power, delete.
// Customers: their own VMs; create on a host an operator granted them (the API refuses the others).
import { useState } from 'preact/hooks';
import { get, post, seg } from '../api.js';
import { t } from '../i18n.js';
import { go, vmHref } from '../nav.js';
import { attempt, Field, Form, html, Loaded, Modal, StateBadge, Table, TaskProgress, useLoad } from '../ui.js';
import { PowerButtons } from './vm.js';

/** The create form; ``customer``: for the customer's own account (no owner to choose). */
export function CreateVM({ hs, onStarted, customer = false }) {
  const images = useLoad(() => get(`/api/client/os-images/${seg(hs)}`), [hs]);
  const users = useLoad(() => (customer ? Promise.resolve([]) : get('/api/users')));
  const [form, setForm] = useState({ vm_name: '', os_name: '', cpu_num: '1', ram_num: '256', hdd_num: '1', owner_id: '',
    os_pass: '' });
  const submit = async () => {
    const body = { vm_name: form.vm_name, os_name: form.os_name, cpu_num: Number(form.cpu_num),
      ram_num: Number(form.ram_num), hdd_num: Number(form.hdd_num) };
    if (form.owner_id) body.owner_id = Number(form.owner_id);
    if (form.os_pass) body.os_pass = form.os_pass;
    const started = await attempt(() => post(`/api/client/create/${seg(hs)}`, body));
    if (started) onStarted(started);
  };
  return html`<${Loaded} load=${images}>${(groups) => {
    // VMs are made from images and templates; ISOs are for ISO mount
    const choices = Object.entries(groups).flatMap(([family, list]) => list.filter((i) => i.kind !== 'iso')
      .map((i) => ({ value: i.file, label: `${family}: ${i.name}` })));
    if (!form.os_name && choices[0]) setTimeout(() => setForm((f) => ({ ...f, os_name: f.os_name || choices[0].value })));
    const owners = [{ value: '', label: '—' }, ...((users.data || []).map((u) => ({ value: String(u.id), label: u.username })))];
    return html`<${Form} onSubmit=${submit} submit=${t('create_vm')} testid="vm-form"><div class="grid2">
      <${Field} form=${form} setForm=${setForm} name="vm_name" label=${t('vm_name')} required />
      <${Field} form=${form} setForm=${setForm} name="os_name" label=${t('image')} options=${choices} required />
      <${Field} form=${form} setForm=${setForm} name="cpu_num" type="number" min="1" label=${t('cpu_num')} required />
      <${Field} form=${form} setForm=${setForm} name="ram_num" type="number" min="16" label=${t('ram_num')} required />
      <${Field} form=${form} setForm=${setForm} name="hdd_num" type="number" min="1" label=${t('hdd_num')} required />
      ${!customer && html`<${Field} form=${form} setForm=${setForm} name="owner_id" label=${t('owner')} options=${owners} />`}
      <${Field} form=${form} setForm=${setForm} name="os_pass" type="password" label=${t('os_pass')} />
    </div></${Form}>`;
  }}</${Loaded}>`;
}

function HostVMs({ hs }) {
  const vms = useLoad(() => get(`/api/client/detail/${seg(hs)}`), [hs]);
  const [creating, setCreating] = useState(false);
  const [task, setTask] = useState(null);
  return html`<section>
    <div class="row"><h2>${t('vm_of', { host: hs })}</h2><span class="grow"></span>
      <button class="primary" data-testid="create-vm" onClick=${() => setCreating(true)}>${t('create_vm')}</button></div>
    ${task && html`<${TaskProgress} key=${task.task_id} taskId=${task.task_id} onEnd=${() => vms.reload()} />`}
    <${Loaded} load=${vms}>${(list) => html`<${Table} testid="vms-table" rowKey=${(v) => v.vm_uuid} rows=${list} columns=${[
      { label: t('name'), render: (v) => html`<a href=${vmHref(hs, v.vm_uuid)}>${v.vm_name}</a> <small class="muted">${v.vm_uuid}</small>` },
      { label: t('status'), render: (v) => html`<${StateBadge} value=${v.status} />` },
      { label: t('image'), key: 'os_name' },
      { label: `${t('cpu_num')} / ${t('ram_num')} / ${t('hdd_num')}`, render: (v) => `${v.cpu_num} / ${v.ram_num} / ${v.hdd_num}` },
      { label: t('owner'), key: 'owner_id' },
      { label: t('power'), render: (v) => html`<${PowerButtons} hs=${hs} vm=${v} onDone=${vms.reload} />` },
    ]} />`}</${Loaded}>
    ${creating && html`<${Modal} title=${t('create_vm')} onClose=${() => setCreating(false)}>
      <${CreateVM} hs=${hs} onStarted=${(s) => { setCreating(false); setTask(s); vms.reload(); }} /></${Modal}>`}
  </section>`;
}

export function AllVMs({ host }) {
  const hosts = useLoad(() => get('/api/server/detail', { format: 'list' }));
  return html`<section data-testid="page-vms"><h1>${t('vms')}</h1>
    <${Loaded} load=${hosts}>${(list) => {
      if (list.length === 0) return html`<p class="muted">${t('no_hosts')} <a href="#/hosts">${t('add_host')}</a></p>`;
      const current = host && list.some((h) => h.server_name === host) ? host : list[0].server_name;
      return html`<div class="tabs" role="tablist">${list.map((h) => html`<button role="tab"
          aria-selected=${h.server_name === current} class=${h.server_name === current ? 'tab active' : 'tab'}
          onClick=${() => go(`vms/${encodeURIComponent(h.server_name)}`)}>${h.server_name}
          <${StateBadge} value=${h.status} /></button>`)}</div>
        <${HostVMs} key=${current} hs=${current} />`;
    }}</${Loaded}></section>`;
}

/** A customer's create: the host is typed (customers do not list hosts); the API checks the grant. */
function CustomerCreate({ onStarted }) {
  const [form, setForm] = useState({ hs_name: '' });
  const [hs, setHs] = useState('');
  return html`<div data-testid="customer-create"><form class="row" data-testid="host-choice" onSubmit=${(e) => {
    e.preventDefault();
    setHs(form.hs_name.trim());
  }}><${Field} form=${form} setForm=${setForm} name="hs_name" label=${t('host')} required hint=${t('host_name_hint')} />
    <button type="submit">${t('select_host')}</button></form>
    ${hs && html`<${CreateVM} key=${hs} hs=${hs} customer onStarted=${onStarted} />`}</div>`;
}

export function MyVMs() {
  const vms = useLoad(() => get('/api/client/detail'));
  const [creating, setCreating] = useState(false);
  const [task, setTask] = useState(null);
  return html`<section data-testid="page-my-vms"><div class="row"><h1>${t('my_vms')}</h1><span class="grow"></span>
      <button class="primary" data-testid="create-vm" onClick=${() => setCreating(true)}>${t('create_vm')}</button></div>
    ${task && html`<${TaskProgress} key=${task.task_id} taskId=${task.task_id} onEnd=${() => vms.reload()} />`}
    <${Loaded} load=${vms}>${(list) => html`<div class="cards">${list.map((v) => html`
      <a class="card vm-card" key=${`${v.server_name}/${v.vm_uuid}`} href=${vmHref(v.server_name, v.vm_uuid)}
        data-testid="vm-card">
        <strong>${v.vm_name}</strong><${StateBadge} value=${v.status} />
        <small class="muted">${v.server_name} · ${v.os_name}</small>
        <small>${v.cpu_num} ${t('cpu')} · ${v.ram_num} MB · ${v.hdd_num} GB</small></a>`)}
      ${list.length === 0 && html`<p class="muted">${t('nothing')}</p>`}</div>`}</${Loaded}>
    ${creating && html`<${Modal} title=${t('create_vm')} onClose=${() => setCreating(false)}>
      <${CustomerCreate} onStarted=${(s) => { setCreating(false); setTask(s); vms.reload(); }} /></${Modal}>`}
  </section>`;
}
