// The panel's only way to the server: the public REST API with a bearer token.
// The session token lives in sessionStorage (per tab, gone when the tab closes), never in a URL.

const TOKEN_KEY = 'idcs.token';
const SCOPE_KEY = 'idcs.scope';

export class ApiError extends Error {
  constructor(status, code, msg, data) {
    super(msg || `HTTP ${status}`);
    this.status = status;
    this.code = code;
    this.data = data;
  }
}

export const session = {
  get token() { return sessionStorage.getItem(TOKEN_KEY); },
  /** A temp-login session limited to one VM: {hs, vm}; null for a normal login. */
  get scope() {
    try { return JSON.parse(sessionStorage.getItem(SCOPE_KEY) || 'null'); } catch { return null; }
  },
  save(token, scope = null) {
    sessionStorage.setItem(TOKEN_KEY, token);
    if (scope) sessionStorage.setItem(SCOPE_KEY, JSON.stringify(scope));
    else sessionStorage.removeItem(SCOPE_KEY);
  },
  clear() {
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(SCOPE_KEY);
  },
};

let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) { onUnauthorized = fn; }

/** Call the API; resolves to the envelope's data, rejects with ApiError carrying the server's msg. */
export async function api(method, path, body, query) {
  let url = path;
  if (query) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== '') q.set(k, v);
    const s = q.toString();
    if (s) url += `?${s}`;
  }
  const headers = { Accept: 'application/json' };
  const token = session.token;
  if (token) headers.Authorization = `Bearer ${token}`;
  const init = { method, headers, cache: 'no-store', credentials: 'omit' };
  if (body !== undefined && method !== 'GET') {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(url, init);
  } catch (e) {
    throw new ApiError(0, 0, `network: ${e.message}`);
  }
  let env = null;
  try { env = await resp.json(); } catch { /* not JSON */ }
  if (!env || typeof env !== 'object' || !('code' in env)) {
    throw new ApiError(resp.status, resp.status, `HTTP ${resp.status}`);
  }
  if (resp.status !== 200 || env.code !== 200) {
    if (resp.status === 401 && token) onUnauthorized(env);
    throw new ApiError(resp.status, env.code, env.msg, env.data);
  }
  return env.data;
}

export const get = (path, query) => api('GET', path, undefined, query);
export const post = (path, body = {}, query) => api('POST', path, body, query);
export const put = (path, body = {}, query) => api('PUT', path, body, query);
export const del = (path, body, query) => api('DELETE', path, body, query);

/** One path segment, escaped. */
export const seg = (s) => encodeURIComponent(s);
export const vmPath = (what, hs, vm) => `/api/client/${what}/${seg(hs)}/${seg(vm)}`;

/** Poll a task until it ends; calls onUpdate with each state seen. Resolves to the last task. */
export async function watchTask(taskId, onUpdate, { interval = 700, timeout = 1800e3 } = {}) {
  const end = Date.now() + timeout;
  for (;;) {
    const task = await get(`/api/tasks/${seg(taskId)}`);
    onUpdate?.(task);
    if (task.state === 'success' || task.state === 'failed') return task;
    if (Date.now() > end) return task;
    await new Promise((r) => setTimeout(r, interval));
  }
}
