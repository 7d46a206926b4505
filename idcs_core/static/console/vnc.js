import RFB from '../vendor/novnc/core/rfb.js';
import { takeTicket, socketUrl, ticketProtocols, showClosed } from './ticket.js';

const bar = document.getElementById('bar');
const rfb = new RFB(document.getElementById('screen'), socketUrl('vnc/ws').href,
                    { wsProtocols: ticketProtocols(takeTicket()) });
rfb.scaleViewport = true;
rfb.addEventListener('connect', () => { bar.textContent = 'connected'; rfb.focus(); });
rfb.addEventListener('disconnect', (e) => showClosed(bar, e.detail.clean ? 1000 : 1006, ''));
rfb.addEventListener('desktopname', (e) => { document.title = e.detail.name + ' - OpenIDCS console'; });
