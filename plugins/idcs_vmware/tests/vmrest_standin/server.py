"""A STAND-IN for VMware Workstation Pro's REST API (``vmrest``): a test fixture, not VMware code.

Workstation cannot run on the test machine, so the engine's tests talk to this server
instead. It follows the published vmrest reference (Workstation Pro 17, API 1.3.x;
"VMware Workstation REST API" on developer.broadcom.com) for what the engine uses:

- basic auth on every call (401 ``{"Code", "Message"}`` otherwise), media type
  ``application/vnd.vmware.vmw.rest-v1+json`` on every answer;
- ``GET /api/vms`` (``[{"id", "path"}]``), ``GET|PUT|DELETE /api/vms/{id}``
  (``{"id", "cpu": {"processors"}, "memory"}``; PUT takes ``{"processors", "memory"}``),
  ``POST /api/vms`` (clone: ``{"name", "parentId"}`` -> 201);
- ``GET|PUT /api/vms/{id}/power`` (PUT body: the bare word ``on`` / ``off`` / ``shutdown`` /
  ``suspend`` / ``pause`` / ``unpause`` (/ ``reset``), answer ``{"power_state"}``); a word
  the current state does not allow answers 409, e.g. suspending a VM that is off;
- ``GET /api/vms/{id}/ip`` (``{"ip"}``; 500 while the guest's tools do not run),
  ``GET /api/vms/{id}/nic`` (``{"num", "nics": [{"index", "type", "vmnet", "macAddress"}]}``);
- ``GET /api/vms/{id}/params/{name}`` (``{"name", "value"}``), ``PUT /api/vms/{id}/params``
  (``{"name", "value"}``): the VM's .vmx settings, e.g. ``RemoteDisplay.vnc.*``;
- ``GET /api/vmnet``, ``GET /api/vmnet/{vmnet}/portforward`` (``{"num", "port_forwardings":
  [{"port", "protocol", "desc", "guest": {"ip", "port"}}]}``), ``PUT|DELETE
  /api/vmnet/{vmnet}/portforward/{protocol}/{port}`` (PUT body ``{"guestIp", "guestPort",
  "desc"}``), ``GET /api/vmnet/{vmnet}/mactoip``.

To let the tests prove effects, a "VM" is backed by real processes: while it is powered on
a busybox ``httpd`` serves its page on the VM's guest address (a loopback address of the
stand-in's vmnet, 127.x.y.z, port 80); pause/unpause SIGSTOP/SIGCONT it; with
``RemoteDisplay.vnc.enabled = "TRUE"`` a real TigerVNC ``Xvnc`` listens on
``RemoteDisplay.vnc.port`` (password ``RemoteDisplay.vnc.password``). A TCP port forward is a
real forwarder listening on 127.0.0.1:<port> (UDP rules are recorded, not forwarded). A VM's
"disk" is the folder ``guest-root`` beside its .vmx (httpd's document root); a clone copies its
parent's, a delete removes it, so the tests can tell a fresh clone from the old VM.

Run: ``python server.py --port P --user U --password W --workdir D --template NAME ...``;
it prints ``READY <port>`` when it serves, and stops its children on SIGTERM.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MEDIA = "application/vnd.vmware.vmw.rest-v1+json"
GUEST_HTTP_PORT = 80
GUEST_BODY = "hello from a vmrest-standin guest"
VMNETS = {"vmnet1": "hostOnly", "vmnet8": "nat"}

# error codes of the stand-in's ErrorModel ({"Code": int, "Message": str})
E_AUTH, E_PARAM, E_NOT_FOUND, E_STATE, E_EXISTS, E_TOOLS, E_INTERNAL = 1, 2, 3, 4, 5, 6, 100


class ApiError(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class VM:
    id: str
    path: str
    processors: int
    memory: int
    mac: str
    guest_ip: str
    power: str = "poweredOff"
    params: dict[str, str] = field(default_factory=dict)
    guest: subprocess.Popen[bytes] | None = None
    vnc: subprocess.Popen[bytes] | None = None

    @property
    def name(self) -> str:
        return Path(self.path).stem

    @property
    def disk(self) -> Path:
        """The guest's file system: a folder beside the .vmx (a clone copies its parent's)."""
        return Path(self.path).parent / "guest-root"


@dataclass
class Forward:
    port: int
    protocol: str
    guest_ip: str
    guest_port: int
    desc: str
    listener: socket.socket | None = None


class Workstation:
    """The state of one stand-in Workstation host: VMs, their processes, the vmnets' forwards."""

    def __init__(self, workdir: Path, subnet: str) -> None:
        self.workdir = workdir
        self.subnet = subnet  # "127.a.b": guest addresses are 127.a.b.2 ... 127.a.b.254
        self.lock = threading.RLock()
        self.vms: dict[str, VM] = {}
        self.forwards: dict[str, dict[tuple[str, int], Forward]] = {name: {} for name in VMNETS}
        self.next_host = 2

    # ---------------------------------------------------------------- VMs
    def vm_id(self, path: str) -> str:
        # vmrest ids are 32 characters derived from the .vmx path
        return base64.b32encode(hashlib.sha1(path.encode()).digest()).decode()[:32]

    def add_vm(self, name: str, processors: int, memory: int, params: dict[str, str] | None = None) -> VM:
        path = str(self.workdir / "vms" / name / f"{name}.vmx")
        if any(vm.path == path for vm in self.vms.values()):
            raise ApiError(409, E_EXISTS, f"A virtual machine already exists at {path}")
        if self.next_host > 254:
            raise ApiError(500, E_INTERNAL, "The DHCP pool of vmnet8 is exhausted")
        host = self.next_host
        self.next_host += 1
        mac = "00:0c:29:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))
        vm = VM(self.vm_id(path), path, processors, memory, mac, f"{self.subnet}.{host}", params=dict(params or {}))
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.vms[vm.id] = vm
        self.write_vmx(vm)
        return vm

    def write_vmx(self, vm: VM) -> None:
        lines = [f'numvcpus = "{vm.processors}"', f'memsize = "{vm.memory}"', 'ethernet0.connectionType = "nat"',
                 f'ethernet0.address = "{vm.mac}"'] + [f'{k} = "{v}"' for k, v in sorted(vm.params.items())]
        Path(vm.path).write_text("\n".join(lines) + "\n")

    def get(self, vm_id: str) -> VM:
        vm = self.vms.get(vm_id)
        if vm is None:
            raise ApiError(404, E_NOT_FOUND, f"The virtual machine {vm_id} is not found")
        return vm

    # ---------------------------------------------------------------- power
    POWER_RULES = {  # word -> (states it is allowed from, state after)
        "on": (("poweredOff", "suspended"), "poweredOn"),
        "off": (("poweredOn", "paused", "suspended"), "poweredOff"),
        "shutdown": (("poweredOn",), "poweredOff"),
        "suspend": (("poweredOn",), "suspended"),
        "pause": (("poweredOn",), "paused"),
        "unpause": (("paused",), "poweredOn"),
        "reset": (("poweredOn",), "poweredOn"),
    }

    def power(self, vm: VM, word: str) -> None:
        rule = self.POWER_RULES.get(word)
        if rule is None:
            raise ApiError(400, E_PARAM, f"Invalid power operation '{word}'")
        allowed, after = rule
        if vm.power not in allowed:
            raise ApiError(409, E_STATE, f"The operation '{word}' is not allowed in the current state ({vm.power})")
        if word in ("off", "shutdown", "suspend", "reset"):
            self.stop_guest(vm)
        if word == "pause":
            self.signal_guest(vm, signal.SIGSTOP)
        if word == "unpause":
            self.signal_guest(vm, signal.SIGCONT)
        if word in ("on", "reset"):
            self.start_guest(vm)
        vm.power = after

    def start_guest(self, vm: VM) -> None:
        root = vm.disk
        root.mkdir(parents=True, exist_ok=True)
        (root / "index.html").write_text(f"{GUEST_BODY} {vm.name}\n")
        busybox = shutil.which("busybox")
        if busybox is None:
            raise ApiError(500, E_INTERNAL, "busybox is not installed: the stand-in cannot run a guest")
        vm.guest = subprocess.Popen([busybox, "httpd", "-f", "-p", f"{vm.guest_ip}:{GUEST_HTTP_PORT}", "-h", str(root)],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if vm.params.get("RemoteDisplay.vnc.enabled", "").upper() == "TRUE":
            self.start_vnc(vm, root)

    def start_vnc(self, vm: VM, root: Path) -> None:
        from idcs_core.testing.xvnc import _free_display, password_file

        port = int(vm.params.get("RemoteDisplay.vnc.port", "5900"))
        password = vm.params.get("RemoteDisplay.vnc.password", "")
        args = ["-SecurityTypes", "None"]
        if password:
            passwd = root / "vnc.passwd"
            passwd.write_bytes(password_file(password))
            passwd.chmod(0o600)
            args = ["-SecurityTypes", "VncAuth", "-PasswordFile", str(passwd)]
        display = _free_display()
        xvnc = shutil.which("Xvnc")
        if xvnc is None:
            raise ApiError(500, E_INTERNAL, "Xvnc is not installed: the stand-in cannot serve VNC")
        vm.vnc = subprocess.Popen([xvnc, f":{display}", "-geometry", "320x240", "-depth", "24", "-rfbport", str(port),
                                   "-localhost", "-nolisten", "tcp", "-UseBlacklist=0", "-desktop", vm.name, *args],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def signal_guest(self, vm: VM, sig: signal.Signals) -> None:
        for proc in (vm.guest, vm.vnc):
            if proc is not None and proc.poll() is None:
                proc.send_signal(sig)

    def stop_guest(self, vm: VM) -> None:
        for proc in (vm.guest, vm.vnc):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.terminate()  # Xvnc removes its /tmp/.X<n>-lock on SIGTERM, not on SIGKILL
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        vm.guest = vm.vnc = None

    def stop_all(self) -> None:
        with self.lock:
            for vm in self.vms.values():
                self.stop_guest(vm)
            for table in self.forwards.values():
                for fwd in table.values():
                    self.close_forward(fwd)

    # ---------------------------------------------------------------- port forwarding
    def set_forward(self, vmnet: str, protocol: str, port: int, guest_ip: str, guest_port: int, desc: str) -> None:
        table = self.forwards[vmnet]
        old = table.pop((protocol, port), None)
        if old is not None:
            self.close_forward(old)
        fwd = Forward(port, protocol, guest_ip, guest_port, desc)
        if protocol == "tcp":
            try:
                fwd.listener = socket.create_server(("127.0.0.1", port), reuse_port=False)
            except OSError as exc:
                raise ApiError(409, E_EXISTS, f"Cannot forward host port {port}: {exc.strerror}") from exc
            threading.Thread(target=self.accept_loop, args=(fwd,), daemon=True).start()
        table[(protocol, port)] = fwd

    def close_forward(self, fwd: Forward) -> None:
        if fwd.listener is not None:
            try:
                fwd.listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            fwd.listener.close()
            fwd.listener = None

    def accept_loop(self, fwd: Forward) -> None:
        listener = fwd.listener
        while listener is not None:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=self.pipe_connection, args=(client, fwd.guest_ip, fwd.guest_port),
                             daemon=True).start()

    @staticmethod
    def pipe_connection(client: socket.socket, ip: str, port: int) -> None:
        try:
            upstream = socket.create_connection((ip, port), timeout=5)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)

        def pump(src: socket.socket, dst: socket.socket) -> None:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        threading.Thread(target=pump, args=(upstream, client), daemon=True).start()
        pump(client, upstream)
        client.close()
        upstream.close()


def vm_information(vm: VM) -> dict[str, Any]:
    return {"id": vm.id, "cpu": {"processors": vm.processors}, "memory": vm.memory}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "vmrest-standin/1.3"
    ws: Workstation
    credentials: str

    def log_message(self, format: str, *args: Any) -> None:
        if os.environ.get("VMREST_STANDIN_LOG"):  # one line per request, for debugging a test
            sys.stderr.write(f"{self.command} {self.path} -> {args[1] if len(args) > 1 else ''}\n")

    # ---------------------------------------------------------------- plumbing
    def send_json(self, status: int, body: Any = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", MEDIA)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def read_body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode(errors="replace").strip()  # the power verb may come bare

    def handle_any(self, method: str) -> None:
        body = self.read_body()
        try:
            if self.headers.get("Authorization") != self.credentials:
                raise ApiError(401, E_AUTH, "Authentication failed")
            status, answer = self.route(method, self.path.split("?", 1)[0], body)
        except ApiError as exc:
            status, answer = exc.status, {"Code": exc.code, "Message": exc.message}
        self.send_json(status, answer)

    def do_GET(self) -> None:
        self.handle_any("GET")

    def do_PUT(self) -> None:
        self.handle_any("PUT")

    def do_POST(self) -> None:
        self.handle_any("POST")

    def do_DELETE(self) -> None:
        self.handle_any("DELETE")

    # ---------------------------------------------------------------- routes
    def route(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        ws = self.ws
        parts = [p for p in path.split("/") if p]
        if parts[:1] != ["api"]:
            raise ApiError(404, E_NOT_FOUND, f"No such resource: {path}")
        parts = parts[1:]
        with ws.lock:
            if parts == ["vms"] and method == "GET":
                return 200, [{"id": vm.id, "path": vm.path} for vm in ws.vms.values()]
            if parts == ["vms"] and method == "POST":
                return self.clone(body)
            if len(parts) >= 2 and parts[0] == "vms":
                return self.vm_route(method, ws.get(parts[1]), parts[2:], body)
            if parts == ["vmnet"] and method == "GET":
                nets = [{"name": n, "type": t, "dhcp": "true", "subnet": f"{ws.subnet}.0", "mask": "255.255.255.0"}
                        for n, t in VMNETS.items()]
                return 200, {"num": len(nets), "vmnets": nets}
            if len(parts) >= 3 and parts[0] == "vmnet":
                return self.vmnet_route(method, parts[1], parts[2:], body)
        raise ApiError(404, E_NOT_FOUND, f"No such resource: {method} {path}")

    def clone(self, body: Any) -> tuple[int, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("name"), str) or not body.get("parentId"):
            raise ApiError(400, E_PARAM, "Invalid parameters: name and parentId are required")
        name = body["name"]
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._ -]{0,79}", name):
            raise ApiError(400, E_PARAM, f"Invalid virtual machine name '{name}'")
        parent = self.ws.get(str(body["parentId"]))
        inherited = {k: v for k, v in parent.params.items() if not k.startswith("RemoteDisplay.")}
        vm = self.ws.add_vm(name, parent.processors, parent.memory, inherited)
        if parent.disk.exists():
            shutil.copytree(parent.disk, vm.disk, dirs_exist_ok=True)
        return 201, vm_information(vm)

    def vm_route(self, method: str, vm: VM, rest: list[str], body: Any) -> tuple[int, Any]:
        ws = self.ws
        if not rest:
            if method == "GET":
                return 200, vm_information(vm)
            if method == "PUT":
                if not isinstance(body, dict):
                    raise ApiError(400, E_PARAM, "Invalid parameters")
                cpu, mem = body.get("processors", vm.processors), body.get("memory", vm.memory)
                if not (isinstance(cpu, int) and 1 <= cpu <= 32 and isinstance(mem, int) and 4 <= mem <= 131072):
                    raise ApiError(400, E_PARAM, "Invalid parameters: processors 1-32, memory 4-131072 MB")
                if vm.power != "poweredOff":
                    raise ApiError(409, E_STATE, "The virtual machine must be powered off to change its hardware")
                vm.processors, vm.memory = cpu, mem
                ws.write_vmx(vm)
                return 200, vm_information(vm)
            if method == "DELETE":
                if vm.power != "poweredOff":
                    raise ApiError(409, E_STATE, "The virtual machine must be powered off to be deleted")
                del ws.vms[vm.id]
                shutil.rmtree(Path(vm.path).parent, ignore_errors=True)
                return 204, None
        if rest == ["power"]:
            if method == "GET":
                return 200, {"power_state": vm.power}
            if method == "PUT":
                if not isinstance(body, str):
                    raise ApiError(400, E_PARAM, "Invalid parameters: the body is a power operation")
                ws.power(vm, body)
                return 200, {"power_state": vm.power}
        if rest == ["ip"] and method == "GET":
            if vm.power != "poweredOn":
                raise ApiError(500, E_TOOLS, "Unable to get the IP address: the VMware Tools are not running")
            return 200, {"ip": vm.guest_ip}
        if rest == ["nic"] and method == "GET":
            return 200, {"num": 1, "nics": [{"index": 1, "type": "nat", "vmnet": "vmnet8", "macAddress": vm.mac}]}
        if rest == ["params"] and method == "PUT":
            if not isinstance(body, dict) or not isinstance(body.get("name"), str) or "value" not in body:
                raise ApiError(400, E_PARAM, "Invalid parameters: name and value are required")
            vm.params[body["name"]] = str(body["value"])
            ws.write_vmx(vm)
            return 204, None
        if len(rest) == 2 and rest[0] == "params" and method == "GET":
            return 200, {"name": rest[1], "value": vm.params.get(rest[1], "")}
        raise ApiError(404, E_NOT_FOUND, f"No such resource: {method} {'/'.join(rest)}")

    def vmnet_route(self, method: str, vmnet: str, rest: list[str], body: Any) -> tuple[int, Any]:
        ws = self.ws
        if vmnet not in VMNETS:
            raise ApiError(404, E_NOT_FOUND, f"The virtual network {vmnet} is not found")
        if rest == ["mactoip"] and method == "GET":
            rows = [{"vmnet": vmnet, "mac": vm.mac, "ip": vm.guest_ip} for vm in ws.vms.values()] \
                if VMNETS[vmnet] == "nat" else []
            return 200, {"num": len(rows), "mactoips": rows}
        if VMNETS[vmnet] != "nat":
            raise ApiError(400, E_PARAM, f"{vmnet} is not a NAT network: it has no port forwarding")
        table = ws.forwards[vmnet]
        if rest == ["portforward"] and method == "GET":
            rows = [{"port": f.port, "protocol": f.protocol, "desc": f.desc,
                     "guest": {"ip": f.guest_ip, "port": f.guest_port}} for f in table.values()]
            return 200, {"num": len(rows), "port_forwardings": rows}
        if len(rest) == 3 and rest[0] == "portforward":
            protocol, port_text = rest[1].lower(), rest[2]
            if protocol not in ("tcp", "udp") or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
                raise ApiError(400, E_PARAM, "Invalid parameters: protocol tcp/udp and a port 1-65535")
            port = int(port_text)
            if method == "PUT":
                if not isinstance(body, dict) or not isinstance(body.get("guestIp"), str) \
                        or not isinstance(body.get("guestPort"), int):
                    raise ApiError(400, E_PARAM, "Invalid parameters: guestIp and guestPort are required")
                ws.set_forward(vmnet, protocol, port, body["guestIp"], body["guestPort"], str(body.get("desc", "")))
                return 204, None
            if method == "DELETE":
                fwd = table.pop((protocol, port), None)
                if fwd is None:
                    raise ApiError(404, E_NOT_FOUND, f"No port forwarding for {protocol} port {port}")
                ws.close_forward(fwd)
                return 204, None
        raise ApiError(404, E_NOT_FOUND, f"No such resource: {method} {vmnet}/{'/'.join(rest)}")


def main() -> None:
    parser = argparse.ArgumentParser(description="vmrest stand-in (test fixture)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password-env", default="VMREST_STANDIN_PASSWORD",
                        help="name of the environment variable holding the password (never on the command line)")
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--subnet", default=f"127.{64 + secrets.randbelow(64)}.{secrets.randbelow(256)}",
                        help="first three parts of the guests' loopback addresses (random: 16384 choices)")
    parser.add_argument("--template", action="append", default=[], help="name of a template VM to create")
    parser.add_argument("--tls", action="store_true", help="serve HTTPS with a self-signed certificate (vmrest -C)")
    args = parser.parse_args()
    password = os.environ.get(args.password_env, "")
    ws = Workstation(args.workdir, args.subnet)
    for name in args.template:
        ws.add_vm(name, 1, 256, {"guestOS": "debian12-64"})
    token = base64.b64encode(f"{args.user}:{password}".encode()).decode()
    handler = type("BoundHandler", (Handler,), {"ws": ws, "credentials": f"Basic {token}"})
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler)
    server.daemon_threads = True
    if args.tls:
        from idcs_core.tls import ensure_self_signed

        cert, key = ensure_self_signed(args.workdir, "127.0.0.1")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server.socket = context.wrap_socket(server.socket, server_side=True)

    def stop(_signum: int, _frame: Any) -> None:
        ws.stop_all()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"READY {args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
