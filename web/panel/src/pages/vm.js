// One VM, for its owner, an operator, or a temp-login session: state, power, password, console and
// terminal, NAT rules, reverse proxies, IPs, disks, ISOs, backups and its usage chart.
import { useEffect, useState } from 'preact/hooks';
import { del, get, post, put, seg, vmPath } from '../api.js';
import { t } from '../i18n.js';
import { go } from '../nav.js';
import { attempt, Chart, ConfirmButton, Field, Form, html, Loaded, notify, StateBadge, Table, TaskProgress, useLoad }
  from '../ui.js';

const POWER = [['S_START', 'start'], ['H_CLOSE', 'stop'], ['S_RESET', 'restart'], ['S_PAUSE', 'pause'],
  ['S_RESUME', 'resume']];

export function PowerButtons({ hs, vm, onDone }) {
  const [busy, setBusy] = useState(false);
  const usable = (action) => {
    if (vm.status === 'creating' || vm.status === 'deleting') return false;
    if (action === 'S_START') return vm.status === 'stopped';
    if (action === 'S_RESUME') return vm.status === 'paused';
    return vm.status === 'running';
  };
  return html`<div class="actions">${POWER.filter(([a]) => usable(a)).map(([action, key]) => html`
    <button disabled=${busy} data-testid=${`power-${action}`} onClick=${async () => {
      setBusy(true);
      await attempt(() => post(vmPath('powers', hs, vm.vm_uuid), { action }), t('power_done', { action: t(key) }));
      setBusy(false);
      onDone?.();
    }}>${t(key)}</button>`)}</div>`;
}

const TABS = ['overview', 'console', 'network', 'storage', 'backups'];

export function VMPage({ hs, vm, user, scoped }) {
  const detail = useLoad(() => get(vmPath('detail', hs, vm)), [hs, vm]);
  const [tab, setTab] = useState('overview');
  const [task, setTask] = useState(null);
  const started = (s) => { if (s?.task_id) setTask(s); detail.reload(); };
  return html`<section data-testid="page-vm">
    ${!scoped && html`<a class="link" href=${user.is_admin ? `#/vms/${encodeURIComponent(hs)}` : '#/vms'}>← ${t('back')}</a>`}
    <${Loaded} load=${detail}>${(v) => html`
      <div class="row wrap"><h1 data-testid="vm-title">${v.vm_name}</h1><${StateBadge} value=${v.status} />
        <small class="muted">${hs} / ${v.vm_uuid}</small><span class="grow"></span>
        <${PowerButtons} hs=${hs} vm=${v} onDone=${detail.reload} /></div>
      ${task && html`<${TaskProgress} key=${task.task_id} taskId=${task.task_id} onEnd=${(tk) => {
        detail.reload();
        if (tk.state === 'failed') notify(tk.message || t('failed'), 'error');
      }} />`}
      <div class="tabs" role="tablist">${TABS.map((name) => html`<button role="tab" data-testid=${`tab-${name}`}
        aria-selected=${tab === name} class=${tab === name ? 'tab active' : 'tab'} onClick=${() => setTab(name)}>
        ${t(name)}</button>`)}</div>
      ${tab === 'overview' && html`<${Overview} hs=${hs} v=${v} user=${user} onStarted=${started} />`}
      ${tab === 'console' && html`<${Console} hs=${hs} vm=${vm} />`}
      ${tab === 'network' && html`<${Network} hs=${hs} vm=${vm} admin=${user.is_admin} />`}
      ${tab === 'storage' && html`<${Storage} hs=${hs} vm=${vm} />`}
      ${tab === 'backups' && html`<${Backups} hs=${hs} vm=${v} onStarted=${started} />`}
    `}</${Loaded}></section>`;
}

function Usage({ hs, vm }) {
  const [hist, setHist] = useState({ x: [], cpu: [], mem: [] });
  useEffect(() => {
    let alive = true;
    const load = async () => {
      try {
        const s = await get(vmPath('status', hs, vm), { limit: 60 });
        if (!alive) return;
        const h = s.history || [];
        setHist({ x: h.map((p) => p.timestamp), cpu: h.map((p) => p.cpu_usage), mem: h.map((p) => p.memory_usage) });
      } catch { /* the overview shows the VM's own error */ }
    };
    load();
    const id = setInterval(load, 15000);
    return () => { alive = false; clearInterval(id); };
  }, [hs, vm]);
  return html`<${Chart} title=${t('usage')} x=${hist.x} series=${[{ label: t('cpu'), values: hist.cpu },
    { label: t('memory'), values: hist.mem }]} />`;
}

function Overview({ hs, v, user, onStarted }) {
  const [pw, setPw] = useState({ password: '' });
  const [size, setSize] = useState({ cpu_num: String(v.cpu_num), ram_num: String(v.ram_num), hdd_num: String(v.hdd_num) });
  const [os, setOs] = useState({ os_name: v.os_name, os_pass: '' });
  return html`<div class="grid2">
    <div class="card"><dl class="facts">
      <dt>${t('status')}</dt><dd>${v.status} (${v.power_state})</dd>
      <dt>${t('image')}</dt><dd>${v.os_name}</dd>
      <dt>${t('cpu_num')}</dt><dd>${v.cpu_num}</dd><dt>${t('ram_num')}</dt><dd>${v.ram_num}</dd>
      <dt>${t('hdd_num')}</dt><dd>${v.hdd_num}</dd>
      <dt>${t('ips')}</dt><dd data-testid="vm-ips">${(v.ip_addresses || []).join(', ') || '–'}</dd>
      <dt>${t('cpu')}</dt><dd>${typeof v.cpu_usage === 'number' ? `${v.cpu_usage.toFixed(1)}%` : '–'}</dd>
      <dt>${t('memory')}</dt><dd>${typeof v.memory_usage === 'number' ? `${v.memory_usage.toFixed(1)}%` : '–'}</dd>
    </dl></div>
    <${Usage} hs=${hs} vm=${v.vm_uuid} />
    <div class="card"><h3>${t('set_password')}</h3>
      <${Form} submit=${t('set_password')} onSubmit=${async () => {
        if (await attempt(() => post(vmPath('password', hs, v.vm_uuid), { password: pw.password }), t('password_set'))) {
          setPw({ password: '' });
        }
      }}><${Field} form=${pw} setForm=${setPw} name="password" type="password" label=${t('new_password')} required /></${Form}>
    </div>
    <div class="card"><h3>${t('reinstall')}</h3>
      <${Field} form=${os} setForm=${setOs} name="os_name" label=${t('image')} required />
      <${Field} form=${os} setForm=${setOs} name="os_pass" type="password" label=${t('os_pass')} />
      <div class="row end"><${ConfirmButton} testid="reinstall" label=${t('reinstall')}
        question=${t('confirm_reinstall', { name: v.vm_name })} onConfirm=${async () => {
          const body = { os_name: os.os_name };
          if (os.os_pass) body.os_pass = os.os_pass;
          onStarted(await attempt(() => post(vmPath('reinstall', hs, v.vm_uuid), body)));
        }} /></div>
    </div>
    ${user.is_admin && html`<div class="card"><h3>${t('resize')}</h3>
      <${Form} submit=${t('resize')} onSubmit=${async () => onStarted(await attempt(() => put(vmPath('update', hs, v.vm_uuid),
        { cpu_num: Number(size.cpu_num), ram_num: Number(size.ram_num), hdd_num: Number(size.hdd_num) })))}>
        <${Field} form=${size} setForm=${setSize} name="cpu_num" type="number" min="1" label=${t('cpu_num')} />
        <${Field} form=${size} setForm=${setSize} name="ram_num" type="number" min="16" label=${t('ram_num')} />
        <${Field} form=${size} setForm=${setSize} name="hdd_num" type="number" min="1" label=${t('hdd_num')} /></${Form}>
      <${ConfirmButton} testid="delete-vm" label=${t('delete')} question=${t('confirm_delete', { name: v.vm_name })}
        onConfirm=${async () => {
          const s = await attempt(() => del(vmPath('delete', hs, v.vm_uuid)), t('done'));
          if (s) go(`vms/${encodeURIComponent(hs)}`);
        }} /></div>`}
  </div>`;
}

const sameOrigin = (url) => { try { return new URL(url, location.href).origin === location.origin; } catch { return false; } };

function Console({ hs, vm }) {
  const [links, setLinks] = useState(null);
  const [show, setShow] = useState(null); // 'terminal' | 'console'
  const open = async (which) => {
    const data = await attempt(() => get(vmPath('remote', hs, vm)));
    if (!data) return;
    setLinks(data);
    const url = which === 'terminal' ? data.terminal_url : data.console_url;
    if (!url) { notify(t('no_console'), 'error'); return; }
    if (sameOrigin(url)) setShow(which);
    else window.open(url, '_blank', 'noopener');
  };
  const url = links && (show === 'terminal' ? links.terminal_url : links.console_url);
  return html`<div>
    <div class="row"><button class="primary" data-testid="open-terminal" onClick=${() => open('terminal')}>${t('open_terminal')}</button>
      <button data-testid="open-console" onClick=${() => open('console')}>${t('open_console')}</button></div>
    ${show && url && html`<iframe class="console-frame" data-testid=${`${show}-frame`} title=${t(show)} src=${url}
      referrerpolicy="no-referrer"></iframe>`}
  </div>`;
}

function Network({ hs, vm, admin }) {
  const nat = useLoad(() => get(vmPath('natget', hs, vm)), [hs, vm]);
  const proxies = useLoad(() => get(vmPath('proxys/detail', hs, vm)), [hs, vm]);
  const ips = useLoad(() => get(vmPath('ipaddr/detail', hs, vm)), [hs, vm]);
  const ports = useLoad(() => get(`/api/server/ports/${seg(hs)}`), [hs]);
  const range = ports.data?.ports_start ? t('port_range', { from: ports.data.ports_start, to: ports.data.ports_close }) : '';
  const [rule, setRule] = useState({ host_port: '', vm_port: '80', protocol: 'tcp' });
  const [proxy, setProxy] = useState({ domain: '', lan_port: '80', is_https: false });
  return html`<div>
    <h2>${t('nat_rules')}</h2>
    <${Loaded} load=${nat}>${(list) => html`<${Table} testid="nat-table" rowKey=${(r) => r.rule_index} rows=${list} columns=${[
      { label: t('host_port'), render: (r) => html`<span data-testid="nat-host-port">${r.host_port}</span>` },
      { label: t('vm_port'), key: 'vm_port' }, { label: t('protocol'), key: 'protocol' },
      { label: t('address'), render: (r) => `${r.public_addr || ''} → ${r.lan_addr}:${r.vm_port}` },
      { label: t('actions'), render: (r) => html`<${ConfirmButton} label=${t('delete')}
        question=${t('confirm_delete', { name: `${r.host_port}/${r.protocol}` })}
        onConfirm=${async () => { await attempt(() => del(vmPath('natdel', hs, vm) + `/${r.rule_index}`), t('done')); nat.reload(); }} />` },
    ]} />`}</${Loaded}>
    <${Form} testid="nat-form" submit=${t('add_rule')} onSubmit=${async () => {
      const body = { vm_port: Number(rule.vm_port), protocol: rule.protocol };
      if (rule.host_port) body.host_port = Number(rule.host_port);
      if (await attempt(() => post(vmPath('natadd', hs, vm), body), t('done'))) nat.reload();
    }}><div class="grid3">
      <${Field} form=${rule} setForm=${setRule} name="host_port" type="number" min="1" max="65535" label=${t('host_port')}
        placeholder=${t('auto_port')} hint=${range} />
      <${Field} form=${rule} setForm=${setRule} name="vm_port" type="number" min="1" max="65535" label=${t('vm_port')} required />
      <${Field} form=${rule} setForm=${setRule} name="protocol" label=${t('protocol')} options=${['tcp', 'udp']} />
    </div>${admin && html`<button type="button" data-testid="nat-check" onClick=${async () => {
      if (!rule.host_port) return;
      const r = await attempt(() => get('/api/nat/check', { port: rule.host_port, protocol: rule.protocol, hs_name: hs }));
      if (r) notify(t(r.available ? 'port_free' : 'port_taken', { port: rule.host_port }), r.available ? 'ok' : 'error');
    }}>${t('check')}</button>`}</${Form}>

    <h2>${t('proxies')}</h2>
    <${Loaded} load=${proxies}>${(list) => html`<${Table} rows=${list} columns=${[
      { label: t('domain'), render: (p) => p.domain || p.web_addr },
      { label: t('vm_port'), render: (p) => p.lan_port ?? p.vm_port },
      { label: 'HTTPS', render: (p) => (p.is_https ? t('yes') : t('no')) },
      { label: t('actions'), render: (p, i) => html`<${ConfirmButton} label=${t('delete')}
        question=${t('confirm_delete', { name: p.domain || p.web_addr })}
        onConfirm=${async () => {
          await attempt(() => del(vmPath('proxys/delete', hs, vm) + `/${p.proxy_index ?? i}`), t('done'));
          proxies.reload();
        }} />` },
    ]} />`}</${Loaded}>
    <${Form} submit=${t('add_proxy')} onSubmit=${async () => {
      const body = { domain: proxy.domain, lan_port: Number(proxy.lan_port), is_https: !!proxy.is_https };
      if (await attempt(() => post(vmPath('proxys/create', hs, vm), body), t('done'))) proxies.reload();
    }}><div class="grid3">
      <${Field} form=${proxy} setForm=${setProxy} name="domain" label=${t('domain')} required />
      <${Field} form=${proxy} setForm=${setProxy} name="lan_port" type="number" min="1" max="65535" label=${t('vm_port')} />
      <${Field} form=${proxy} setForm=${setProxy} name="is_https" type="checkbox" label="HTTPS" />
    </div></${Form}>

    <h2>${t('ips')}</h2>
    <${Loaded} load=${ips}>${(list) => html`<${Table} rows=${list} columns=${[
      { label: t('address'), render: (ip) => ip.address || ip.ip4_addr || ip.ip6_addr },
      { label: t('type'), key: 'nic_type' }, { label: 'MAC', key: 'mac_addr' },
      { label: t('actions'), render: (ip) => ip.ip_index !== null && ip.ip_index !== undefined && html`<${ConfirmButton}
        label=${t('delete')} question=${t('confirm_delete', { name: ip.address })} onConfirm=${async () => {
          await attempt(() => del(vmPath('ipaddr/delete', hs, vm) + `/${ip.ip_index}`), t('done'));
          ips.reload();
        }} />` },
    ]} />`}</${Loaded}>
    ${admin && html`<button onClick=${async () => {
      if (await attempt(() => post(vmPath('ipaddr/create', hs, vm), { nic_type: 'nat' }), t('done'))) ips.reload();
    }}>${t('add_ip')}</button>`}
  </div>`;
}

function Storage({ hs, vm }) {
  const disks = useLoad(() => get(vmPath('hdd/detail', hs, vm)), [hs, vm]);
  const detail = useLoad(() => get(vmPath('detail', hs, vm)), [hs, vm]);
  const [disk, setDisk] = useState({ hdd_name: '', hdd_size: '1' });
  const [iso, setIso] = useState({ iso_name: '' });
  const reload = () => { disks.reload(); detail.reload(); };
  return html`<div>
    <h2>${t('disks')}</h2>
    <${Loaded} load=${disks}>${(list) => html`<${Table} testid="disks-table" rowKey=${(d) => d.hdd_name} rows=${list} columns=${[
      { label: t('disk_name'), key: 'hdd_name' }, { label: t('disk_size'), key: 'hdd_size' },
      { label: t('status'), render: (d) => (d.mounted ? t('attached') : t('detached')) },
      { label: t('actions'), render: (d) => html`<div class="actions">
        ${d.mounted
          ? html`<button onClick=${async () => {
            await attempt(() => post(vmPath('hdd/unmount', hs, vm), { hdd_name: d.hdd_name }), t('done'));
            reload();
          }}>${t('unmount')}</button>`
          : html`<button onClick=${async () => {
            await attempt(() => post(vmPath('hdd/mount', hs, vm), { hdd_name: d.hdd_name, hdd_size: d.hdd_size }), t('done'));
            reload();
          }}>${t('mount')}</button>`}
        <${ConfirmButton} label=${t('delete')} question=${t('confirm_delete', { name: d.hdd_name })} onConfirm=${async () => {
          await attempt(() => del(vmPath('hdd/delete', hs, vm), { hdd_name: d.hdd_name }), t('done'));
          reload();
        }} /></div>` },
    ]} />`}</${Loaded}>
    <${Form} testid="disk-form" submit=${t('mount')} onSubmit=${async () => {
      if (await attempt(() => post(vmPath('hdd/mount', hs, vm), { hdd_name: disk.hdd_name, hdd_size: Number(disk.hdd_size) }),
        t('done'))) reload();
    }}><div class="grid3">
      <${Field} form=${disk} setForm=${setDisk} name="hdd_name" label=${t('disk_name')} required />
      <${Field} form=${disk} setForm=${setDisk} name="hdd_size" type="number" min="1" label=${t('disk_size')} required />
    </div></${Form}>
    <h2>${t('isos')}</h2>
    <${Loaded} load=${detail}>${(v) => html`<${Table} rows=${(v.isos || []).map((i) => (typeof i === 'string' ? { iso_name: i } : i))}
      columns=${[{ label: t('iso_name'), key: 'iso_name' }, { label: t('actions'), render: (i) => html`<button onClick=${async () => {
        await attempt(() => del(vmPath('iso/unmount', hs, vm) + `/${seg(i.iso_name)}`), t('done'));
        reload();
      }}>${t('unmount')}</button>` }]} />`}</${Loaded}>
    <${Form} submit=${t('mount_iso')} onSubmit=${async () => {
      if (await attempt(() => post(vmPath('iso/mount', hs, vm), { iso_name: iso.iso_name }), t('done'))) reload();
    }}><${Field} form=${iso} setForm=${setIso} name="iso_name" label=${t('iso_name')} required /></${Form}>
  </div>`;
}

function Backups({ hs, vm, onStarted }) {
  const list = useLoad(() => get(vmPath('backup/detail', hs, vm.vm_uuid)), [hs, vm.vm_uuid]);
  const [form, setForm] = useState({ description: '' });
  const [task, setTask] = useState(null);
  const started = (s) => { if (s?.task_id) setTask(s); list.reload(); };
  return html`<div>
    ${task && html`<${TaskProgress} key=${task.task_id} taskId=${task.task_id} onEnd=${(tk) => {
      list.reload();
      onStarted(null);
      notify(tk.state === 'success' ? t('done') : tk.message || t('failed'), tk.state === 'success' ? 'ok' : 'error');
    }} />`}
    <${Loaded} load=${list}>${(rows) => html`<${Table} testid="backups-table" rowKey=${(b) => b.backup_name} rows=${rows} columns=${[
      { label: t('backup_name'), render: (b) => html`<span data-testid="backup-name">${b.backup_name}</span>` },
      { label: t('description'), key: 'description' }, { label: t('status'), key: 'status' },
      { label: t('created'), render: (b) => new Date(b.created_at).toLocaleString() },
      { label: t('actions'), render: (b) => html`<div class="actions">
        <${ConfirmButton} kind="primary" testid="restore-backup" label=${t('restore')}
          question=${t('confirm_restore', { name: vm.vm_name, backup: b.backup_name })}
          onConfirm=${async () => started(await attempt(() => post(vmPath('backup/restore', hs, vm.vm_uuid),
            { backup_name: b.backup_name })))} />
        <${ConfirmButton} label=${t('delete')} question=${t('confirm_delete', { name: b.backup_name })}
          onConfirm=${async () => {
            await attempt(() => del(vmPath('backup/delete', hs, vm.vm_uuid), { backup_name: b.backup_name }), t('done'));
            list.reload();
          }} /></div>` },
    ]} />`}</${Loaded}>
    <${Form} testid="backup-form" submit=${t('create_backup')} onSubmit=${async () => {
      started(await attempt(() => post(vmPath('backup/create', hs, vm.vm_uuid), { description: form.description })));
      setForm({ description: '' });
    }}><${Field} form=${form} setForm=${setForm} name="description" label=${t('description')} /></${Form}>
  </div>`;
}
