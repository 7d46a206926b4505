"""Real LXD and Incus daemons for tests: start, initialise, seed an image, tear down.

Importable by any test suite (this plugin's own tests, the core's conformance
kit)::

    from idcs_lxd import testing

    backend = testing.start_backend("lxd", workdir)   # daemon + preseed + busybox image
    host = backend.host_spec()                        # a HostSpec for the engine
    ...
    testing.stop_backend(backend)                     # our instances/images, then the daemon

Nothing is mocked. A daemon that is already answering on its socket is reused
and left running at the end; one started here is stopped by its PID (never by
name) after the instances, volumes and images made through it are deleted.
If a daemon cannot start, ``BackendError`` is raised with the tail of its log:
tests must fail loudly, never skip.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import ssl
import subprocess
import tarfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from idcs_core.testing.backends import log_tail, stop_pid
from idcs_core.types import HostSpec

KINDS = ("lxd", "incus")
IMAGE_ALIAS = "idcs-busybox"
BUSYBOX = Path("/bin/busybox")

PRESEED = """\
networks: []
storage_pools:
- name: default
  driver: dir
profiles:
- name: default
  devices:
    root:
      path: /
      pool: default
      type: disk
"""

# PID 1 of the test image: loopback up (proxy devices connect to 127.0.0.1), a web
# server on port 80 for NAT proofs, and a clean exit on SIGPWR (LXD's stop signal).
INIT_SCRIPT = """\
#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up
mkdir -p /var/www
[ -f /var/www/index.html ] || echo "idcs-busybox $(hostname)" > /var/www/index.html
httpd -p 80 -h /var/www
trap 'exit 0' PWR TERM INT
while :; do
  sleep 3600 &
  wait $!
done
"""

# Debian's static busybox lacks chpasswd: a small one with the same stdin contract.
CHPASSWD_SCRIPT = """\
#!/bin/sh
# chpasswd: read user:password lines on stdin, store sha512 hashes in /etc/shadow.
status=0
while IFS= read -r line || [ -n "$line" ]; do
  user=${line%%:*}
  pass=${line#*:}
  if ! grep -q "^$user:" /etc/shadow; then
    echo "chpasswd: unknown user $user" >&2
    status=1
    continue
  fi
  hash=$(printf '%s' "$pass" | mkpasswd -m sha512 -P 0) || exit 1
  sed -i "s|^$user:[^:]*:|$user:$hash:|" /etc/shadow
done
exit $status
"""


class BackendError(RuntimeError):
    """A daemon could not be started or prepared; the message carries its log tail."""


@dataclass(frozen=True)
class Flavour:
    """What differs between LXD and Incus on this machine."""

    kind: str
    daemon: tuple[str, ...]
    admin: tuple[str, ...]  # prefix of "waitready" / "init --preseed"
    dir_env: str
    default_dir: str


FLAVOURS: dict[str, Flavour] = {
    "lxd": Flavour("lxd", ("lxd",), ("lxd",), "LXD_DIR", "/var/lib/lxd"),
    "incus": Flavour("incus", ("/usr/libexec/incus/incusd",), ("incus", "admin"), "INCUS_DIR",
                     "/var/lib/incus"),
}


@dataclass
class Backend:
    """One running daemon, prepared for tests."""

    kind: str
    state_dir: Path
    logfile: Path
    pid: int | None = None  # set when this process started the daemon
    image_alias: str = IMAGE_ALIAS
    image_fingerprint: str = ""
    image_imported: bool = False  # we imported it, so we delete it at the end
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def socket_path(self) -> Path:
        return self.state_dir / "unix.socket"

    @property
    def owned(self) -> bool:
        return self.pid is not None

    def host_spec(self, name: str | None = None, **options: Any) -> HostSpec:
        """A HostSpec for the engine pointing at this daemon's unix socket."""
        return HostSpec(name=name or f"test-{self.kind}", server_type="LXD", addr=str(self.socket_path),
                        user="", password="", options=dict(options))

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.logfile, lines)


def _env(flavour: Flavour, state_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env[flavour.dir_env] = str(state_dir)
    # The daemon looks up remote instance types at start-up: keep that on loopback, failing fast.
    env["HTTPS_PROXY"] = env["https_proxy"] = "http://127.0.0.1:9"
    return env


def socket_answers(path: Path, timeout: float = 2.0) -> bool:
    """True if a daemon answers ``GET /1.0`` on the unix socket ``path``."""
    if not path.exists():
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(b"GET /1.0 HTTP/1.0\r\nHost: localhost\r\n\r\n")
            return sock.recv(64).startswith(b"HTTP/1.")
    except OSError:
        return False


def _run(cmd: list[str], env: dict[str, str], timeout: float, stdin: str | None = None) -> str:
    try:
        done = subprocess.run(cmd, env=env, input=stdin, capture_output=True, text=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired as exc:
        raise BackendError(f"{' '.join(cmd)} timed out after {timeout:g} s") from exc
    if done.returncode != 0:
        raise BackendError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def start_daemon(kind: str, workdir: Path, state_dir: Path | None = None, timeout: float = 60.0,
                 command: list[str] | None = None) -> Backend:
    """Start the ``kind`` daemon (lxd / incus) in the background and wait until it is ready.

    Reuses a daemon already answering on the socket (then ``Backend.pid`` is None).
    Raises ``BackendError`` with the daemon log tail if it does not come up.
    ``command`` replaces the daemon command line (to test this failure path).
    """
    flavour = FLAVOURS[kind]
    state = Path(state_dir or flavour.default_dir)
    workdir.mkdir(parents=True, exist_ok=True)
    logfile = workdir / f"{kind}.log"
    backend = Backend(kind=kind, state_dir=state, logfile=logfile)
    if socket_answers(backend.socket_path):
        return backend
    env = _env(flavour, state)
    state.mkdir(parents=True, exist_ok=True)
    with open(workdir / f"{kind}.out", "ab") as out:
        proc = subprocess.Popen(command or [*flavour.daemon, "--group", "root", "--logfile", str(logfile)],
                                env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    backend.pid, backend.proc = proc.pid, proc
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BackendError(
                f"{kind} daemon exited with code {proc.returncode} during start-up.\n"
                f"--- {logfile} ---\n{backend.log_tail()}\n"
                f"--- {workdir / f'{kind}.out'} ---\n{log_tail(workdir / f'{kind}.out')}")
        try:
            _run([*flavour.admin, "waitready", "--timeout", "1"], env, timeout=10)
            return backend
        except BackendError:
            continue
    stop_daemon(backend)
    raise BackendError(f"{kind} daemon did not become ready within {timeout:g} s.\n"
                       f"--- {logfile} ---\n{backend.log_tail()}")


def apply_preseed(backend: Backend) -> None:
    """One ``dir`` pool named default, no networks, default profile with a root disk (idempotent)."""
    flavour = FLAVOURS[backend.kind]
    try:
        _run([*flavour.admin, "init", "--preseed"], _env(flavour, backend.state_dir), timeout=60,
             stdin=PRESEED)
    except BackendError as exc:
        raise BackendError(f"{exc}\n--- {backend.logfile} ---\n{backend.log_tail()}") from exc


def _tar_add(tar: tarfile.TarFile, name: str, *, data: bytes | None = None, mode: int = 0o644,
             kind: bytes = tarfile.REGTYPE, link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.mtime, info.uid, info.gid, info.mode, info.type = 1_700_000_000, 0, 0, mode, kind
    info.linkname = link
    if data is not None:
        info.size = len(data)
    tar.addfile(info, io.BytesIO(data) if data is not None else None)


def build_busybox_image(dest: Path, busybox: Path = BUSYBOX) -> Path:
    """Write a unified LXD image tarball (``metadata.yaml`` + ``rootfs/``) built from busybox-static.

    Deterministic: the same busybox gives the same file, hence the same fingerprint.
    """
    if not busybox.exists():
        raise BackendError(f"{busybox} is missing: apt-get install busybox-static")
    binary = busybox.read_bytes()
    listing = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, check=True)
    applets = listing.stdout.split()
    metadata = json.dumps({  # JSON is YAML
        "architecture": os.uname().machine,
        "creation_date": 1_700_000_000,
        "properties": {"os": "busybox", "release": "1.35", "architecture": os.uname().machine,
                       "description": "BusyBox 1.35 (OpenIDCS test image)"},
        "templates": {},
    }, indent=1).encode()
    files = {
        "rootfs/etc/passwd": (b"root:x:0:0:root:/root:/bin/sh\n", 0o644),
        "rootfs/etc/shadow": (b"root:*:19000:0:99999:7:::\n", 0o600),
        "rootfs/etc/group": (b"root:x:0:\n", 0o644),
        "rootfs/etc/hostname": (b"idcs-busybox\n", 0o644),
        "rootfs/sbin/init": (INIT_SCRIPT.encode(), 0o755),
        "rootfs/usr/sbin/chpasswd": (CHPASSWD_SCRIPT.encode(), 0o755),
        "rootfs/var/www/index.html": (b"idcs-busybox\n", 0o644),
    }
    dirs = ["rootfs", "rootfs/bin", "rootfs/sbin", "rootfs/usr", "rootfs/usr/bin", "rootfs/usr/sbin",
            "rootfs/etc", "rootfs/dev", "rootfs/proc", "rootfs/sys", "rootfs/root", "rootfs/var",
            "rootfs/var/www", "rootfs/mnt", "rootfs/run"]
    dest.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        _tar_add(tar, "metadata.yaml", data=metadata)
        for d in dirs:
            _tar_add(tar, d, kind=tarfile.DIRTYPE, mode=0o755)
        _tar_add(tar, "rootfs/tmp", kind=tarfile.DIRTYPE, mode=0o1777)
        _tar_add(tar, "rootfs/bin/busybox", data=binary, mode=0o755)
        for applet in sorted(set(applets) - {"busybox", "init", "chpasswd"}):
            _tar_add(tar, f"rootfs/bin/{applet}", kind=tarfile.SYMTYPE, link="busybox", mode=0o777)
        for name, (data, mode) in files.items():
            _tar_add(tar, name, data=data, mode=mode)
    payload = buf.getvalue()
    if not dest.exists() or dest.read_bytes() != payload:
        dest.write_bytes(payload)
    return dest


def import_image(backend: Backend, tarball: Path, alias: str = IMAGE_ALIAS) -> str:
    """Import ``tarball`` under ``alias`` (idempotent); return the image fingerprint."""
    from idcs_lxd.client import open_client, wait_operation  # the plugin's own helpers

    fingerprint = hashlib.sha256(tarball.read_bytes()).hexdigest()
    client = open_client(str(backend.socket_path))
    try:
        existing = client.api.images[fingerprint].get().json()["metadata"]
    except Exception:
        existing = None
    if existing is None:
        response = client.api.images.post(data=tarball.read_bytes(),
                                          headers={"Content-Type": "application/octet-stream"})
        wait_operation(client, response.json()["operation"], timeout=120)
        backend.image_imported = True
    aliases = {a["name"] for a in client.api.images[fingerprint].get().json()["metadata"].get("aliases", [])}
    if alias not in aliases:
        try:  # the alias may point at an older build: move it
            client.api.images.aliases[alias].delete()
        except Exception:
            pass
        client.api.images.aliases.post(json={"name": alias, "target": fingerprint,
                                             "description": "OpenIDCS test image"})
    backend.image_alias, backend.image_fingerprint = alias, fingerprint
    return fingerprint


def start_backend(kind: str, workdir: Path, state_dir: Path | None = None, timeout: float = 60.0) -> Backend:
    """Daemon running, preseed applied, busybox image imported: ready for the engine."""
    backend = start_daemon(kind, workdir, state_dir, timeout)
    try:
        apply_preseed(backend)
        image = build_busybox_image(workdir / "busybox-image.tar")
        import_image(backend, image)
    except Exception as exc:
        stop_daemon(backend)
        raise BackendError(f"preparing {kind} failed: {exc}\n--- {backend.logfile} ---\n"
                           f"{backend.log_tail()}") from exc
    return backend


def cleanup(backend: Backend, prefix: str) -> list[str]:
    """Delete instances and custom volumes whose names start with ``prefix`` (and the engine's
    helper instances of VMs whose ``vm_uuid`` does); return what was deleted."""
    from idcs_lxd.client import open_client, wait_operation
    from idcs_lxd.naming import KEY_VM_UUID, is_internal

    deleted: list[str] = []
    client = open_client(str(backend.socket_path))
    for inst in client.api.instances.get(params={"recursion": "1"}).json()["metadata"]:
        name = inst["name"]
        helper = is_internal(name) and str((inst.get("config") or {}).get(KEY_VM_UUID, "")).startswith(prefix)
        if not name.startswith(prefix) and not helper:
            continue
        if inst["status"] != "Stopped":
            op = client.api.instances[name].state.put(json={"action": "stop", "force": True, "timeout": 30})
            wait_operation(client, op.json()["operation"], timeout=60)
        op = client.api.instances[name].delete()
        wait_operation(client, op.json()["operation"], timeout=60)
        deleted.append(name)
    for pool in client.api.storage_pools.get().json()["metadata"]:
        pool_name = pool.rsplit("/", 1)[-1]
        for vol in client.api.storage_pools[pool_name].volumes.custom.get().json()["metadata"]:
            vol_name = vol.rsplit("/", 1)[-1]
            if vol_name.startswith(f"idcs-{prefix}"):
                client.api.storage_pools[pool_name].volumes.custom[vol_name].delete()
                deleted.append(f"{pool_name}/{vol_name}")
    return deleted


def stop_daemon(backend: Backend, timeout: float = 30.0) -> None:
    """Stop a daemon started here, by its PID: SIGTERM, then SIGKILL after ``timeout`` seconds."""
    if backend.pid is None:
        return
    stop_pid(backend.pid, timeout, backend.proc)
    backend.pid = None


def unique_name(prefix: str = "idcst-") -> str:
    """A fresh instance name (valid for LXD) starting with ``prefix``."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def stop_backend(backend: Backend, prefix: str | None = None) -> None:
    """Delete what tests made (instances/volumes named ``prefix``*, the image if we imported
    it), then stop the daemon if we started it."""
    from idcs_lxd.client import open_client

    try:
        if socket_answers(backend.socket_path):
            if prefix:
                cleanup(backend, prefix)
            if backend.image_imported and backend.image_fingerprint:
                client = open_client(str(backend.socket_path))
                try:
                    client.api.images[backend.image_fingerprint].delete()
                except Exception:
                    pass
    finally:
        stop_daemon(backend)


# ------------------------------------------------------------------ a man in the middle, for TLS pinning proofs


def make_self_signed(cert_path: Path, key_path: Path, common_name: str = "impostor") -> None:
    """Write a fresh self-signed server certificate and key (PEM)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30)).sign(key, hashes.SHA384()))
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


class TLSForwarder:
    """A loopback port in front of a daemon's https port.

    ``mode = "relay"``: new connections are relayed byte for byte to the daemon (the
    client sees the daemon's own certificate). ``mode = "impostor"``: new connections
    are answered here, with another self-signed certificate, and every byte the
    client sends after the handshake is kept in ``received`` (a client that refuses
    the certificate sends none; ``impersonated`` counts the connections answered
    here). Connections already open keep their mode.
    """

    def __init__(self, target: tuple[str, int], workdir: Path) -> None:
        self.target = target
        self.mode = "relay"
        self.received = bytearray()
        self.impersonated = 0
        self.cert, key = workdir / "impostor.crt", workdir / "impostor.key"
        make_self_signed(self.cert, key)
        self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._tls.load_cert_chain(str(self.cert), str(key))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="tls-forwarder", daemon=True)
        self._thread.start()

    @property
    def addr(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            serve = self._relay if self.mode == "relay" else self._impersonate
            if serve == self._impersonate:
                self.impersonated += 1  # before the handshake: the client cannot have seen the cert yet
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    def _relay(self, conn: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=10)
        except OSError:
            conn.close()
            return
        upstream.settimeout(None)

        def pump(src: socket.socket, dst: socket.socket) -> None:
            try:
                while chunk := src.recv(65536):
                    dst.sendall(chunk)
            except OSError:
                pass
            finally:
                for sock in (src, dst):
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        threading.Thread(target=pump, args=(upstream, conn), daemon=True).start()
        pump(conn, upstream)
        conn.close()
        upstream.close()

    def _impersonate(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        try:
            with self._tls.wrap_socket(conn, server_side=True) as tls:
                while chunk := tls.recv(65536):
                    self.received += chunk
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self._closed.set()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() of the thread
        except OSError:
            pass
        self._listener.close()
        self._thread.join(timeout=5)
