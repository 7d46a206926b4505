"""The machinery under the conformance kit (``idcs_core.testing.kit``).

``Kit`` is one idcs server (``LiveServer``, SQLite in a temporary folder) with one
host of the engine under test, added through the API. It offers what the cases
share: an admin API client, VMs made and cleaned up through the API, a recorder of
the engine hooks the server called, and probes that prove things for real (an
HTTP request through a forwarded port, a shell command through the web terminal).
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

import httpx
import pytest

from idcs_core import errors, hookspecs
from idcs_core.plugins import Engine, PluginRegistry, load_plugins
from idcs_core.testing.server import ApiClient, ApiError, LiveServer, free_port

if TYPE_CHECKING:
    from pydantic import BaseModel

    from idcs_core.api.routing import Endpoint
    from idcs_core.testing.kit import EngineUnderTest

ENGINE_HOOKS = frozenset(n for n in dir(hookspecs.EngineSpec) if not n.startswith("_"))
EVENT_HOOKS = frozenset(n for n in dir(hookspecs.EventSpec) if not n.startswith("_"))
# Hooks the server calls before any case can watch (when the engine is registered).
LOAD_TIME_HOOKS = frozenset({"engine_describe"})
FINAL_STATES = ("running", "stopped")


def http_status_of(code: int) -> int:
    """The HTTP status that goes with an envelope code (API.md; errors.BUSINESS_CODES)."""
    return errors.BUSINESS_CODES[code][0] if code in errors.BUSINESS_CODES else code


def encode_segment(value: str) -> str:
    """Percent-encode a path segment completely, dots included, so no client or proxy
    normalises ``..`` away before the server sees it."""
    return quote(value, safe="").replace(".", "%2E")


class HookRecorder:
    """Every hook call the server makes on one engine, in order (pluggy call monitoring)."""

    def __init__(self, engine: Engine) -> None:
        self.calls: list[str] = []
        self._lock = threading.Lock()
        self._undo = engine.pm.add_hookcall_monitoring(self._before, self._after)

    def _before(self, hook_name: str, _impls: Any, _kwargs: Any) -> None:
        with self._lock:
            self.calls.append(hook_name)

    def _after(self, *_args: Any) -> None:
        pass

    def mark(self) -> int:
        """A position to compare against with ``since``."""
        with self._lock:
            return len(self.calls)

    def since(self, mark: int) -> list[str]:
        with self._lock:
            return list(self.calls[mark:])

    def wait_for(self, hook: str, mark: int, timeout: float = 15) -> bool:
        """Wait until ``hook`` was called after ``mark`` (for calls the server makes in the background)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if hook in self.since(mark):
                return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        self._undo()


class Kit:
    """One server, one host of the engine under test, and what the cases share."""

    def __init__(self, eut: EngineUnderTest, data_dir: Path) -> None:
        self.eut = eut
        self.data_dir = data_dir
        self.prefix = f"kit-{secrets.token_hex(3)}"
        self.hs = f"{self.prefix}-host"
        self.registry: PluginRegistry = eut.plugins if eut.plugins is not None else load_plugins()
        self.engine = self._engine()
        self.hooks = HookRecorder(self.engine)
        self.server: LiveServer | None = None
        self.api: ApiClient = None  # type: ignore[assignment]  # set by start()
        self.capabilities: frozenset[str] = frozenset()
        self.made_vms: list[str] = []
        self.foreign_vms: list[str] = []
        self._shared: str | None = None
        # where the core's reverse proxy (Caddy) listens in this run: free ports, never 80/443
        self.proxy_http_port, self.proxy_https_port = free_port(), free_port()

    def _engine(self) -> Engine:
        engine = self.registry.engines.get(self.eut.server_type)
        if engine is None:
            failures = [f"{f.name}: {f.error}" for f in self.registry.failures]
            raise RuntimeError(f"engine {self.eut.server_type!r} is not loaded (installed: "
                               f"{sorted(self.registry.engines)}; failures: {failures or 'none'}). Is its "
                               "package installed with an 'idcs.engines' entry point of that name?")
        return engine

    # ------------------------------------------------------------------ life cycle

    def start(self) -> Kit:
        self._start_server()
        detail = self.api.get("/api/system/engine/detail")
        mine = [e for e in detail if e["name"] == self.eut.server_type]
        assert mine, f"{self.eut.server_type} missing from /api/system/engine/detail: {detail}"
        self.capabilities = frozenset(mine[0]["capabilities"])
        self.api.post("/api/system/settings", {"proxy_http_port": self.proxy_http_port,
                                               "proxy_https_port": self.proxy_https_port})
        host = self.api.post("/api/server/create", self.host_body(self.hs))
        assert host["status"] == "online", f"the host under test is not online after create: {host}"
        return self

    def _start_server(self) -> None:
        self.server = LiveServer(self.data_dir, plugins=self.registry, host_timeout=self.eut.host_timeout).start()
        self.api = self.server.admin()

    def restart_server(self) -> None:
        """Stop the server and start a new one on the same database, as after an upgrade."""
        assert self.server is not None
        self.api.close()
        self.server.stop()
        self._start_server()

    def stop(self) -> None:
        """Delete what the kit made (through the API), then the host record, then the server."""
        problems: list[str] = []
        try:
            if self.api is None:  # the server never started: nothing was made through it
                return
            try:
                known = {vm["vm_uuid"] for vm in self.api.get(f"/api/client/detail/{self.hs}")}
            except ApiError:  # the host record was never made
                known = set()
            for vm in self.made_vms + self.foreign_vms:
                if vm in known:
                    try:
                        self.api.run_task("DELETE", f"/api/client/delete/{self.hs}/{vm}", timeout=120)
                    except ApiError as exc:
                        problems.append(f"{vm}: {exc}")
            for vm in self.foreign_vms:
                if self.eut.remove_foreign_vm is not None:
                    self.eut.remove_foreign_vm(vm)
            self.api.call("DELETE", f"/api/server/delete/{self.hs}", params={"force": "true"})
        finally:
            if self.api is not None:
                self.api.close()
            if self.server is not None:
                self.server.stop()
            self.hooks.close()
        assert not problems, f"the kit could not clean up: {problems}"

    # ------------------------------------------------------------------ API helpers

    def login(self, username: str, password: str) -> ApiClient:
        """A client of the running server logged in as ``username``."""
        assert self.server is not None
        client = self.server.client()
        client.login(username, password)
        return client

    def host_body(self, name: str, **changes: Any) -> dict[str, Any]:
        body = {"server_name": name, "server_type": self.eut.server_type, "server_addr": self.eut.server_addr,
                "server_user": self.eut.server_user, "server_pass": self.eut.server_pass,
                "options": dict(self.eut.options), "public_addr": self.eut.nat_address}
        return body | changes

    def expect(self, method: str, path: str, code: int, json: Any = None, client: ApiClient | None = None,
               **kw: Any) -> dict[str, Any]:
        """Call the API and assert the envelope's ``code`` and the HTTP status that goes with it."""
        status, body = (client or self.api).call(method, path, json, **kw)
        assert body.get("code") == code and status == http_status_of(code), (
            f"{method} {path}: expected code {code} (HTTP {http_status_of(code)}), got HTTP {status} {body}")
        return body

    def not_supported(self, method: str, path: str, json: Any = None) -> None:
        """An operation the engine does not implement answers 1006 (HTTP 501), never a 500."""
        self.expect(method, path, 1006, json)

    def require(self, capability: str, why: str, method: str, path: str, json: Any = None) -> None:
        """Go on if the engine has ``capability`` for the kit's VMs; else assert the call answers
        1006 and skip."""
        if capability not in self.capabilities or capability in self.eut.unsupported:
            self.not_supported(method, path, json)
            pytest.skip(why)

    def vm_path(self, route: str, vm: str, *extra: str) -> str:
        return "/".join([f"/api/client/{route}/{self.hs}/{vm}", *extra])

    def wait(self, started: dict[str, Any], client: ApiClient | None = None, timeout: float = 300) -> dict[str, Any]:
        """Wait for the task a call started; assert it succeeded and reached 100 %."""
        task = (client or self.api).wait_task(started["task_id"], timeout)
        assert task["state"] == "success", f"task {task['kind']} failed: {task['message']} ({task})"
        assert task["progress"] == 100, task
        return task

    def task_state(self, started: dict[str, Any], client: ApiClient | None = None) -> str:
        return str((client or self.api).get(f"/api/tasks/{started['task_id']}")["state"])

    def vm_body(self, vm: str, **changes: Any) -> dict[str, Any]:
        return {"vm_uuid": vm, "os_name": self.eut.image, **self.eut.vm_spec} | changes

    def create_vm(self, role: str, client: ApiClient | None = None) -> str:
        """Create a VM through the API and wait for it; the kit deletes it at the end."""
        vm = f"{self.prefix}-{role}"
        started = (client or self.api).post(f"/api/client/create/{self.hs}", self.vm_body(vm))
        self.made_vms.append(vm)
        self.wait(started, client)
        return vm

    def shared_vm(self) -> str:
        """One running VM that the cases reuse where sharing weakens nothing."""
        if self._shared is None:
            if "vm_create" not in self.capabilities:
                pytest.skip("the engine cannot create VMs, and this case needs one")
            self._shared = self.create_vm("main")
        self.ensure_running(self._shared)
        return self._shared

    def status(self, vm: str) -> str:
        return str(self.api.get(self.vm_path("status", vm))["status"])

    def listed_status(self, vm: str) -> str:
        """The VM's status as the host's VM list shows it (one ``vm_list`` for all VMs: cheap)."""
        return str(next(v["status"] for v in self.api.get(f"/api/client/detail/{self.hs}") if v["vm_uuid"] == vm))

    def ensure_running(self, vm: str) -> None:
        if "power" in self.capabilities and self.listed_status(vm) != "running":
            assert self.api.post(self.vm_path("powers", vm), {"action": "S_START"})["status"] == "running"

    def vms_on_host(self) -> list[str]:
        return sorted(vm["vm_uuid"] for vm in self.api.get(f"/api/client/detail/{self.hs}"))

    @contextlib.contextmanager
    def workload_probe(self, vm: str) -> Iterator[Callable[[], bool] | None]:
        """A check "does the VM's workload answer right now?" for the block: the engine's own
        ``EngineUnderTest.workload_answers``, else an HTTP GET of ``http_body`` through a NAT
        forward the kit adds for the block (needs ``http_port``/``http_body`` and NAT); None when
        neither is possible."""
        eut = self.eut
        if eut.workload_answers is not None:
            workload = eut.workload_answers
            yield lambda: workload(vm)
            return
        if not (eut.http_port and eut.http_body) or "nat" not in self.capabilities or "nat" in eut.unsupported:
            yield None
            return
        port, body, address = free_port(), eut.http_body, eut.nat_address
        rule = self.api.post(self.vm_path("natadd", vm), {"host_port": port, "vm_port": eut.http_port,
                                                          "protocol": "tcp"})
        try:
            yield lambda: answers(port, body, address)
        finally:
            self.api.delete(self.vm_path("natdel", vm, str(rule["rule_index"])))

    def guest(self) -> tuple[Callable[[str, str, str], None], Callable[[str, str], str | None]] | None:
        if self.eut.write_file is None or self.eut.read_file is None:
            return None
        return self.eut.write_file, self.eut.read_file


# ---------------------------------------------------------------------- probes


def fetch_through(port: int, expect: str, address: str = "127.0.0.1", timeout: float = 20) -> str:
    """GET http://<address>:<port>/ until the answer contains ``expect``; return it."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            resp = httpx.get(f"http://{address}:{port}/", timeout=3)
            if expect in resp.text:
                return resp.text
            last = f"HTTP {resp.status_code}: {resp.text[:200]!r}"
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.2)
    raise AssertionError(f"{address}:{port} did not serve {expect!r} within {timeout}s (last: {last})")


def stops_serving(port: int, expect: str, address: str = "127.0.0.1", timeout: float = 20) -> bool:
    """True once http://<address>:<port>/ no longer serves ``expect`` (refused, reset or other)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if expect not in httpx.get(f"http://{address}:{port}/", timeout=2).text:
                return True
        except httpx.HTTPError:
            return True
        time.sleep(0.2)
    return False


def answers(port: int, expect: str, address: str = "127.0.0.1", timeout: float = 2) -> bool:
    """One GET of http://<address>:<port>/: True if it served ``expect`` within ``timeout`` seconds
    (a refused, reset, hung or different answer is False)."""
    try:
        return expect in httpx.get(f"http://{address}:{port}/", timeout=timeout).text
    except httpx.HTTPError:
        return False


def settles(check: Callable[[], bool], want: bool, timeout: float = 20, pause: float = 0.2) -> bool:
    """Poll ``check`` until it returns ``want`` (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if check() == want:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(pause)


def _read_int(read: Callable[[str], str | None], path: str) -> int | None:
    text = (read(path) or "").strip()
    return int(text) if text.lstrip("-").isdigit() else None


def _cpuset_count(text: str) -> int | None:
    """``0-3,6`` -> 5; None for an empty or unreadable set."""
    count = 0
    for part in text.strip().split(","):
        if not part:
            continue
        first, _, last = part.partition("-")
        if not first.isdigit() or (last and not last.isdigit()):
            return None
        count += int(last or first) - int(first) + 1
    return count or None


def cgroup_resources(read: Callable[[str], str | None]) -> tuple[int | None, int | None]:
    """The CPU count and memory limit (MB) a Linux guest sees in its own cgroup, read with
    ``read(path) -> text or None`` (e.g. ``EngineUnderTest.read_file`` bound to a VM).

    CPUs: the CFS quota (``cpu.max``, v1 ``cpu.cfs_quota_us``/``cpu.cfs_period_us``) rounded up,
    else the size of the CPU set (``cpuset.cpus.effective``, v1 ``cpuset/cpuset.cpus``). Memory:
    ``memory.max`` (v1 ``memory/memory.limit_in_bytes``); None where no limit is set. A helper for
    ``EngineUnderTest.guest_resources`` of container engines."""
    cpus: int | None = None
    quota = period = None
    v2 = (read("/sys/fs/cgroup/cpu.max") or "").split()
    if len(v2) == 2 and v2[0].isdigit() and v2[1].isdigit():
        quota, period = int(v2[0]), int(v2[1])
    else:
        quota = _read_int(read, "/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
        period = _read_int(read, "/sys/fs/cgroup/cpu/cpu.cfs_period_us")
    if quota is not None and period and quota > 0:
        cpus = -(-quota // period)
    if cpus is None:
        for path in ("/sys/fs/cgroup/cpuset.cpus.effective", "/sys/fs/cgroup/cpuset/cpuset.effective_cpus",
                     "/sys/fs/cgroup/cpuset/cpuset.cpus"):
            text = read(path)
            if text and (cpus := _cpuset_count(text)) is not None:
                break
    memory: int | None = None
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        value = _read_int(read, path)
        if value is not None:
            memory = value // 2**20 if value < 2**60 else None  # v1 shows "no limit" as a huge number
            break
    return cpus, memory


@contextlib.contextmanager
def hold_local_port(port: int) -> Iterator[None]:
    """A foreign program holding host port ``port``: a TCP socket listening on every address of
    this machine (so a bind to 0.0.0.0 or 127.0.0.1 of that port fails) for the block."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("0.0.0.0", port))
        sock.listen(8)
        yield
    finally:
        sock.close()


def console_link(page_url: str, base_url: str) -> tuple[str, str, list[str]]:
    """What a browser does with a console link from ``/api/client/remote``: the page's
    absolute URL (links are relative when no public URL is configured), its websocket's
    URL and the subprotocols that carry the one-time ticket from the link's fragment."""
    page = urljoin(base_url.rstrip("/") + "/", page_url)
    parts = urlsplit(page)
    ws_url = urlunsplit(("wss" if parts.scheme == "https" else "ws", parts.netloc, parts.path + "/ws", "", ""))
    return urlunsplit(parts._replace(fragment="")), ws_url, ["binary", "idcs.ticket." + parts.fragment]


def terminal_roundtrip(terminal_url: str, base_url: str, timeout: float = 20) -> str:
    """Open the core's web terminal for ``terminal_url`` and run an ``echo`` through it.

    The command is ``echo idcs-kit-'o''k'``: only a shell that really ran it prints
    ``idcs-kit-ok`` (the echo of the typed line shows the quotes). Returns what was read.
    """
    from websockets.sync.client import connect

    _page, ws_url, protocols = console_link(terminal_url, base_url)
    seen = ""
    deadline = time.monotonic() + timeout
    with connect(ws_url + "?cols=80&rows=24", open_timeout=timeout, close_timeout=2,
                 subprotocols=protocols) as ws:  # type: ignore[arg-type]
        ws.send('{"type": "input", "data": "echo idcs-kit-\'o\'\'k\'\\r"}')
        while "idcs-kit-ok" not in seen.replace("\r", ""):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"the terminal did not run echo within {timeout}s; it showed: {seen[-500:]!r}")
            try:
                frame = ws.recv(timeout=remaining)
            except TimeoutError:
                continue
            seen += frame.decode(errors="replace") if isinstance(frame, bytes) else frame
    return seen


def vnc_handshake(console_url: str, base_url: str, timeout: float = 15) -> tuple[int, int, str]:
    """Speak RFB (as noVNC does) through the core's console websocket of ``console_url`` up to
    the server's ServerInit; returns the remote screen's width, height and desktop name."""
    import ssl
    import struct

    from websockets.sync.client import connect

    _page, ws_url, protocols = console_link(console_url, base_url)
    ctx = None
    if ws_url.startswith("wss:"):
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with connect(ws_url, open_timeout=timeout, close_timeout=2, ssl=ctx,
                 subprotocols=protocols) as ws:  # type: ignore[arg-type]
        buffer = b""

        def read(n: int) -> bytes:
            nonlocal buffer
            while len(buffer) < n:
                frame = ws.recv(timeout=timeout)
                buffer += frame if isinstance(frame, bytes) else frame.encode()
            data, buffer = buffer[:n], buffer[n:]
            return data

        version = read(12)
        assert version.startswith(b"RFB 003."), version
        ws.send(b"RFB 003.008\n")
        count = read(1)[0]
        assert 1 in read(count), "the core offers no security type None to the browser"
        ws.send(bytes([1]))
        assert read(4) == b"\0\0\0\0", "the core refused the browser's security type"
        ws.send(bytes([1]))  # ClientInit, shared
        width, height = struct.unpack(">HH", read(4))
        read(16)  # pixel format
        (length,) = struct.unpack(">I", read(4))
        return width, height, read(length).decode(errors="replace")


def open_console(url: str, base_url: str) -> None:
    """Assert a console link opens: its page answers 200 with HTML and a VNC handshake
    through the core's websocket reaches a screen."""
    page, _ws, _protocols = console_link(url, base_url)
    resp = httpx.get(page, timeout=15, verify=False)
    assert resp.status_code == 200 and "<html" in resp.text.lower(), f"console page {page}: HTTP {resp.status_code}"
    width, height, _name = vnc_handshake(url, base_url)
    assert width > 0 and height > 0, (width, height)


# ---------------------------------------------------------------------- route sweep

# A valid value for every body field of a route that names a host or a VM, so that
# the sweep reaches the host/VM lookup instead of stopping at validation.
SAMPLE_VALUES: dict[str, Any] = {
    "vm_uuid": "kit-sweep-vm", "cpu_num": 1, "ram_num": 128, "hdd_num": 1, "action": "S_START",
    "password": "Kit-Sweep-Pass-1", "host_port": 1, "vm_port": 80, "protocol": "tcp",
    "domain": "kit-sweep.example.com", "hdd_name": "kitdisk", "hdd_size": 1, "iso_name": "kit.iso",
    "backup_name": "bk-kit-sweep", "server_user": "kit", "description": "kit", "cron": "@daily", "retention": 1,
}
MODEL_SAMPLES: dict[tuple[str, str], Any] = {("HostPower", "action"): "restart"}
PATH_SAMPLES = {"ip_index": "0", "rule_index": "0", "proxy_index": "0", "iso_name": "kit.iso", "user_id": "1",
                "plan_name": "kit-plan", "token_id": "1", "webhook_id": "1", "schedule_id": "1"}


def sample_body(model: type[BaseModel], image: str) -> dict[str, Any]:
    """Every field of ``model`` the kit has a sample for; fail on a required field it lacks."""
    body: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        value = MODEL_SAMPLES.get((model.__name__, name), SAMPLE_VALUES.get(name))
        if name == "os_name":
            value = image
        if value is not None:
            body[name] = value
        elif info.is_required():
            raise AssertionError(f"the kit has no sample value for the required field {model.__name__}.{name}: "
                                 "add one to idcs_core.testing.kit_support.SAMPLE_VALUES")
    return body


def host_routes() -> list[Endpoint]:
    """Every API route whose path names a host (and maybe a VM), from the app's own table."""
    from idcs_core.app import endpoints

    return [ep for ep in endpoints() if "{hs_name}" in ep.path]


def fill_path(ep: Endpoint, hs: str, vm: str) -> str:
    path = ep.path.replace("{hs_name}", hs).replace("{vm_uuid}", vm)
    for name, value in PATH_SAMPLES.items():
        path = path.replace(f"{{{name}}}", value).replace(f"{{{name}:path}}", value)
    assert "{" not in path, f"the kit has no sample for a path parameter of {ep.path}: add it to PATH_SAMPLES"
    return path
