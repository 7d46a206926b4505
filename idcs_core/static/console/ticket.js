// The one-time ticket travels in the page's fragment (never sent to the server, so never
// logged); it is removed from the address bar at once and handed to the websocket as a
// subprotocol, where the server redeems it once.
export function takeTicket() {
  const ticket = decodeURIComponent(location.hash.slice(1));
  history.replaceState(null, '', location.pathname);
  return ticket;
}

export function socketUrl(path) {
  const url = new URL(path, location.href);
  url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  url.hash = '';
  return url;
}

export function ticketProtocols(ticket) {
  return ['binary', 'idcs.ticket.' + ticket];
}

export function showClosed(bar, code, reason) {
  bar.className = 'closed';
  bar.textContent = 'closed' + (reason ? ': ' + reason : code === 1006 ? ': connection lost' : '')
    + ' (a console link opens once: ask the panel for a new one)';
}
