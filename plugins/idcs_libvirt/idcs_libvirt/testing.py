"""Test set-up for the QEMU engine: a real libvirtd + virtlogd, a NAT network, a storage pool and
a tiny guest (Debian cloud kernel + busybox initramfs) built offline and cached.

Used by the plugin's tests and by ``bench/libvirt_vm_list.py``. Daemons already running are
reused (and left running); daemons started here are stopped by PID at the end.
"""

from __future__ import annotations

import contextlib
import glob
import gzip
import hashlib
import io
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import httpx
import libvirt

from idcs_core.testing import backends

URI = "qemu:///system"
POOL = "idcs-test"
POOL_DIR = Path("/var/lib/libvirt/idcs-test-pool")
NETWORK = "idcs-test"
BRIDGE = "idcsvirbr0"
SUBNET = "10.231.77"
IMAGE = "idcs-tiny.qcow2"
ISO = "idcs-test.iso"
CACHE = Path(os.environ.get("IDCS_CACHE", Path.home() / ".cache" / "idcs")) / "libvirt"
MODULES = ["virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_pci", "failover",
           "net_failover", "virtio_net", "virtio_blk", "button", "evdev"]
GUEST_FILES = ["init", "udhcpc.script", "file.cgi", "info.cgi"]
HTTP_BODY = "idcs-qemu-guest"
# fixed places, so that a session reusing daemons an earlier one started can still find them
LIBVIRTD_PID = Path("/run/idcs-libvirtd.pid")
VIRTLOGD_PID = Path("/run/idcs-virtlogd.pid")


def _libvirt_quiet() -> None:
    """libvirt prints every error on stderr by default; the engine reports them itself."""
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


# ---------------------------------------------------------------------- the guest


def cloud_kernel() -> tuple[Path, str]:
    """The newest Debian cloud kernel installed (scripts/backends/libvirt.sh installs it)."""
    found = sorted(glob.glob("/boot/vmlinuz-*-cloud-amd64"))
    if not found:
        raise RuntimeError("no /boot/vmlinuz-*-cloud-amd64: run scripts/backends/libvirt.sh as root "
                           "(installs linux-image-cloud-amd64)")
    path = Path(found[-1])
    return path, path.name.removeprefix("vmlinuz-")


def _module_path(version: str, module: str) -> Path:
    out = subprocess.run(["modinfo", "-k", version, "-n", module], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def _guest_file(name: str) -> bytes:
    return (resources.files("idcs_libvirt") / "guest" / name).read_bytes()


def _cpio_newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A ``newc`` cpio archive of (path, mode, data) entries (directories have no data)."""
    out = io.BytesIO()
    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], start=1):
        raw = name.encode() + b"\0"
        header = "070701" + "".join(f"{v:08x}" for v in (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0,
                                                        len(raw), 0))
        out.write(header.encode() + raw)
        out.write(b"\0" * ((4 - (110 + len(raw)) % 4) % 4))
        out.write(data)
        out.write(b"\0" * ((4 - len(data) % 4) % 4))
    return out.getvalue()


def build_guest() -> tuple[Path, Path]:
    """Build (once, cached by a hash of its inputs) the guest's kernel and initramfs."""
    kernel, version = cloud_kernel()
    busybox = Path("/bin/busybox")
    inputs = hashlib.sha256(Path(__file__).read_bytes())  # the recipe itself is an input
    modules = [_module_path(version, m) for m in MODULES]
    for path in [kernel, busybox, *modules]:
        inputs.update(str(path).encode() + path.read_bytes())
    for name in GUEST_FILES:
        inputs.update(name.encode() + _guest_file(name))
    out = CACHE / inputs.hexdigest()[:16]
    vmlinuz, initrd = out / "vmlinuz", out / "initrd.gz"
    if vmlinuz.exists() and initrd.exists():
        return vmlinuz, initrd
    out.mkdir(parents=True, exist_ok=True)
    d, x, f = 0o040755, 0o100755, 0o100644
    entries: list[tuple[str, int, bytes]] = [
        ("bin", d, b""), ("etc", d, b""), ("lib", d, b""), ("lib/modules", d, b""), ("www", d, b""),
        ("www/cgi-bin", d, b""), ("bin/busybox", x, busybox.read_bytes()),
        ("bin/sh", 0o120777, b"busybox"), ("init", x, _guest_file("init")),
        ("etc/udhcpc.script", x, _guest_file("udhcpc.script")),
        ("www/index.html", f, f"<html><body>{HTTP_BODY}</body></html>\n".encode()),
        ("www/cgi-bin/file", x, _guest_file("file.cgi")), ("www/cgi-bin/info", x, _guest_file("info.cgi")),
    ]
    entries += [(f"lib/modules/{m}.ko", f, p.read_bytes()) for m, p in zip(MODULES, modules, strict=True)]
    tmp = initrd.with_suffix(".tmp")
    tmp.write_bytes(gzip.compress(_cpio_newc(entries), compresslevel=6))
    shutil.copyfile(kernel, vmlinuz)
    tmp.rename(initrd)
    return vmlinuz, initrd


# ---------------------------------------------------------------------- daemons


@dataclass
class Backend:
    """The running libvirt back end of a test session."""

    uri: str = URI
    pool: str = POOL
    network: str = NETWORK
    image: str = IMAGE
    iso: str = ISO
    workdir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()))
    started: dict[str, int] = field(default_factory=dict)  # daemon -> pid, for those started here
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)

    @property
    def libvirtd_pid(self) -> int | None:
        return _pid_of(LIBVIRTD_PID)

    def connect(self) -> libvirt.virConnect:
        return libvirt.open(self.uri)

    def kill_libvirtd(self) -> None:
        """Kill libvirtd (SIGKILL): its guests keep running; the host answers nothing."""
        pid = self.libvirtd_pid
        # a libvirtd this session reused (another session's, a bench's) is never killed
        assert pid and pid == self.started.get("libvirtd"), \
            f"libvirtd (pid {pid}) was not started by this session: it is not killed"
        os.kill(pid, signal.SIGKILL)
        proc = self.processes.get("libvirtd")
        if proc is not None and proc.pid == pid:
            proc.wait(timeout=30)

    def start_libvirtd(self) -> None:
        """(Re)start libvirtd in the foreground of a process of its own (log in the workdir),
        its pidfile at a fixed place, and wait until it answers."""
        log = self.workdir / "libvirtd.log"
        LIBVIRTD_PID.unlink(missing_ok=True)
        proc = backends.start_process(["libvirtd", "-p", str(LIBVIRTD_PID)], log)
        self.processes["libvirtd"] = proc
        self.started["libvirtd"] = _wait_libvirt(self.uri, proc, log)


def _pid_of(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def _wait_libvirt(uri: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> int:
    """libvirtd's PID once it answers on ``uri``; its log's tail if it ends or stays silent."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            conn = libvirt.open(uri)
            conn.close()
            return proc.pid
        except libvirt.libvirtError as exc:
            last = str(exc)
        time.sleep(0.3)
    raise RuntimeError(f"libvirtd did not answer on {uri} within {timeout}s (exit status {proc.poll()}): {last}\n"
                       f"{backends.log_tail(log)}")


def _answers(uri: str) -> bool:
    try:
        libvirt.open(uri).close()
        return True
    except libvirt.libvirtError:
        return False


def start_backend(workdir: Path) -> Backend:
    """Start virtlogd + libvirtd (unless they run already), define the pool, network, image and ISO."""
    _libvirt_quiet()
    for tool in ("libvirtd", "virtlogd", "qemu-system-x86_64", "qemu-img", "nft", "dnsmasq", "modinfo"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            raise RuntimeError(f"{tool} is not installed: run scripts/backends/libvirt.sh as root")
    workdir.mkdir(parents=True, exist_ok=True)
    backend = Backend(workdir=workdir)
    if not _answers(URI):
        if _pid_of(VIRTLOGD_PID) is None:
            VIRTLOGD_PID.unlink(missing_ok=True)
            proc = backends.start_process(["virtlogd", "-p", str(VIRTLOGD_PID)], workdir / "virtlogd.log")
            backend.processes["virtlogd"], backend.started["virtlogd"] = proc, proc.pid
        backend.start_libvirtd()
    conn = libvirt.open(URI)
    try:
        _ensure_network(conn)
        _ensure_pool(conn)
        _ensure_image(conn)
    finally:
        conn.close()
    return backend


def stop_backend(backend: Backend, prefix: str) -> None:
    """Remove the domains/volumes named ``prefix``*, then stop the daemons started here (by PID)."""
    with contextlib.suppress(libvirt.libvirtError):
        conn = libvirt.open(backend.uri)
        cleanup(conn, prefix)
        if "libvirtd" in backend.started:  # leave the machine as found: no bridge, dnsmasq or rules
            with contextlib.suppress(libvirt.libvirtError):
                conn.networkLookupByName(NETWORK).destroy()
            subprocess.run(["nft", "delete", "table", "ip", "idcs_libvirt"], capture_output=True, check=False)
            _drop_libvirt_chains()
        conn.close()
    for name in ("libvirtd", "virtlogd"):
        pid = backend.started.get(name)
        if pid:
            proc = backend.processes.get(name)
            backends.stop_pid(pid, timeout=15, proc=proc if proc is not None and proc.pid == pid else None)


def _drop_libvirt_chains() -> None:
    """libvirt leaves its (empty) ``LIBVIRT_*`` iptables chains and the jumps to them behind."""
    for tool in ("iptables", "ip6tables"):
        if shutil.which(tool) is None:
            continue
        for table in ("filter", "nat", "mangle"):
            rules = subprocess.run([tool, "-t", table, "-S"], capture_output=True, text=True, check=False).stdout
            for line in rules.splitlines():
                parts = line.split()
                if parts[:1] == ["-A"] and len(parts) == 4 and parts[2] == "-j" and parts[3].startswith("LIBVIRT_"):
                    subprocess.run([tool, "-t", table, "-D", parts[1], "-j", parts[3]], capture_output=True,
                                   check=False)
            for line in rules.splitlines():
                parts = line.split()
                if parts[:1] == ["-N"] and parts[1].startswith("LIBVIRT_"):
                    subprocess.run([tool, "-t", table, "-F", parts[1]], capture_output=True, check=False)
                    subprocess.run([tool, "-t", table, "-X", parts[1]], capture_output=True, check=False)


def cleanup(conn: libvirt.virConnect, prefix: str) -> None:
    """Delete every domain and volume whose name starts with ``prefix`` (left by a failed test)."""
    for dom in conn.listAllDomains():
        if dom.name().startswith(prefix):
            with contextlib.suppress(libvirt.libvirtError):
                dom.destroy()
            with contextlib.suppress(libvirt.libvirtError):
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                                  | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
    with contextlib.suppress(libvirt.libvirtError):
        pool = conn.storagePoolLookupByName(POOL)
        pool.refresh(0)
        for vol in pool.listAllVolumes():
            if vol.name().startswith(prefix):
                with contextlib.suppress(libvirt.libvirtError):
                    vol.delete(0)


def _ensure_network(conn: libvirt.virConnect) -> None:
    try:
        net = conn.networkLookupByName(NETWORK)
    except libvirt.libvirtError:
        net = conn.networkDefineXML(
            f"<network><name>{NETWORK}</name><forward mode='nat'/><bridge name='{BRIDGE}' stp='off'/>"
            f"<ip address='{SUBNET}.1' netmask='255.255.255.0'><dhcp><range start='{SUBNET}.100' "
            f"end='{SUBNET}.250'/></dhcp></ip></network>")
    if not net.isActive():
        net.create()


def _ensure_pool(conn: libvirt.virConnect) -> None:
    POOL_DIR.mkdir(parents=True, exist_ok=True)
    try:
        pool = conn.storagePoolLookupByName(POOL)
    except libvirt.libvirtError:
        pool = conn.storagePoolDefineXML(f"<pool type='dir'><name>{POOL}</name><target><path>{POOL_DIR}</path>"
                                         "</target></pool>")
    if not pool.isActive():
        pool.create()


def _ensure_image(conn: libvirt.virConnect) -> None:
    """The base image (blank qcow2: the guest formats it at first boot) with its kernel and
    initramfs beside it, and a small ISO, in the pool."""
    vmlinuz, initrd = build_guest()
    for src, suffix in ((vmlinuz, ".vmlinuz"), (initrd, ".initrd")):
        dest = POOL_DIR / (IMAGE + suffix)
        if not dest.exists() or dest.read_bytes() != src.read_bytes():
            shutil.copyfile(src, dest)
    if not (POOL_DIR / IMAGE).exists():
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(POOL_DIR / IMAGE), "1G"], check=True)
    if not (POOL_DIR / ISO).exists():
        (POOL_DIR / ISO).write_bytes(_tiny_iso())
    conn.storagePoolLookupByName(POOL).refresh(0)


def _tiny_iso() -> bytes:
    """A minimal ISO 9660 volume (a primary descriptor and a terminator): enough for a CD-ROM."""
    sector = 2048
    pvd = bytearray(sector)
    pvd[0:6] = b"\x01CD001"
    pvd[6] = 1
    pvd[40:72] = b"IDCS_TEST".ljust(32)
    total = 20
    pvd[80:88] = total.to_bytes(4, "little") + total.to_bytes(4, "big")
    pvd[128:132] = sector.to_bytes(2, "little") + sector.to_bytes(2, "big")
    term = bytearray(sector)
    term[0:6] = b"\xffCD001"
    term[6] = 1
    return bytes(sector * 16) + bytes(pvd) + bytes(term) + bytes(sector * (total - 18))


# ---------------------------------------------------------------------- guest access


def guest_ip(conn: libvirt.virConnect, name: str, timeout: float = 60) -> str:
    """The address the guest ``name`` leased on the test network (waits for the lease)."""
    from idcs_libvirt import domainxml, network

    macs = domainxml.parse(conn.lookupByName(name).XMLDesc(0)).macs
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        table = network.addresses_by_mac(conn, {NETWORK})
        for mac in macs:
            if table.get(mac):
                return table[mac][0]
        time.sleep(0.5)
    raise AssertionError(f"{name} has no DHCP lease on {NETWORK} after {timeout}s")


def host_options() -> dict[str, object]:
    return {"pool": POOL, "network": NETWORK, "stop_timeout": 15}


def guest_http(conn: libvirt.virConnect, vm: str, path: str, body: str | None = None,
               timeout: float = 90) -> httpx.Response:
    """GET (or POST ``body`` to) the guest's web server, waiting for it to answer."""
    ip = guest_ip(conn, vm, timeout=timeout)
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if body is None:
                return httpx.get(f"http://{ip}{path}", timeout=5)
            return httpx.post(f"http://{ip}{path}", content=body.encode(), timeout=5)
        except httpx.HTTPError as exc:
            last = exc
            time.sleep(0.5)
    raise AssertionError(f"the guest {vm} ({ip}) did not answer {path} within {timeout}s: {last}")
