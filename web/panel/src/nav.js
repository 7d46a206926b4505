// The route is the part of the address's fragment after "#/".
import { signal } from './state.js';

const current = () => location.hash.replace(/^#\/?/, '');
export const route = signal(current());
window.addEventListener('hashchange', () => { route.value = current(); });
export function go(path) { location.hash = `#/${path}`; }
export const vmHref = (hs, vm) => `#/vm/${encodeURIComponent(hs)}/${encodeURIComponent(vm)}`;
