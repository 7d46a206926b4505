"""A real VNC server for console tests: TigerVNC's ``Xvnc`` (Debian package
``tigervnc-standalone-server``) with a VNC password, and a small X client of our own
that paints the whole screen one colour and records the keys it receives.

    with xvnc_server() as vnc:
        ConsoleEndpoint(ConsoleKind.VNC, "127.0.0.1", vnc.port, password=vnc.password)
        ... vnc.keys  # X keysyms typed into the screen, in order
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from idcs_core.services.rfb import vnc_auth_response
from idcs_core.testing.server import free_port

SCREEN = (320, 240)
COLOUR = (0xFF, 0x88, 0x00)  # what the X client paints: orange
_OBFUSCATION_KEY = bytes([23, 82, 107, 6, 35, 78, 88, 7])  # vncpasswd's fixed DES key


def password_file(password: str) -> bytes:
    """The content ``vncpasswd`` writes: the password's first 8 bytes, DES-encrypted with a
    fixed key (the same bit order as VNC authentication's)."""
    return vnc_auth_response(_OBFUSCATION_KEY.decode("latin-1"), password.encode()[:8].ljust(8, b"\0"))


@dataclass
class XvncServer:
    display: int
    port: int
    password: str
    process: subprocess.Popen[bytes]
    keys: list[int] = field(default_factory=list)
    log_path: Path | None = None

    def log_tail(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])


def _free_display() -> int:
    for number in range(40 + secrets.randbelow(400), 1000):
        if not Path(f"/tmp/.X{number}-lock").exists() and not Path(f"/tmp/.X11-unix/X{number}").exists():
            return number
    raise RuntimeError("no free X display number")


@contextlib.contextmanager
def xvnc_server(password: str | None = None) -> Iterator[XvncServer]:
    """Start Xvnc (VNC authentication with ``password``) and the key-recording X client;
    stop both by PID afterwards. Fails loudly when Xvnc is not installed."""
    xvnc = shutil.which("Xvnc")
    if xvnc is None:
        raise RuntimeError("Xvnc not found: apt-get install tigervnc-standalone-server")
    password = password or secrets.token_hex(4)
    folder = Path(tempfile.mkdtemp(prefix="idcs-xvnc-"))
    passwd = folder / "passwd"
    passwd.write_bytes(password_file(password))
    passwd.chmod(0o600)
    display, port = _free_display(), free_port()
    log_path = folder / "xvnc.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [xvnc, f":{display}", "-geometry", f"{SCREEN[0]}x{SCREEN[1]}", "-depth", "24", "-rfbport", str(port),
             "-localhost", "-SecurityTypes", "VncAuth", "-PasswordFile", str(passwd), "-nolisten", "tcp", "-ac",
             # every connection counts as an unauthenticated attempt until it logs in (port probes, slow
             # handshakes on a loaded machine): without this, the sixth locks 127.0.0.1 out for 10 s
             "-UseBlacklist=0", "-desktop", "idcs-test-screen"], stdout=log, stderr=subprocess.STDOUT)
    server = XvncServer(display, port, password, process, log_path=log_path)
    stop = threading.Event()
    try:
        _wait_port(port, process, server)
        ready = threading.Event()
        client = threading.Thread(target=_key_recorder, args=(display, server.keys, ready, stop),
                                  name=f"xvnc-keys-{display}", daemon=True)
        client.start()
        if not ready.wait(15):
            raise RuntimeError(f"the X client on :{display} did not start\n{server.log_tail()}")
        yield server
    finally:
        stop.set()
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(folder, ignore_errors=True)


def _wait_port(port: int, process: subprocess.Popen[bytes], server: XvncServer, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Xvnc exited with {process.returncode}\n{server.log_tail()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            if sock.recv(12).startswith(b"RFB "):
                return
        time.sleep(0.05)
    raise RuntimeError(f"Xvnc not listening on {port} after {timeout}s\n{server.log_tail()}")


def _key_recorder(display_number: int, keys: list[int], ready: threading.Event, stop: threading.Event) -> None:
    """One full-screen window of ``COLOUR`` holding the input focus; appends each pressed keysym."""
    from Xlib import X
    from Xlib.display import Display

    display = Display(f":{display_number}")
    try:
        screen = display.screen()
        pixel = (COLOUR[0] << 16) | (COLOUR[1] << 8) | COLOUR[2]
        window = screen.root.create_window(0, 0, SCREEN[0], SCREEN[1], 0, screen.root_depth,
                                           background_pixel=pixel, event_mask=X.KeyPressMask | X.ExposureMask)
        window.map()
        display.sync()
        window.set_input_focus(X.RevertToParent, X.CurrentTime)
        display.sync()
        ready.set()
        while not stop.is_set():
            if not display.pending_events():
                time.sleep(0.02)
                continue
            event = display.next_event()
            if event.type == X.KeyPress:
                keys.append(display.keycode_to_keysym(event.detail, 0))
    except Exception:
        if not ready.is_set():
            raise
    finally:
        with contextlib.suppress(Exception):
            display.close()
