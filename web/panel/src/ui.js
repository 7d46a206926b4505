// Small shared pieces: the html tag, notices, dialogs, form fields, tables, charts, task progress.
import { h } from 'preact';
import htm from 'htm';
import { useCallback, useEffect, useRef, useState } from 'preact/hooks';
import uPlot from 'uplot';
import { watchTask } from './api.js';
import { t } from './i18n.js';
import { signal, useSignal } from './state.js';
import { cssColor, theme } from './theme.js';

export const html = htm.bind(h);

// ---- notices: errors show the server's own message
const notices = signal([]);
let noticeId = 0;
export function notify(text, kind = 'info') {
  const id = ++noticeId;
  notices.value = [...notices.value, { id, text, kind }];
  setTimeout(() => { notices.value = notices.value.filter((n) => n.id !== id); }, kind === 'error' ? 8000 : 3500);
}
export const notifyError = (e) => notify(e?.message || String(e), 'error');

export function Notices() {
  const list = useSignal(notices);
  return html`<div class="notices" aria-live="polite">${list.map((n) => html`
    <div key=${n.id} class=${`notice ${n.kind}`} role=${n.kind === 'error' ? 'alert' : 'status'}>${n.text}</div>`)}</div>`;
}

/** Run an async action, reporting its error as a notice; returns its result or undefined. */
export async function attempt(fn, okText) {
  try {
    const result = await fn();
    if (okText) notify(okText, 'ok');
    return result;
  } catch (e) {
    notifyError(e);
    return undefined;
  }
}

/** Load data with ``fn`` (re-run when ``deps`` change); {data, error, loading, reload}. */
export function useLoad(fn, deps = []) {
  const [state, setState] = useState({ data: undefined, error: null, loading: true });
  const seq = useRef(0);
  const reload = useCallback(async () => {
    const mine = ++seq.current;
    setState((s) => ({ ...s, loading: true }));
    try {
      const data = await fn();
      if (mine === seq.current) setState({ data, error: null, loading: false });
    } catch (e) {
      if (mine === seq.current) setState((s) => ({ ...s, error: e, loading: false }));
    }
  }, deps);
  useEffect(() => { reload(); }, [reload]);
  return { ...state, reload };
}

/** Shows a loader's error (the server's message) or loading text, else renders ``body(data)``. */
export function Loaded({ load, children }) {
  if (load.error && load.data === undefined) return html`<p class="error" role="alert">${load.error.message}</p>`;
  if (load.data === undefined) return html`<p class="muted">${t('loading')}</p>`;
  return children(load.data);
}

export function Modal({ title, onClose, children }) {
  useEffect(() => {
    const key = (e) => { if (e.key === 'Escape') onClose(); };
    window.addEventListener('keydown', key);
    return () => window.removeEventListener('keydown', key);
  }, [onClose]);
  return html`<div class="modal-back" onClick=${(e) => e.target === e.currentTarget && onClose()}>
    <div class="modal" role="dialog" aria-modal="true" aria-label=${title}>
      <header><h2>${title}</h2><button class="icon" aria-label=${t('close')} onClick=${onClose}>×</button></header>
      ${children}
    </div></div>`;
}

/** A "are you sure" button: opens a dialog and runs ``onConfirm`` only after the second click. */
export function ConfirmButton({ label, question, onConfirm, kind = 'danger', testid }) {
  const [open, setOpen] = useState(false);
  const [busy, setBusy] = useState(false);
  return html`<button class=${kind} data-testid=${testid} onClick=${() => setOpen(true)}>${label}</button>
    ${open && html`<${Modal} title=${label} onClose=${() => setOpen(false)}>
      <p>${question}</p>
      <div class="row end">
        <button onClick=${() => setOpen(false)}>${t('cancel')}</button>
        <button class=${kind} disabled=${busy} data-testid="confirm" onClick=${async () => {
          setBusy(true);
          try { await onConfirm(); } finally { setBusy(false); setOpen(false); }
        }}>${t('confirm')}</button>
      </div></${Modal}>`}`;
}

/** A labelled input bound to ``form[name]``. */
export function Field({ form, setForm, name, label, type = 'text', required, options, placeholder, hint, min, max }) {
  const value = form[name] ?? '';
  const set = (v) => setForm((f) => ({ ...f, [name]: v }));
  let input;
  if (options) {
    input = html`<select name=${name} required=${required} value=${value} onChange=${(e) => set(e.target.value)}>
      ${options.map((o) => (typeof o === 'object'
        ? html`<option value=${o.value}>${o.label}</option>` : html`<option value=${o}>${o}</option>`))}
    </select>`;
  } else if (type === 'checkbox') {
    input = html`<input type="checkbox" name=${name} checked=${!!form[name]} onChange=${(e) => set(e.target.checked)} />`;
  } else {
    input = html`<input type=${type} name=${name} required=${required} value=${value} placeholder=${placeholder}
      min=${min} max=${max} autocomplete=${type === 'password' ? 'new-password' : 'off'}
      onInput=${(e) => set(e.target.value)} />`;
  }
  return html`<label class=${type === 'checkbox' ? 'field check' : 'field'}><span>${label}</span>${input}
    ${hint && html`<small class="muted">${hint}</small>`}</label>`;
}

/** A submit-once form: ``onSubmit`` gets the event's form data already in state. */
export function Form({ onSubmit, children, submit, testid }) {
  const [busy, setBusy] = useState(false);
  return html`<form data-testid=${testid} onSubmit=${async (e) => {
    e.preventDefault();
    if (busy) return;
    setBusy(true);
    try { await onSubmit(); } finally { setBusy(false); }
  }}>${children}<div class="row end"><button class="primary" type="submit" disabled=${busy}>${submit}</button></div></form>`;
}

export function Table({ columns, rows, empty, rowKey, testid }) {
  if (!rows || rows.length === 0) return html`<p class="muted">${empty || t('nothing')}</p>`;
  return html`<div class="table-wrap"><table data-testid=${testid}>
    <thead><tr>${columns.map((c) => html`<th>${c.label}</th>`)}</tr></thead>
    <tbody>${rows.map((r, i) => html`<tr key=${rowKey ? rowKey(r) : i}>
      ${columns.map((c) => html`<td data-label=${c.label}>${c.render ? c.render(r, i) : r[c.key] ?? ''}</td>`)}</tr>`)}
    </tbody></table></div>`;
}

export function StateBadge({ value }) {
  const v = value || 'unknown';
  return html`<span class=${`badge s-${v}`}>${t(v)}</span>`;
}

function timeRange(_u, min, max) {
  const end = max ?? Date.now() / 1000;
  return [Math.min(min ?? end, end - 300), end];
}

/** A line chart of percentages over time. series: [{label, values}], x: epoch seconds. */
export function Chart({ title, x, series, height = 180 }) {
  const box = useRef(null);
  const plot = useRef(null);
  const mode = useSignal(theme); // canvas colours are fixed when drawn: draw again for the other theme
  useEffect(() => {
    if (!box.current) return undefined;
    const colors = ['#2f7de1', '#e8793a', '#3aa864', '#b04ad6'];
    const opts = {
      width: Math.max(240, box.current.clientWidth), height,
      // a single sample would stretch the time axis over years: show at least the last five minutes
      scales: { x: { time: true, range: timeRange }, y: { range: [0, 100] } },
      axes: [{ stroke: cssColor('--muted'), grid: { stroke: cssColor('--line') }, ticks: { stroke: cssColor('--line') } },
        { stroke: cssColor('--muted'), grid: { stroke: cssColor('--line') }, ticks: { stroke: cssColor('--line') },
          values: (_u, ticks) => ticks.map((v) => `${v}%`) }],
      series: [{}, ...series.map((s, i) => ({ label: s.label, stroke: colors[i % colors.length], width: 2 }))],
    };
    plot.current = new uPlot(opts, [x, ...series.map((s) => s.values)], box.current);
    const resize = () => plot.current?.setSize({ width: Math.max(240, box.current.clientWidth), height });
    window.addEventListener('resize', resize);
    return () => { window.removeEventListener('resize', resize); plot.current?.destroy(); plot.current = null; };
  }, [series.length, series.map((s) => s.label).join(), mode]);
  useEffect(() => { plot.current?.setData([x, ...series.map((s) => s.values)]); }, [x, series]);
  return html`<figure class="chart"><figcaption>${title}</figcaption>
    ${x.length === 0 && html`<p class="muted">${t('history_empty')}</p>`}<div ref=${box}></div></figure>`;
}

/** Live progress of a task (polled); ``onEnd(task)`` once it ends. */
export function TaskProgress({ taskId, onEnd }) {
  const [task, setTask] = useState(null);
  useEffect(() => {
    let alive = true;
    watchTask(taskId, (tk) => alive && setTask(tk)).then((tk) => alive && onEnd?.(tk)).catch(notifyError);
    return () => { alive = false; };
  }, [taskId]);
  const pct = task?.progress ?? 0;
  return html`<div class="task" data-testid="task-progress" data-task=${taskId} data-state=${task?.state || 'pending'}>
    <div class="row"><strong>${t('task')} ${task?.kind || ''}</strong><${StateBadge} value=${task?.state || 'pending'} />
    <span class="muted">${task?.message || ''}</span></div>
    <progress max="100" value=${pct}>${pct}%</progress> <span>${pct}%</span></div>`;
}
