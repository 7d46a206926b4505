// A tiny observable value and the hook that re-renders a component when it changes.
import { useEffect, useState } from 'preact/hooks';

export function signal(initial) {
  const subscribers = new Set();
  let current = initial;
  return {
    get value() { return current; },
    set value(next) {
      if (next === current) return;
      current = next;
      for (const fn of subscribers) fn(next);
    },
    subscribe(fn) { subscribers.add(fn); return () => subscribers.delete(fn); },
  };
}

export function useSignal(sig) {
  const [, setValue] = useState(sig.value);
  useEffect(() => sig.subscribe((v) => setValue(() => v)), [sig]);
  return sig.value;
}
