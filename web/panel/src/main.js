// The panel: log-in, the temp-login fragment, the layout and the hash routes of each page.
import 'uplot/dist/uPlot.min.css';
import './panel.css';
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { get, post, session, setUnauthorizedHandler } from './api.js';
import { lang, setLang, t } from './i18n.js';
import { Dashboard } from './pages/dashboard.js';
import { Hosts } from './pages/hosts.js';
import { Admin } from './pages/admin.js';
import { VMPage } from './pages/vm.js';
import { AllVMs, MyVMs } from './pages/vms.js';
import { Tokens } from './pages/tokens.js';
import { go, route } from './nav.js';
import { signal, useSignal } from './state.js';
import { theme, toggleTheme } from './theme.js';
import { html, Notices, notify } from './ui.js';

// ---- temp login: a billing module's link lands on /#temp=<session token>&hs=<host>&vm=<vm>.
// Keep the token in sessionStorage and take it out of the address at once.
function takeTempLogin() {
  const hash = location.hash.replace(/^#/, '');
  if (!hash.startsWith('temp=')) return;
  const p = new URLSearchParams(hash);
  const token = p.get('temp');
  const hs = p.get('hs');
  const vm = p.get('vm');
  history.replaceState(null, '', `/#/vm/${encodeURIComponent(hs || '')}/${encodeURIComponent(vm || '')}`);
  if (token && hs && vm) session.save(token, { hs, vm });
}
takeTempLogin();


const me = signal(null); // the current user (GET /api/users/current)

setUnauthorizedHandler((env) => {
  session.clear();
  me.value = null;
  notify(env?.msg || t('login'), 'error');
});

function Login() {
  const [form, setForm] = useState({ username: '', password: '' });
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);
  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    setError('');
    try {
      const data = await post('/login', form);
      session.save(data.token);
      me.value = await get('/api/users/current');
      go(me.value.is_admin ? 'dashboard' : 'vms');
    } catch (err) {
      setError(err.message);
    } finally {
      setBusy(false);
    }
  };
  return html`<main class="login"><form class="card" onSubmit=${submit} data-testid="login-form">
    <h1>${t('app')}</h1>
    <label class="field"><span>${t('username')}</span><input name="username" autocomplete="username" required
      value=${form.username} onInput=${(e) => setForm({ ...form, username: e.target.value })} /></label>
    <label class="field"><span>${t('password')}</span><input name="password" type="password" required
      autocomplete="current-password" value=${form.password}
      onInput=${(e) => setForm({ ...form, password: e.target.value })} /></label>
    ${error && html`<p class="error" role="alert">${error}</p>`}
    <button class="primary" type="submit" disabled=${busy}>${t('login')}</button>
    <div class="row"><${Switches} /></div>
  </form></main>`;
}

function Switches() {
  useSignal(theme);
  return html`<button class="link" data-testid="lang-switch" onClick=${() => setLang(lang.value === 'zh' ? 'en' : 'zh')}>
      ${t('language')}</button>
    <button class="link" data-testid="theme-switch" onClick=${toggleTheme}>
      ${theme.value === 'dark' ? t('light') : t('dark')}</button>`;
}

const ADMIN_MENU = ['dashboard', 'hosts', 'vms', 'users', 'tokens', 'tasks', 'audit', 'settings'];

function Shell({ user, children, current }) {
  const [open, setOpen] = useState(false);
  const scope = session.scope;
  const menu = scope ? [] : user.is_admin ? ADMIN_MENU : ['vms', 'tasks', 'settings'];
  const logout = async () => {
    try { await post('/logout'); } catch { /* the session may be gone already */ }
    session.clear();
    me.value = null;
    go('');
  };
  return html`<div class="shell">
    <header class="top">
      ${menu.length > 0 && html`<button class="icon menu-btn" aria-label=${t('menu')} onClick=${() => setOpen(!open)}>☰</button>`}
      <strong class="brand">${t('app')}</strong>
      <span class="who">${scope ? t('temp_session') : user.username}</span>
      <span class="grow"></span><${Switches} />
      <button class="link" data-testid="logout" onClick=${logout}>${t('logout')}</button>
    </header>
    ${menu.length > 0 && html`<nav class=${open ? 'side open' : 'side'} onClick=${() => setOpen(false)}>
      ${menu.map((m) => html`<a href=${`#/${m}`} data-testid=${`nav-${m}`} class=${current === m ? 'active' : ''}>
        ${t(m === 'vms' && !user.is_admin ? 'my_vms' : m)}</a>`)}</nav>`}
    <main class="content">${children}</main>
  </div>`;
}

function Page({ user, path }) {
  const scope = session.scope;
  const parts = path.split('/').map(decodeURIComponent);
  if (scope) {
    // a temp-login session sees its one VM and nothing else
    return html`<${VMPage} hs=${scope.hs} vm=${scope.vm} user=${user} scoped />`;
  }
  const [page] = parts;
  if (page === 'vm' && parts.length >= 3) return html`<${VMPage} hs=${parts[1]} vm=${parts[2]} user=${user} />`;
  if (user.is_admin) {
    if (page === 'hosts') return html`<${Hosts} />`;
    if (page === 'vms') return html`<${AllVMs} host=${parts[1]} />`;
    if (page === 'tokens') return html`<${Tokens} />`;
    if (['users', 'tasks', 'audit', 'settings'].includes(page)) return html`<${Admin} page=${page} user=${user} />`;
    return html`<${Dashboard} />`;
  }
  if (page === 'tasks' || page === 'settings') return html`<${Admin} page=${page} user=${user} />`;
  return html`<${MyVMs} />`;
}

function App() {
  useSignal(lang);
  const user = useSignal(me);
  const path = useSignal(route);
  const [checking, setChecking] = useState(!!session.token && !me.value);
  useEffect(() => {
    if (!session.token || me.value) return;
    get('/api/users/current').then((u) => { me.value = u; })
      .catch(() => session.clear()).finally(() => setChecking(false));
  }, []);
  if (checking) return html`<p class="muted center">${t('loading')}</p>`;
  if (!user) return html`<${Login} /><${Notices} />`;
  const current = session.scope ? 'vm' : path.split('/')[0] || (user.is_admin ? 'dashboard' : 'vms');
  return html`<${Shell} user=${user} current=${current}><${Page} user=${user} path=${path} /></${Shell}><${Notices} />`;
}

render(html`<${App} />`, document.getElementById('app'));
