// Operators: named API tokens for billing modules. List (never a secret), create (the secret is
// shown once, in the dialog, and forgotten when it closes), revoke with confirmation.
import { useState } from 'preact/hooks';
import { del, get, post, seg } from '../api.js';
import { t } from '../i18n.js';
import { attempt, ConfirmButton, Field, Form, html, Loaded, Modal, Table, useLoad } from '../ui.js';

const when = (iso) => (iso ? new Date(iso).toLocaleString() : '—');

function CreateToken({ profiles, onCreated }) {
  const [form, setForm] = useState({ name: '', profile: 'openidcs', expires_in_days: '' });
  const [scopes, setScopes] = useState([]);
  const allScopes = Object.entries(profiles[0]?.scopes || {}); // [name, the server's description]
  const submit = async () => {
    const body = { name: form.name, profile: form.profile, scopes };
    if (form.expires_in_days) body.expires_in_days = Number(form.expires_in_days);
    const made = await attempt(() => post('/api/tokens', body), t('done'));
    if (made) onCreated(made);
  };
  const toggle = (s) => setScopes((list) => (list.includes(s) ? list.filter((x) => x !== s) : [...list, s]));
  return html`<${Form} onSubmit=${submit} submit=${t('create_token')} testid="token-form"><div class="grid2">
    <${Field} form=${form} setForm=${setForm} name="name" label=${t('name')} required />
    <${Field} form=${form} setForm=${setForm} name="profile" label=${t('profile')}
      options=${profiles.map((p) => ({ value: p.name, label: `${p.name} — ${p.description}` }))} />
    <${Field} form=${form} setForm=${setForm} name="expires_in_days" type="number" min="1" max="3650"
      label=${t('expires_in_days')} hint=${t('never_expires')} />
  </div><fieldset><legend>${t('scopes')} <small class="muted">${t('scopes_hint')}</small></legend><div class="row">
    ${allScopes.map(([s, about]) => html`<label class="field check" title=${about}><span>${t(`scope_${s}`)}</span>
      <input type="checkbox" name=${`scope-${s}`} checked=${scopes.includes(s)} onChange=${() => toggle(s)} /></label>`)}
  </div></fieldset></${Form}>`;
}

/** The one time the secret is shown: gone from the page when this dialog closes. */
function SecretOnce({ token }) {
  return html`<div data-testid="token-secret-box"><p>${t('token_once')}</p>
    <p><code class="secret" data-testid="token-secret">${token.token}</code></p>
    <p class="muted">${t('name')}: ${token.name} · ${t('profile')}: ${token.profile}</p></div>`;
}

export function Tokens() {
  const tokens = useLoad(() => get('/api/tokens'));
  const profiles = useLoad(() => get('/api/tokens/profiles'));
  const [dialog, setDialog] = useState(null); // null | 'create' | the created token (with its secret)
  const close = () => { setDialog(null); tokens.reload(); };
  return html`<section data-testid="page-tokens"><div class="row"><h1>${t('tokens')}</h1><span class="grow"></span>
    <button onClick=${tokens.reload}>${t('refresh')}</button>
    <button class="primary" data-testid="add-token" onClick=${() => setDialog('create')}>${t('create_token')}</button></div>
    <p class="muted">${t('tokens_note')}</p>
    <${Loaded} load=${tokens}>${(list) => html`<${Table} testid="tokens-table" rowKey=${(k) => k.id} rows=${list} columns=${[
      { label: t('name'), key: 'name' }, { label: t('profile'), key: 'profile' },
      { label: t('scopes'), render: (k) => (k.scopes.length ? k.scopes.map((s) => t(`scope_${s}`)).join(', ') : t('scope_all')) },
      { label: t('token_prefix'), render: (k) => html`<code>${k.prefix}…</code>` },
      { label: t('expires'), render: (k) => when(k.expires_at) },
      { label: t('last_used'), render: (k) => when(k.last_used_at) },
      { label: t('status'), render: (k) => html`<span class=${`badge s-${k.revoked ? 'failed' : 'success'}`}>
        ${k.revoked ? t('revoked') : t('active')}</span>` },
      { label: t('actions'), render: (k) => !k.revoked && html`<${ConfirmButton} label=${t('revoke')} testid="revoke-token"
        question=${t('confirm_revoke', { name: k.name })}
        onConfirm=${async () => { await attempt(() => del(`/api/tokens/${seg(k.id)}`), t('done')); tokens.reload(); }} />` },
    ]} />`}</${Loaded}>
    ${dialog && html`<${Modal} title=${t('create_token')} onClose=${close}>
      ${dialog === 'create'
        ? html`<${Loaded} load=${profiles}>${(p) => html`<${CreateToken} profiles=${p} onCreated=${setDialog} />`}</${Loaded}>`
        : html`<${SecretOnce} token=${dialog} /><div class="row end">
          <button class="primary" data-testid="token-done" onClick=${close}>${t('close')}</button></div>`}
    </${Modal}>`}
  </section>`;
}
