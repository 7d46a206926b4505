"""FakeCloud: a tiny in-process stand-in for a hypervisor, so the example engine has a back end.

A real engine talks to Docker, LXD or vSphere through their SDK; the example
engine talks to this module instead. It keeps what a hypervisor keeps (VMs with
files, disks, backups, port forwards) in memory, one ``FakeCloud`` per address,
and it does a few things for real so the conformance kit can prove them:

- a port forward really listens on ``127.0.0.1:<host_port>`` and answers HTTP
  with the VM's web page while the VM runs and the forward targets port 80;
- the host's reverse proxy really listens on a loopback port and serves each routed domain
  from its VM's web page;
- a terminal really runs a (very small) shell: ``echo``, ``cat``, ``hostname``, ``exit``;
- the graphical console is a real (tiny) VNC server on a loopback port, one per VM,
  that shows a grey screen named after the VM and records the keys it receives.

It raises its own errors (``Unreachable``, ``LoginFailed``, ``NoSuchVM``...), the way
an SDK does: mapping them to OpenIDCS business errors is the engine's job.
Only tests and the example use it; nothing here is part of OpenIDCS.
"""

from __future__ import annotations

import copy
import hashlib
import queue
import secrets
import shlex
import socket
import socketserver
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

IMAGES = {"fakeos-1.0": "FakeOS 1.0", "fakeos-rescue.iso": "FakeOS rescue CD"}
HTTP_PORT = 80  # every FakeOS VM serves its web page on this port...
HTTP_BODY = "Hello from FakeOS"  # ...with this text in it
WORK_SECONDS = 0.2  # how long create / backup / restore take, as on a real (very fast) host


class CloudError(Exception):
    """Base of FakeCloud's own errors."""


class Unreachable(CloudError):
    pass


class LoginFailed(CloudError):
    pass


class NoSuchVM(CloudError):
    pass


class AlreadyExists(CloudError):
    pass


class PortTaken(CloudError):
    pass


class InvalidState(CloudError):
    pass


class UnknownImage(CloudError):
    pass


@dataclass
class FakeDisk:
    name: str
    size_gb: int
    files: dict[str, str] = field(default_factory=dict)
    attached: bool = False


@dataclass
class FakeVM:
    name: str
    image: str
    cpu: int
    ram_mb: int
    hdd_gb: int
    state: str = "stopped"  # running / stopped / paused
    files: dict[str, str] = field(default_factory=dict)
    disks: dict[str, FakeDisk] = field(default_factory=dict)
    iso: str | None = None
    ips: list[str] = field(default_factory=list)
    console_keys: list[int] = field(default_factory=list)  # X keysyms pressed on its VNC console
    rx_bytes: int = 0  # bytes its forwards received for it since it started
    tx_bytes: int = 0  # bytes its forwards answered with
    boots: int = 0  # how many times it started: its counters begin again at each start
    caps: tuple[int, int] = (0, 0)  # (up, down) Mbit/s


@dataclass
class Forward:
    host_port: int
    vm_name: str
    vm_port: int
    protocol: str
    server: ThreadingHTTPServer | None = None  # tcp forwards listen for real; udp ones are recorded


class FakeCloud:
    """One fake host. Every method is thread-safe (engines call from worker threads)."""

    def __init__(self, addr: str, user: str, password: str) -> None:
        self.addr, self.user, self.password = addr, user, password
        self.up = True
        self.lock = threading.RLock()
        self.vms: dict[str, FakeVM] = {}
        self.backups: dict[tuple[str, str], tuple[str, FakeVM]] = {}  # (vm, name) -> (description, copy)
        self.forwards: dict[tuple[int, str], Forward] = {}
        self._consoles: dict[str, socketserver.ThreadingTCPServer] = {}  # VM name -> its VNC server
        self._proxy: ThreadingHTTPServer | None = None  # the host's reverse proxy, once asked for
        self._next_ip = 10

    # ------------------------------------------------------------------ VMs
    def vm(self, name: str) -> FakeVM:
        with self.lock:
            if name not in self.vms:
                raise NoSuchVM(f"no VM named {name}")
            return self.vms[name]

    def create_vm(self, name: str, image: str, cpu: int, ram_mb: int, hdd_gb: int, start: bool = True) -> FakeVM:
        if image not in IMAGES:
            raise UnknownImage(f"no image {image}")
        time.sleep(WORK_SECONDS)
        with self.lock:
            if name in self.vms:
                raise AlreadyExists(f"a VM named {name} exists")
            self._next_ip += 1
            vm = FakeVM(name, image, cpu, ram_mb, hdd_gb, files={"/etc/hostname": name,
                                                                  "/etc/shadow": "root:*:19000:0:99999:7:::\n"},
                        ips=[f"10.0.0.{self._next_ip}"])
            vm.state = "running" if start else "stopped"
            self.vms[name] = vm
            return vm

    def delete_vm(self, name: str) -> None:
        with self.lock:
            for key in [k for k, f in self.forwards.items() if f.vm_name == name]:
                self.unforward(*key)
            self.vms.pop(name, None)
            console = self._consoles.pop(name, None)
        if console is not None:
            console.shutdown()
            console.server_close()

    def power(self, name: str, action: str) -> FakeVM:
        """``action``: start, stop, reset, pause or resume."""
        with self.lock:
            vm = self.vm(name)
            if action in ("pause", "resume") and vm.state == "stopped":
                raise InvalidState(f"{name} is stopped: cannot {action}")
            if action == "reset" or (action == "start" and vm.state == "stopped"):
                vm.rx_bytes, vm.tx_bytes, vm.boots = 0, 0, vm.boots + 1
            vm.state = {"start": "running", "stop": "stopped", "reset": "running", "pause": "paused",
                        "resume": "running"}[action]
            return vm

    def traffic(self, names: list[str]) -> dict[str, tuple[int, int, int]]:
        """(rx, tx, boots) of each running VM among ``names``."""
        with self.lock:
            return {n: (vm.rx_bytes, vm.tx_bytes, vm.boots) for n in names
                    if (vm := self.vms.get(n)) is not None and vm.state == "running"}

    def set_caps(self, name: str, up_mbit: int, down_mbit: int) -> None:
        with self.lock:
            self.vm(name).caps = (up_mbit, down_mbit)

    # ------------------------------------------------------------------ guest access
    def write_file(self, name: str, path: str, text: str) -> None:
        with self.lock:
            vm = self.vm(name)
            disk, rest = self._on_disk(vm, path)
            (disk.files if disk else vm.files)[rest] = text

    def read_file(self, name: str, path: str) -> str | None:
        with self.lock:
            vm = self.vm(name)
            disk, rest = self._on_disk(vm, path)
            return (disk.files if disk else vm.files).get(rest)

    @staticmethod
    def _on_disk(vm: FakeVM, path: str) -> tuple[FakeDisk | None, str]:
        """Attached disk ``d`` shows at ``/mnt/d`` inside the guest."""
        for disk in vm.disks.values():
            prefix = f"/mnt/{disk.name}/"
            if disk.attached and path.startswith(prefix):
                return disk, path.removeprefix(prefix)
        return None, path

    def guest_resources(self, name: str) -> tuple[int, int]:
        """What the guest itself sees: its CPU count and memory in MB (``nproc``, ``free -m``)."""
        with self.lock:
            vm = self.vm(name)
            return vm.cpu, vm.ram_mb

    def set_password(self, name: str, user: str, password: str) -> None:
        salt = secrets.token_hex(4)
        digest = hashlib.sha256((salt + password).encode()).hexdigest()
        with self.lock:
            vm = self.vm(name)
            lines = [ln for ln in vm.files.get("/etc/shadow", "").splitlines() if not ln.startswith(f"{user}:")]
            vm.files["/etc/shadow"] = "\n".join([f"{user}:$5${salt}${digest}:19000:0:99999:7:::", *lines]) + "\n"

    # ------------------------------------------------------------------ network
    def add_ip(self, name: str) -> str:
        with self.lock:
            self._next_ip += 1
            address = f"10.0.1.{self._next_ip}"
            self.vm(name).ips.append(address)
            return address

    def remove_ip(self, name: str, address: str) -> None:
        with self.lock:
            vm = self.vm(name)
            vm.ips = [ip for ip in vm.ips if ip != address]

    def forward(self, host_port: int, name: str, vm_port: int, protocol: str) -> Forward:
        with self.lock:
            self.vm(name)
            existing = self.forwards.get((host_port, protocol))
            if existing is not None:
                if (existing.vm_name, existing.vm_port) == (name, vm_port):
                    return existing  # already there: nothing to do
                raise PortTaken(f"port {host_port}/{protocol} is forwarded to {existing.vm_name}")
            fwd = Forward(host_port, name, vm_port, protocol)
            if protocol == "tcp":
                try:
                    fwd.server = _serve(("127.0.0.1", host_port), _forward_handler(self, fwd))
                except OSError as exc:
                    raise PortTaken(f"port {host_port} is in use on the host: {exc}") from exc
            self.forwards[(host_port, protocol)] = fwd
            return fwd

    def unforward(self, host_port: int, protocol: str) -> None:
        with self.lock:
            fwd = self.forwards.pop((host_port, protocol), None)
        if fwd is not None and fwd.server is not None:
            fwd.server.shutdown()
            fwd.server.server_close()

    # ------------------------------------------------------------------ storage
    def attach_disk(self, name: str, disk: str, size_gb: int) -> None:
        with self.lock:
            self.vm(name).disks.setdefault(disk, FakeDisk(disk, size_gb)).attached = True

    def detach_disk(self, name: str, disk: str) -> None:
        with self.lock:
            found = self.vm(name).disks.get(disk)
            if found is not None:
                found.attached = False

    def delete_disk(self, name: str, disk: str) -> None:
        with self.lock:
            self.vm(name).disks.pop(disk, None)

    def insert_iso(self, name: str, iso: str | None) -> None:
        if iso is not None and iso not in IMAGES:
            raise UnknownImage(f"no ISO {iso}")
        with self.lock:
            self.vm(name).iso = iso

    # ------------------------------------------------------------------ backups
    def backup(self, name: str, backup: str, description: str) -> int:
        """Keep a deep copy of the VM; return its 'size' in bytes."""
        time.sleep(WORK_SECONDS)
        with self.lock:
            snapshot = copy.deepcopy(self.vm(name))
            self.backups[(name, backup)] = (description, snapshot)
            return sum(len(t) for t in snapshot.files.values())

    def restore(self, name: str, backup: str) -> FakeVM:
        time.sleep(WORK_SECONDS)
        with self.lock:
            vm = self.vm(name)
            if (name, backup) not in self.backups:
                raise NoSuchVM(f"no backup {backup} of {name}")
            saved = copy.deepcopy(self.backups[(name, backup)][1])
            vm.files, vm.disks, vm.cpu, vm.ram_mb, vm.hdd_gb = saved.files, saved.disks, saved.cpu, saved.ram_mb, \
                saved.hdd_gb
            return vm

    def delete_backup(self, name: str, backup: str) -> None:
        with self.lock:
            self.backups.pop((name, backup), None)

    # ------------------------------------------------------------------ consoles
    def open_terminal(self, name: str) -> FakeTerminal:
        if self.vm(name).state != "running":
            raise InvalidState(f"{name} is not running")
        return FakeTerminal(self, name)

    def console_port(self, name: str) -> int:
        """The loopback port of the VM's VNC console (started on first use)."""
        self.vm(name)
        with self.lock:
            if name not in self._consoles:
                server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _vnc_handler(self, name))
                server.daemon_threads = True
                threading.Thread(target=server.serve_forever, name=f"fakecloud-vnc-{name}", daemon=True).start()
                self._consoles[name] = server
            return self._consoles[name].server_address[1]

    # ------------------------------------------------------------------ the host's reverse proxy
    def proxy_address(self) -> tuple[str, int]:
        """Where the host's reverse proxy serves HTTP (started on first use): a request for a
        domain routed to a running VM's port 80 (``/etc/fakecloud/proxy/<domain>`` in the VM, as
        the engine's ``proxy_add`` writes it) gets the VM's web page; any other gets 404."""
        with self.lock:
            if self._proxy is None:
                self._proxy = _serve(("127.0.0.1", 0), _proxy_handler(self))
            return "127.0.0.1", self._proxy.server_address[1]

    def proxied(self, domain: str) -> FakeVM | None:
        """The running VM whose port 80 the reverse proxy serves ``domain`` from, if any."""
        with self.lock:
            for vm in self.vms.values():
                if vm.files.get(f"/etc/fakecloud/proxy/{domain}") == str(HTTP_PORT) and vm.state == "running":
                    return vm
            return None

    def shutdown(self) -> None:
        """Stop every listener (forwards, consoles, the reverse proxy)."""
        for key in list(self.forwards):
            self.unforward(*key)
        with self.lock:
            consoles, self._consoles = list(self._consoles.values()), {}
            proxy, self._proxy = self._proxy, None
        if proxy is not None:
            proxy.shutdown()
            proxy.server_close()
        for server in consoles:
            server.shutdown()
            server.server_close()


class FakeTerminal:
    """A shell of four commands behind the ``TerminalChannel`` interface (read/write/resize/close).

    Like a real terminal it echoes what is typed and runs a line on Enter (``\\r`` or ``\\n``).
    """

    def __init__(self, cloud: FakeCloud, vm_name: str) -> None:
        self.cloud, self.vm_name = cloud, vm_name
        self.output: queue.Queue[bytes] = queue.Queue()
        self.line = ""
        self.size = (80, 24)
        self.output.put(b"# ")

    def read(self) -> bytes:
        return self.output.get()  # b"" once closed

    def write(self, data: bytes) -> None:
        for ch in data.decode(errors="replace"):
            if ch in "\r\n":
                self.output.put(b"\r\n")
                self._run(self.line)
                self.line = ""
            elif ch == "\x7f":
                self.line = self.line[:-1]
            else:
                self.line += ch
                self.output.put(ch.encode())

    def _run(self, line: str) -> None:
        try:
            words = shlex.split(line)
        except ValueError as exc:
            words, reply = [], f"sh: {exc}"
        else:
            reply = ""
        if words and words[0] == "exit":
            self.close()
            return
        if words and words[0] == "echo":
            reply = " ".join(words[1:])
        elif words and words[0] == "cat":
            reply = "\n".join(self.cloud.read_file(self.vm_name, p) or f"cat: {p}: No such file" for p in words[1:])
        elif words and words[0] == "hostname":
            reply = self.vm_name
        elif words:
            reply = f"sh: {words[0]}: not found"
        self.output.put((reply + "\r\n" if reply else "").encode() + b"# ")

    def resize(self, cols: int, rows: int) -> None:
        self.size = (cols, rows)

    def close(self) -> None:
        self.output.put(b"")


# ---------------------------------------------------------------------- tiny web servers


def _serve(address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(address, handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name=f"fakecloud-{server.server_address[1]}", daemon=True).start()
    return server


class _Quiet(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # no request log on stderr
        pass

    def reply(self, status: int, text: str, ctype: str = "text/plain") -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", f"{ctype}; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _forward_handler(cloud: FakeCloud, fwd: Forward) -> type[BaseHTTPRequestHandler]:
    class ForwardHandler(_Quiet):
        def do_GET(self) -> None:
            vm = cloud.vms.get(fwd.vm_name)
            if vm is None or vm.state != "running" or fwd.vm_port != HTTP_PORT:
                self.reply(502, f"nothing answers on {fwd.vm_name}:{fwd.vm_port}")
            else:
                body = f"{HTTP_BODY} ({vm.name})\n"
                with cloud.lock:
                    vm.rx_bytes += len(self.requestline) + 2 + len(str(self.headers))
                    vm.tx_bytes += len(body.encode())
                self.reply(200, body)

    return ForwardHandler


def _proxy_handler(cloud: FakeCloud) -> type[BaseHTTPRequestHandler]:
    class ProxyHandler(_Quiet):
        def do_GET(self) -> None:
            domain = (self.headers.get("Host") or "").split(":")[0]
            vm = cloud.proxied(domain)
            if vm is None:
                self.reply(404, f"no route for {domain}")
            else:
                self.reply(200, f"{HTTP_BODY} ({vm.name})\n")

    return ProxyHandler


VNC_SIZE = (64, 48)  # the fake screen, filled with grey


def _vnc_handler(cloud: FakeCloud, name: str) -> type[socketserver.BaseRequestHandler]:
    """RFB 3.8 with security type None: answers every update request with the whole (grey)
    screen and records key presses on the VM. Enough for noVNC and the conformance kit."""

    class VNCHandler(socketserver.BaseRequestHandler):
        def read(self, n: int) -> bytes:
            data = b""
            while len(data) < n:
                chunk = self.request.recv(n - len(data))
                if not chunk:
                    raise ConnectionError("client left")
                data += chunk
            return data

        def handle(self) -> None:
            sock: socket.socket = self.request
            width, height = VNC_SIZE
            title = f"FakeCloud console of {name}".encode()
            try:
                sock.sendall(b"RFB 003.008\n")
                self.read(12)
                sock.sendall(bytes([1, 1]))  # one security type: None
                self.read(1)
                sock.sendall(struct.pack(">I", 0))
                self.read(1)  # ClientInit
                pixel_format = struct.pack(">BBBBHHHBBB3x", 32, 24, 0, 1, 255, 255, 255, 16, 8, 0)
                sock.sendall(struct.pack(">HH", width, height) + pixel_format + struct.pack(">I", len(title)) + title)
                while True:
                    kind = self.read(1)[0]
                    if kind == 0:  # SetPixelFormat: grey looks the same in every 32-bit format
                        self.read(19)
                    elif kind == 2:  # SetEncodings
                        (count,) = struct.unpack(">xH", self.read(3))
                        self.read(4 * count)
                    elif kind == 3:  # FramebufferUpdateRequest: the whole screen, raw
                        self.read(9)
                        sock.sendall(struct.pack(">xxH", 1) + struct.pack(">HHHHi", 0, 0, width, height, 0)
                                     + b"\x80\x80\x80\x80" * (width * height))
                    elif kind == 4:  # KeyEvent
                        down, key = struct.unpack(">B2xI", self.read(7))
                        if down:
                            cloud.vm(name).console_keys.append(key)
                    elif kind == 5:  # PointerEvent
                        self.read(5)
                    elif kind == 6:  # ClientCutText
                        (length,) = struct.unpack(">3xI", self.read(7))
                        self.read(length)
                    else:
                        return
            except (ConnectionError, OSError, NoSuchVM):
                return

    return VNCHandler


# ---------------------------------------------------------------------- the fake 'network'

_CLOUDS: dict[str, FakeCloud] = {}
_CLOUDS_LOCK = threading.Lock()


def start(addr: str, user: str = "admin", password: str = "secret") -> FakeCloud:
    """Bring up a fake host at ``addr`` (tests call this; a real host simply exists)."""
    with _CLOUDS_LOCK:
        cloud = _CLOUDS.setdefault(addr, FakeCloud(addr, user, password))
        cloud.up = True
        return cloud


def stop(addr: str) -> None:
    """Remove the fake host at ``addr`` and everything on it."""
    with _CLOUDS_LOCK:
        cloud = _CLOUDS.pop(addr, None)
    if cloud is not None:
        cloud.shutdown()


def connect(addr: str, user: str, password: str) -> FakeCloud:
    """What an SDK's login does: reach the host, check the credentials."""
    cloud = _CLOUDS.get(addr)
    if cloud is None or not cloud.up:
        raise Unreachable(f"connection refused by {addr}")
    if (user, password) != (cloud.user, cloud.password):
        raise LoginFailed(f"login to {addr} as {user} failed")
    return cloud


def power_switch(addr: str, user: str, password: str, action: str) -> None:
    """The host's out-of-band power control: start, stop or restart it."""
    cloud = _CLOUDS.get(addr)
    if cloud is None:
        raise Unreachable(f"no power controller answers for {addr}")
    if (user, password) != (cloud.user, cloud.password):
        raise LoginFailed(f"power controller login to {addr} as {user} failed")
    with cloud.lock:
        if action == "stop":
            for vm in cloud.vms.values():
                vm.state = "stopped"
        cloud.up = action != "stop"  # a restart comes back at once, with what ran running again
