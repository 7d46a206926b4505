"""A throw-away Docker daemon and a busybox image, for tests of this engine and the conformance kit.

    with docker_backend() as backend:      # dockerd in /tmp/ioci-xxxx, ready in ~1 s
        host = backend.host_spec()         # HostSpec of type OCInterface for it
        backend.image                      # "idcs-test/busybox:latest", made offline

The daemon runs with ``--iptables=false --ip-forward=false --bridge=none`` so it
changes nothing on the machine: containers join a network ``idcs-test`` that the
setup creates (and removes), and published ports go through Docker's userland
proxy, which works on 127.0.0.1 without iptables. If the daemon cannot start,
``DaemonError`` carries the tail of its log: a test run must fail, never skip.
The daemon is stopped by its PID, never by name.

Needs root, ``dockerd`` (Debian ``docker.io``) and ``busybox-static``; see
``scripts/install-backends.sh``.

``podman_backend()`` does the same with a rootful ``podman system service`` (Debian
``podman`` 4.3 and ``catatonit``) on a private socket, with its own storage, CNI
configuration and events log in ``/tmp/ipod-xxxx``. Podman has no userland proxy:
published ports are CNI ``portmap`` DNAT rules and the ``idcs-test`` network is a
CNI bridge ``cni-podmanN`` made for the session. At the end the containers and the
network (with its bridge) are removed, the service is stopped by its PID, and the
``CNI-*`` iptables chains CNI left behind are deleted if they were not there before.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import docker

from idcs_core.testing import backends
from idcs_core.testing.backends import log_tail
from idcs_core.types import HostSpec, VMInfo

MakeVM = Callable[..., VMInfo]
"""The type of a fixture that creates a VM from keyword overrides of a VMSpec."""

TEST_IMAGE = "idcs-test/busybox:latest"
TEST_NETWORK = "idcs-test"
# The image's own CMD: httpd serves /www on port 80 and the shell waits, exiting at once on
# SIGTERM (so a graceful stop takes milliseconds, not the 10 s kill timeout).
TEST_CMD = ["/bin/sh", "-c",
            "httpd -p 80 -h /www; trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"]
BUSYBOX_PATHS = ("/usr/bin/busybox", "/bin/busybox")
# Debian's busybox has no chpasswd applet: the image gets a real one made of mkpasswd and sed
# (SHA-512 hashes into /etc/shadow), so the engine's password hook has something to run.
CHPASSWD = b"""#!/bin/sh
set -e
while IFS= read -r line; do
  user="${line%%:*}"; pass="${line#*:}"
  grep -q "^$user:" /etc/shadow || { echo "chpasswd: unknown user $user" >&2; exit 1; }
  hash=$(mkpasswd -m sha512 "$pass")
  sed -i "s|^$user:[^:]*:|$user:$hash:|" /etc/shadow
done
"""


class DaemonError(RuntimeError):
    """The test daemon did not start (the message ends with its log)."""


@dataclass
class _Daemon:
    """What a daemon started here has: its folder, process, log and Docker-API socket."""

    base: Path
    proc: subprocess.Popen[bytes]
    log_path: Path
    tls: dict[str, str] = field(default_factory=dict)
    tls_port: int | None = None
    cmd: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    _stopped: bool = field(default=False, repr=False)
    SOCKET: ClassVar[str] = "d.sock"
    WHAT: ClassVar[str] = "dockerd"

    @property
    def socket(self) -> Path:
        return self.base / self.SOCKET

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def client(self, timeout: float = 60) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.url, version="auto", timeout=timeout)

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)

    def launch(self) -> None:
        """Start ``cmd`` in the background (``backends.start_process``), its output appended to the log."""
        self.proc = backends.start_process(self.cmd, self.log_path, self.env)

    def end_process(self) -> None:
        """Stop the daemon by its PID (``backends.stop_pid``: SIGTERM, SIGKILL after 30 s)."""
        if self.proc.poll() is None:
            backends.stop_pid(self.proc.pid, timeout=30, proc=self.proc)

    def restart(self, timeout: float = 30) -> None:
        """Stop the daemon by its PID, as at a host shutdown, start it again on the same files and
        wait until it answers (``wait_answering``)."""
        self.end_process()
        self.launch()
        wait_answering(self, timeout)

    @staticmethod
    def _remove_containers(c: docker.DockerClient) -> None:
        """Remove every container with its anonymous volumes (their shims outlive the daemon otherwise)."""
        for item in c.api.containers(all=True):
            c.api.remove_container(item["Id"], force=True, v=True)


@dataclass
class DockerDaemon(_Daemon):
    """One dockerd started by ``start_dockerd``; ``stop()`` ends it and removes its files. After
    ``restart()`` its containers with a restart policy come back as Docker brings them."""

    def stop(self) -> None:
        """Remove every container (dockerd leaves shims running otherwise), then stop dockerd by PID."""
        if self._stopped:
            return
        self._stopped = True
        if self.proc.poll() is None:
            with contextlib.suppress(Exception), contextlib.closing(self.client(timeout=30)) as c:
                self._remove_containers(c)
        self.end_process()
        _unmount_below(self.base)
        shutil.rmtree(self.base, ignore_errors=True)


def _unmount_below(base: Path) -> None:
    """Lazily unmount whatever dockerd left mounted under ``base`` (deepest first)."""
    prefix = str(base) + "/"
    with open("/proc/self/mounts") as f:
        points = [line.split()[1] for line in f if line.split()[1].startswith(prefix)]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)


def write_tls_files(folder: Path) -> dict[str, str]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files in ``folder``."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def issue(name: str, issuer: tuple[x509.Name, Any] | None, ca: bool = False,
              usage: Any = None) -> tuple[x509.Name, Any, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        issuer_name, issuer_key = issuer or (subject, key)
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if usage is not None:
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if usage == ExtendedKeyUsageOID.SERVER_AUTH:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
        return subject, key, builder.sign(issuer_key, hashes.SHA256())

    ca_name, ca_key, ca_cert = issue("idcs-test-ca", None, ca=True)
    files: dict[str, str] = {}
    for role, (_, key, cert) in {
        "ca": (ca_name, ca_key, ca_cert),
        "server": issue("127.0.0.1", (ca_name, ca_key), usage=ExtendedKeyUsageOID.SERVER_AUTH),
        "client": issue("idcs-client", (ca_name, ca_key), usage=ExtendedKeyUsageOID.CLIENT_AUTH),
    }.items():
        cert_path, key_path = folder / f"{role}-cert.pem", folder / f"{role}-key.pem"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        key_path.chmod(0o600)
        files[f"{role}_cert"], files[f"{role}_key"] = str(cert_path), str(key_path)
    return files


def start_dockerd(timeout: float = 30, tls_port: int | None = None) -> DockerDaemon:
    """Start dockerd in a fresh short temp dir and wait until it answers; DaemonError if it cannot.

    With ``tls_port`` it also listens on ``tcp://127.0.0.1:<tls_port>`` with mutual TLS;
    the certificate files are in ``daemon.tls`` (keys ca_cert, client_cert, client_key...).
    """
    exe = shutil.which("dockerd", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if not exe:
        raise DaemonError("dockerd is not installed: run scripts/install-backends.sh (package docker.io)")
    base = Path(tempfile.mkdtemp(prefix="ioci-", dir="/tmp"))  # unix socket paths must stay short
    log_path = base / "dockerd.log"
    cmd = [exe, "--host", f"unix://{base}/d.sock", "--data-root", f"{base}/root",
           "--exec-root", f"{base}/x", "--pidfile", f"{base}/dockerd.pid",
           "--iptables=false", "--ip-forward=false", "--ip-masq=false", "--bridge=none"]
    tls: dict[str, str] = {}
    if tls_port:
        tls = write_tls_files(base)
        cmd += ["--host", f"tcp://127.0.0.1:{tls_port}", "--tlsverify", "--tlscacert", tls["ca_cert"],
                "--tlscert", tls["server_cert"], "--tlskey", tls["server_key"]]
    env = dict(os.environ, PATH=os.environ.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin")
    env.pop("DOCKER_HOST", None)
    daemon = DockerDaemon(base, backends.start_process(cmd, log_path, env), log_path, tls=tls, tls_port=tls_port,
                          cmd=cmd, env=env)
    try:
        wait_answering(daemon, timeout)
    except BaseException:
        daemon.stop()
        raise
    return daemon


def busybox_rootfs_tar(extra_files: dict[str, bytes] | None = None) -> bytes:
    """A tar of a minimal root filesystem: static busybox, its applet links, /etc/passwd and shadow."""
    busybox = next((p for p in BUSYBOX_PATHS if os.path.exists(p)), None)
    if busybox is None:
        raise DaemonError("busybox is not installed: run scripts/install-backends.sh (busybox-static)")
    listing = subprocess.run([busybox, "--list-full"], capture_output=True, text=True, check=True)
    applets = listing.stdout.split()
    files: dict[str, bytes] = {
        "etc/passwd": b"root:x:0:0:root:/root:/bin/sh\n",
        "etc/shadow": b"root:*:19000:0:99999:7:::\n",
        "etc/group": b"root:x:0:\n",
        "www/index.html": b"hello from idcs-test\n",
        "usr/sbin/chpasswd": CHPASSWD,
        **(extra_files or {}),
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        def add_dir(name: str) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if name == "tmp" else 0o755
            tar.addfile(info)

        for d in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "root", "tmp", "www", "mnt",
                  "proc", "sys", "dev", "var", "var/run"):
            add_dir(d)
        with open(busybox, "rb") as f:
            data = f.read()
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
        for applet in applets:
            name = applet.lstrip("/")
            if name == "bin/busybox":
                continue
            link = tarfile.TarInfo(name)
            link.type, link.linkname = tarfile.SYMTYPE, "/bin/busybox"
            tar.addfile(link)
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(content), 0o640 if name == "etc/shadow" else 0o644
            if content.startswith(b"#!"):
                info.mode = 0o755
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def build_busybox_image(client: docker.DockerClient, reference: str = TEST_IMAGE,
                        cmd: list[str] | None = None) -> str:
    """``docker import`` the busybox rootfs as ``reference`` with ``cmd`` as its CMD; return its id."""
    repo, _, tag = reference.rpartition(":")
    client.api.import_image_from_data(busybox_rootfs_tar(), repository=repo, tag=tag,
                                      changes=[f"CMD {json.dumps(cmd or TEST_CMD)}", "EXPOSE 80"])
    return str(client.images.get(reference).id)


# ------------------------------------------------------------------ helpers for test bodies


def free_port() -> int:
    """A TCP port free on every address of this machine (forwarders bind 0.0.0.0)."""
    return backends.free_port("0.0.0.0")


def http_get(port: int, path: str = "/", timeout: float = 8.0) -> str:
    """GET http://127.0.0.1:<port><path>, retrying while the service starts; raises on failure."""
    return backends.http_get(port, path=path, timeout=timeout)


def sh(dc: docker.DockerClient, vm: str, script: str) -> str:
    """Run a shell script in the VM's container; return its output; fail the test on non-zero exit."""
    code, out = dc.containers.get(vm).exec_run(["sh", "-c", script])
    text = out.decode(errors="replace")
    assert code == 0, f"{script!r} exited {code}: {text}"
    return text


@dataclass
class DockerBackend:
    """A running test daemon with its network and image."""

    daemon: DockerDaemon
    image: str = TEST_IMAGE
    network: str = TEST_NETWORK

    def host_spec(self, name: str = "oci-test", **options: Any) -> HostSpec:
        """The daemon over its unix socket; ``options`` override the test defaults."""
        return self._spec(name, self.daemon.url, options)

    def tls_host_spec(self, name: str = "oci-tls", **options: Any) -> HostSpec:
        """The same daemon over ``tcp://127.0.0.1:<port>`` with mutual TLS."""
        tls = self.daemon.tls
        return self._spec(name, f"tcp://127.0.0.1:{self.daemon.tls_port}", {
            "tls": True, "tls_ca_cert": tls["ca_cert"], "tls_client_cert": tls["client_cert"],
            "tls_client_key": tls["client_key"], **options})

    def _spec(self, name: str, addr: str, options: dict[str, Any]) -> HostSpec:
        return HostSpec(name=name, server_type="OCInterface", addr=addr, user="", password="",
                        options={"network": self.network, "stop_timeout": 5, **options})

    def client(self) -> docker.DockerClient:
        return self.daemon.client()


# ------------------------------------------------------------------ Podman


@dataclass
class PodmanService(_Daemon):
    """One ``podman system service`` started by ``start_podman``; ``stop()`` ends it and removes its
    files. Serves ``DockerBackend`` like a ``DockerDaemon`` (no TLS port)."""

    iptables_before: dict[str, set[str]] = field(default_factory=dict)
    SOCKET: ClassVar[str] = "p.sock"
    WHAT: ClassVar[str] = "podman system service"
    # Podman has no daemon of its containers: they keep running under their conmon over a restart().

    def stop(self) -> None:
        """Remove every container (their conmon processes outlive the service otherwise) and the test
        network, stop the service by PID, delete CNI's leftover iptables chains, remove the files."""
        if self._stopped:
            return
        self._stopped = True
        if self.proc.poll() is None:
            with contextlib.suppress(Exception), contextlib.closing(self.client(timeout=30)) as c:
                self._remove_containers(c)
                for net in c.networks.list(names=[TEST_NETWORK]):
                    net.remove()
        self.end_process()
        _end_processes_using(self.base)
        _drop_cni_chains(self.iptables_before)
        _unmount_below(self.base)
        shutil.rmtree(self.base, ignore_errors=True)


def _end_processes_using(base: Path) -> None:
    """End, by PID, the processes whose command line names ``base``: the conmon of each exec
    session waits 300 s (``--exit-delay``) after its exec ended, and would outlive the service."""
    needle = str(base).encode()
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if needle not in f.read() or pid == os.getpid():
                    continue
            os.kill(pid, signal.SIGKILL)
        except OSError:  # gone meanwhile
            pass


_IPTABLES = (("iptables", "nat"), ("iptables", "filter"), ("ip6tables", "nat"), ("ip6tables", "filter"))


def _iptables_chains() -> dict[str, set[str]]:
    """Chain names per ``<command> <table>``, as ``-S`` lists them (empty if the command is missing)."""
    found: dict[str, set[str]] = {}
    for cmd, table in _IPTABLES:
        out = subprocess.run([cmd, "-t", table, "-S"], capture_output=True, text=True, check=False).stdout \
            if shutil.which(cmd, path="/usr/sbin:/sbin:/usr/bin") else ""
        found[f"{cmd} {table}"] = {ln.split()[1] for ln in out.splitlines() if ln.startswith("-N ")}
    return found


def _drop_cni_chains(before: dict[str, set[str]]) -> None:
    """Delete the ``CNI-*`` chains (and the rules jumping to them) that were not there before."""
    for key, chains in _iptables_chains().items():
        cmd, table = key.split()
        new = {c for c in chains if c.startswith("CNI-")} - before.get(key, set())
        if not new:
            continue
        rules = subprocess.run([cmd, "-t", table, "-S"], capture_output=True, text=True, check=False).stdout
        for rule in rules.splitlines():
            parts = shlex.split(rule)  # comments are quoted
            if parts[:1] == ["-A"] and parts[1] not in new and any(
                    parts[i + 1] in new for i, word in enumerate(parts[:-1]) if word in ("-j", "-g")):
                subprocess.run([cmd, "-t", table, "-D", *parts[1:]], capture_output=True, check=False)
        for chain in new:
            subprocess.run([cmd, "-t", table, "-F", chain], capture_output=True, check=False)
        for chain in new:
            subprocess.run([cmd, "-t", table, "-X", chain], capture_output=True, check=False)


def _hard_limits(pid: int | str = "self") -> dict[str, int]:
    """The hard RLIMIT_NOFILE and RLIMIT_NPROC of a process, from /proc/<pid>/limits."""
    wanted = {"Max open files": "nofile", "Max processes": "nproc"}
    result: dict[str, int] = {}
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            for label, key in wanted.items():
                if line.startswith(label):
                    hard = line[len(label):].split()[1]
                    result[key] = 1048576 if hard == "unlimited" else int(hard)
    return result


def _write_podman_conf(base: Path, limits: dict[str, int]) -> None:
    # Rootful Podman gives containers RLIMIT_NOFILE and RLIMIT_NPROC of 1048576 unless told
    # otherwise; runc cannot raise a limit above the service's own hard one ("error setting rlimit").
    ulimits = ", ".join(f'"{k}={v}:{v}"' for k, v in sorted(limits.items()))
    init = "" if os.path.exists("/usr/libexec/podman/catatonit") or not os.path.exists("/usr/bin/docker-init") \
        else 'init_path = "/usr/bin/docker-init"\n'
    (base / "containers.conf").write_text(f"""[containers]
default_ulimits = [{ulimits}]
{init}
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{base}/events.log"
tmp_dir = "{base}/tmp"
volume_path = "{base}/volumes"

[network]
network_backend = "cni"
network_config_dir = "{base}/cni"
""")
    (base / "storage.conf").write_text(f"""[storage]
driver = "overlay"
runroot = "{base}/run"
graphroot = "{base}/root"
""")


def wait_answering(daemon: _Daemon, timeout: float) -> None:
    """Wait until the daemon answers a ping on its socket; DaemonError (ending with its log) if it
    exits or does not answer within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error = "socket not created"
    while True:
        if daemon.proc.poll() is not None:
            raise DaemonError(f"{daemon.WHAT} exited with code {daemon.proc.returncode} at start:\n"
                              f"{daemon.log_tail()}")
        if daemon.socket.exists():
            try:
                with contextlib.closing(daemon.client(timeout=5)) as c:
                    c.ping()
                return
            except Exception as exc:
                last_error = f"{type(exc).__name__}: {exc}"
        if time.monotonic() > deadline:
            raise DaemonError(f"{daemon.WHAT} did not answer within {timeout:g} s ({last_error}):\n"
                              f"{daemon.log_tail()}")
        time.sleep(0.1)


def start_podman(timeout: float = 30) -> PodmanService:
    """Start a rootful ``podman system service`` in a fresh temp dir; DaemonError if it cannot.

    cgroupfs (no systemd here), a file events log (no journald), overlay storage, CNI networks, all
    under the temp dir, chosen with ``CONTAINERS_CONF`` / ``CONTAINERS_STORAGE_CONF``.
    """
    exe = shutil.which("podman", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if not exe:
        raise DaemonError("podman is not installed: run scripts/install-backends.sh (package podman)")
    base = Path(tempfile.mkdtemp(prefix="ipod-", dir="/tmp"))
    for sub in ("tmp", "volumes", "cni", "run", "root"):
        (base / sub).mkdir()
    limits = _hard_limits()
    _write_podman_conf(base, limits)
    env = dict(os.environ, PATH=os.environ.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin",
               CONTAINERS_CONF=str(base / "containers.conf"), CONTAINERS_STORAGE_CONF=str(base / "storage.conf"))
    env.pop("DOCKER_HOST", None)
    env.pop("CONTAINER_HOST", None)
    log_path = base / "podman.log"
    cmd = [exe, "system", "service", "--time=0", f"unix://{base}/p.sock"]
    service = PodmanService(base, backends.start_process(cmd, log_path, env), log_path, cmd=cmd, env=env,
                            iptables_before=_iptables_chains())
    try:
        wait_answering(service, timeout)
        # Podman lowers some of its own limits at start (RLIMIT_NPROC to 32768 on this machine kind):
        # the containers' limits must not exceed the service's, so they follow it.
        actual = _hard_limits(service.pid)
        if any(actual.get(k, v) < v for k, v in limits.items()):
            _write_podman_conf(base, {k: min(v, actual.get(k, v)) for k, v in limits.items()})
            service.restart(timeout)
    except BaseException:
        service.stop()
        raise
    return service


@contextlib.contextmanager
def podman_backend() -> Iterator[DockerBackend]:
    """Start Podman's Docker-compatible service, create the test network and image; clean up after."""
    service = start_podman()
    try:
        with contextlib.closing(service.client()) as c:
            c.networks.create(TEST_NETWORK, driver="bridge")
            build_busybox_image(c)
        yield DockerBackend(service)  # type: ignore[arg-type]
    finally:
        service.stop()


@contextlib.contextmanager
def docker_backend() -> Iterator[DockerBackend]:
    """Start dockerd, create the test network and image; stop and remove everything afterwards."""
    daemon = start_dockerd(tls_port=free_port())
    try:
        with contextlib.closing(daemon.client()) as c:
            c.networks.create(TEST_NETWORK, driver="bridge")
            build_busybox_image(c)
        yield DockerBackend(daemon)
    finally:
        with contextlib.suppress(Exception), contextlib.closing(daemon.client(timeout=30)) as c:
            for item in c.api.containers(all=True):
                c.api.remove_container(item["Id"], force=True, v=True)
            c.networks.get(TEST_NETWORK).remove()
        daemon.stop()
