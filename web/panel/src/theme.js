// Light or dark, remembered; the system's preference first.
import { signal } from './state.js';

const THEME_KEY = 'idcs.theme';

export const theme = signal(localStorage.getItem(THEME_KEY)
  || (window.matchMedia?.('(prefers-color-scheme: dark)').matches ? 'dark' : 'light'));
document.documentElement.dataset.theme = theme.value;

export function toggleTheme() {
  theme.value = theme.value === 'dark' ? 'light' : 'dark';
  localStorage.setItem(THEME_KEY, theme.value);
  document.documentElement.dataset.theme = theme.value;
}

/** The value of a CSS colour variable of the current theme (canvas drawing cannot use var()). */
export const cssColor = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();
