"""The VNC console: QEMU's VNC server on the host, a new password for each open."""

from __future__ import annotations

import datetime as dt
import secrets
import time
import xml.etree.ElementTree as ET

import libvirt

from idcs_core.errors import VMOperationFailed
from idcs_core.types import ConsoleEndpoint, ConsoleKind
from idcs_libvirt.host import Settings

PASSWORD_TTL = 300  # seconds a console password lets a new connection in


def vm_console(settings: Settings, dom: libvirt.virDomain) -> ConsoleEndpoint:
    """Set a fresh VNC password (valid ``PASSWORD_TTL`` s, open sessions kept) and say where to connect."""
    if not dom.isActive():
        raise VMOperationFailed("the VM is not running: it has no console now")
    graphics = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE)).find("devices/graphics[@type='vnc']")
    if graphics is None or not graphics.get("port") or graphics.get("port") == "-1":
        raise VMOperationFailed("the VM has no VNC display")
    password = secrets.token_urlsafe(6)[:8]  # VNC authentication uses 8 characters
    expires = time.time() + PASSWORD_TTL
    graphics.set("passwd", password)
    graphics.set("passwdValidTo", dt.datetime.fromtimestamp(expires, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    graphics.set("connected", "keep")
    try:
        dom.updateDeviceFlags(ET.tostring(graphics, encoding="unicode"), libvirt.VIR_DOMAIN_AFFECT_LIVE)
    except libvirt.libvirtError as exc:
        if "set_password" in (exc.get_error_message() or ""):
            raise VMOperationFailed("the VM's VNC display was started without a password, so QEMU cannot set "
                                    "one: give its <graphics> a passwd attribute and restart it") from None
        raise
    return ConsoleEndpoint(kind=ConsoleKind.VNC, address=settings.console_address, port=int(graphics.get("port", "0")),
                           password=password, expires_at=expires)
