"""Test set-up for the LXC engine: the bridge, a busybox rootfs image, and an sshd of the test's own.

Used by ``tests/conftest.py`` and ``bench/lxc_vm_list.py``. Everything the set-up makes lives in
folders it is given (or the cache ``~/.cache/idcs/lxc/<hash>``); daemons are stopped by PID.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from idcs_core.testing.backends import free_port, log_tail, start_process, stop_pid
from idcs_core.types import HostSpec

PREFIX = "lxct-"  # every container the tests make is named so
HTTP_BODY = "idcs-busybox"
IMAGE = "idcs-busybox.tar.gz"
BRIDGE = "lxcbr0"

INITTAB = "::sysinit:/etc/init.d/rcS\n::shutdown:/bin/sync\n"
RCS = f"""#!/bin/sh
ip link set lo up
udhcpc -b -i eth0 -s /etc/udhcpc.sh >/dev/null 2>&1
mkdir -p /www && echo {HTTP_BODY} > /www/index.html
httpd -p 80 -h /www
"""
UDHCPC = """#!/bin/sh
case "$1" in
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "$router" ] && ip route replace default via "${router%% *}"
    ;;
esac
exit 0
"""
# chpasswd for an image that has busybox only: "user:password" lines on stdin (never argv)
CHPASSWD = """#!/bin/sh
while IFS= read -r line; do
  user=${line%%:*}; pass=${line#*:}
  hash=$(printf '%s\\n' "$pass" | mkpasswd -m sha512 -P 0) || exit 1
  awk -F: -v u="$user" -v h="$hash" 'BEGIN{OFS=":"} $1==u{$2=h} {print}' /etc/shadow > /etc/shadow.new || exit 1
  cat /etc/shadow.new > /etc/shadow && rm -f /etc/shadow.new
done
"""
CONF = """lxc.include = /usr/share/lxc/config/common.conf
lxc.signal.halt = SIGUSR2
lxc.signal.reboot = SIGTERM
lxc.autodev = 1
lxc.tty.max = 1
lxc.mount.auto = cgroup:mixed proc:mixed sys:ro
"""


def _busybox() -> Path:
    path = Path(shutil.which("busybox") or "/bin/busybox")
    if not path.exists():
        raise RuntimeError("busybox is not installed: run scripts/backends/lxc.sh (busybox-static)")
    return path


def build_image(cache_root: Path | None = None) -> Path:
    """A busybox rootfs tarball serving ``HTTP_BODY`` on port 80, with chpasswd; cached by content.

    Returns the folder to use as the host's ``image_dir`` (it holds ``IMAGE`` and its ``.conf``).
    """
    busybox = _busybox()
    inputs = hashlib.sha256(busybox.read_bytes() + (INITTAB + RCS + UDHCPC + CHPASSWD + CONF).encode()).hexdigest()
    folder = (cache_root or Path.home() / ".cache" / "idcs" / "lxc") / inputs[:16]
    if (folder / IMAGE).exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    applets = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, check=True).stdout.split()
    tmp = folder / f"{IMAGE}.part"
    with tarfile.open(tmp, "w:gz") as tar:
        def add(name: str, data: str | bytes, mode: int = 0o644) -> None:
            raw = data.encode() if isinstance(data, str) else data
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(raw), mode, int(time.time())
            tar.addfile(info, fileobj=__import__("io").BytesIO(raw))

        def directory(name: str, mode: int = 0o755) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)

        def link(name: str, target: str) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)

        for d in ("bin", "sbin", "etc", "etc/init.d", "proc", "sys", "dev", "tmp", "root", "mnt", "var", "run",
                  "usr", "usr/sbin", "www"):
            directory(d, 0o1777 if d == "tmp" else 0o755)
        add("bin/busybox", busybox.read_bytes(), 0o755)
        for applet in applets:
            if applet != "busybox":
                link(f"bin/{applet}", "busybox")
        link("sbin/init", "../bin/busybox")
        add("etc/inittab", INITTAB)
        add("etc/init.d/rcS", RCS, 0o755)
        add("etc/udhcpc.sh", UDHCPC, 0o755)
        add("usr/sbin/chpasswd", CHPASSWD, 0o755)
        add("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n")
        add("etc/group", "root:x:0:\n")
        add("etc/shadow", "root:*:19000:0:99999:7:::\n", 0o600)
    tmp.replace(folder / IMAGE)
    (folder / IMAGE.replace(".tar.gz", ".conf")).write_text(CONF)
    return folder


def ensure_bridge() -> bool:
    """Bring up lxcbr0 with lxc-net if it is not there; True if this call started it."""
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        return False
    done = subprocess.run(["/usr/libexec/lxc/lxc-net", "start"], capture_output=True, text=True)
    if done.returncode != 0 or not Path(f"/sys/class/net/{BRIDGE}").exists():
        raise RuntimeError(f"lxc-net start failed: {done.stderr or done.stdout}")
    return True


def stop_bridge() -> None:
    subprocess.run(["/usr/libexec/lxc/lxc-net", "stop"], capture_output=True)


@dataclass
class Sshd:
    """An sshd of the test's own on a loopback port, with a generated host key and client key."""

    folder: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    host_key_line: str = ""
    client_key: Path = field(default_factory=Path)

    @property
    def addr(self) -> str:
        return f"ssh://root@127.0.0.1:{self.port}"

    def prepare(self) -> Sshd:
        self.folder.mkdir(parents=True, exist_ok=True)
        host_key = self.folder / "host_ed25519"
        self.client_key = self.folder / "client_ed25519"
        for key in (host_key, self.client_key):
            if not key.exists():
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        (self.folder / "authorized_keys").write_text((self.folder / "client_ed25519.pub").read_text())
        os.chmod(self.folder / "authorized_keys", 0o600)
        self.host_key_line = " ".join((self.folder / "host_ed25519.pub").read_text().split()[:2])
        self.port = self.port or free_port()
        (self.folder / "sshd_config").write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}",
            f"PidFile {self.folder / 'sshd.pid'}", f"AuthorizedKeysFile {self.folder / 'authorized_keys'}",
            "PermitRootLogin yes", "PasswordAuthentication yes", "KbdInteractiveAuthentication no",
            "UsePAM no", "StrictModes no", "MaxSessions 100", "MaxStartups 100", "LogLevel ERROR", ""]))
        Path("/run/sshd").mkdir(exist_ok=True)
        return self

    def start(self) -> Sshd:
        sshd = shutil.which("sshd") or "/usr/sbin/sshd"
        if not Path(sshd).exists():
            raise RuntimeError("sshd is not installed: run scripts/backends/lxc.sh (openssh-server)")
        log = self.folder / "sshd.log"
        self.process = start_process([sshd, "-D", "-e", "-f", str(self.folder / "sshd_config")], log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return self
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"sshd did not start:\n{log_tail(log)}")

    def stop(self) -> None:
        """Stop the daemon and every session it started (by PID), as a host going down would."""
        if self.process is None:
            return
        for pid in descendants(self.process.pid):  # its sessions die at once, like the host's power
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        stop_pid(self.process.pid, timeout=10, proc=self.process)
        self.process = None


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (entry / "stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def destroy_all(lxcpath: str, prefix: str = "") -> None:
    """Remove the containers under ``lxcpath`` (named ``prefix``*), forced."""
    root = Path(lxcpath)
    if not root.is_dir():
        return
    for config in root.glob(f"{prefix}*/config"):
        name = config.parent.name
        subprocess.run(["lxc-stop", "-P", lxcpath, "-k", "-n", name], capture_output=True)
        subprocess.run(["lxc-destroy", "-P", lxcpath, "-f", "-n", name], capture_output=True)


def drop_table(table: str) -> None:
    subprocess.run(["nft", "delete", "table", "ip", table], capture_output=True)


@dataclass
class Backend:
    """The session's LXC set-up."""

    root: Path
    lxcpath: str
    image_dir: str
    table: str
    sshd: Sshd

    def options(self, mode: str, **extra: Any) -> dict[str, Any]:
        opts: dict[str, Any] = {"lxcpath": self.lxcpath, "image_dir": self.image_dir, "nft_table": self.table,
                                "backup_dir": str(self.root / "backups"), "disk_dir": str(self.root / "disks")}
        if mode == "ssh":
            opts.update(ssh_key=str(self.sshd.client_key), known_hosts=str(self.root / "pins.json"))
        return {**opts, **extra}

    def addr(self, mode: str) -> str:
        return "local" if mode == "local" else self.sshd.addr

    def host(self, mode: str, name: str | None = None, password: str = "", **extra: Any) -> HostSpec:
        return HostSpec(name or f"lxct-{mode}", "Containers", self.addr(mode), "root", password,
                        self.options(mode, **extra))

    def attach(self, vm: str, argv: list[str], stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(["lxc-attach", "-P", self.lxcpath, "-n", vm, "--clear-env", "--", *argv],
                              input=stdin, capture_output=True, timeout=60)
