import { Terminal } from '../vendor/xterm/xterm.mjs';
import { FitAddon } from '../vendor/xterm/addon-fit.mjs';
import { takeTicket, socketUrl, ticketProtocols, showClosed } from './ticket.js';

const bar = document.getElementById('bar');
const ticket = takeTicket();
const term = new Terminal({ cursorBlink: true, scrollback: 2000, fontSize: 14 });
const fit = new FitAddon();
term.loadAddon(fit);
term.open(document.getElementById('screen'));
fit.fit();

const url = socketUrl('terminal/ws');
url.searchParams.set('cols', term.cols);
url.searchParams.set('rows', term.rows);
const ws = new WebSocket(url, ticketProtocols(ticket));
ws.binaryType = 'arraybuffer';
const encoder = new TextEncoder();

ws.onopen = () => { bar.textContent = 'connected'; term.focus(); };
ws.onclose = (e) => showClosed(bar, e.code, e.reason);
ws.onmessage = (e) => {
  if (typeof e.data === 'string') {  // the server's answer to a malformed control frame
    bar.textContent = JSON.parse(e.data).msg || e.data;
  } else {
    term.write(new Uint8Array(e.data));
  }
};
term.onData((data) => { if (ws.readyState === WebSocket.OPEN) ws.send(encoder.encode(data)); });
term.onBinary((data) => {
  if (ws.readyState === WebSocket.OPEN) ws.send(Uint8Array.from(data, (c) => c.charCodeAt(0) & 255));
});
term.onResize(({ cols, rows }) => {
  if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: 'resize', cols, rows }));
});
window.addEventListener('resize', () => fit.fit());
