"""The vcsim simulator for this engine's tests and benchmark: built offline from Debian's
govmomi sources with the project's patch, cached by a hash of its inputs, started and
stopped by PID.

Inputs: ``tests/vcsim/main.go`` (our small main) and ``tests/vcsim/simulator-0.24.2.patch``
(two simulator fixes), applied to a copy of ``/usr/share/gocode/src/github.com/vmware/govmomi``
(package ``golang-github-vmware-govmomi-dev``, installed by ``scripts/backends/esxi.sh``).
The binary lands in ``~/.cache/idcs/esxi/<hash>/vcsim``; nothing of the simulator's source
is kept in the repository.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from idcs_core.testing import backends
from idcs_core.testing.backends import free_port

GOVMOMI = Path("/usr/share/gocode/src/github.com/vmware/govmomi")
GOCODE = Path("/usr/share/gocode")
SOURCES = Path(__file__).resolve().parent.parent / "tests" / "vcsim"
CACHE = Path(os.environ.get("IDCS_CACHE_DIR", Path.home() / ".cache" / "idcs")) / "esxi"
USER, PASSWORD = "administrator", "Vcsim-Test-Pass-1"
ISO_FILES = ("iso/debian-12.iso", "iso/ubuntu 22.04.iso")
TEMPLATE = "debian-12-template"


class VcsimError(RuntimeError):
    """vcsim could not be built or started (the message says why and what to install)."""


def _inputs_hash() -> str:
    digest = hashlib.sha256()
    for path in (SOURCES / "main.go", SOURCES / "simulator-0.24.2.patch"):
        digest.update(path.read_bytes())
    version = GOVMOMI / "go.mod"
    digest.update(version.read_bytes() if version.exists() else b"")
    go = shutil.which("go")
    digest.update(subprocess.run([go, "version"], capture_output=True, check=False).stdout if go else b"")
    return digest.hexdigest()[:16]


def build() -> Path:
    """The patched vcsim binary, built once and cached (about 20 s to 2 min on 2 cores)."""
    if not (SOURCES / "main.go").is_file():
        raise VcsimError(f"vcsim's main and patch are not at {SOURCES}: run the tests from the repository")
    if shutil.which("go") is None or not (GOVMOMI / "simulator").is_dir():
        raise VcsimError("vcsim needs Go and the govmomi sources: run scripts/backends/esxi.sh as root "
                         "(apt-get install golang-go golang-github-vmware-govmomi-dev)")
    target = CACHE / _inputs_hash()
    binary = target / "vcsim"
    if binary.is_file():
        return binary
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="build-", dir=target) as tmp:
        gopath = Path(tmp) / "gopath"
        copy = gopath / "src" / "github.com" / "vmware" / "govmomi"
        shutil.copytree(GOVMOMI, copy, symlinks=True)
        patched = subprocess.run(["patch", "-p1", "-d", str(copy), "-i", str(SOURCES / "simulator-0.24.2.patch")],
                                 capture_output=True, text=True, check=False)
        if patched.returncode != 0:
            raise VcsimError(f"the simulator patch does not apply: {patched.stdout}{patched.stderr}")
        env = os.environ | {"GOPATH": f"{gopath}:{GOCODE}", "GO111MODULE": "off", "GOPROXY": "off",
                            "GOFLAGS": "", "GOCACHE": str(CACHE / "gocache"), "CGO_ENABLED": "0"}
        out = Path(tmp) / "vcsim"
        built = subprocess.run(["go", "build", "-o", str(out), str(SOURCES / "main.go")], env=env,
                               capture_output=True, text=True, check=False, cwd=tmp)
        if built.returncode != 0:
            raise VcsimError(f"building vcsim failed:\n{built.stderr[-3000:]}")
        os.replace(out, binary)
    return binary


@dataclass
class Vcsim:
    """A running simulator: its model, address, credentials and process."""

    model: str
    port: int
    process: subprocess.Popen[bytes]
    url: str
    log: Path
    user: str = USER
    password: str = field(default=PASSWORD, repr=False)

    @property
    def addr(self) -> str:
        """The ``server_addr`` of a host record for it."""
        return f"https://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM by PID (the simulator removes its temporary datastores), SIGKILL if it lingers."""
        if self.process.poll() is None:
            backends.stop_pid(self.process.pid, timeout=10, proc=self.process)

    def log_tail(self) -> str:
        return backends.log_tail(self.log)


def start(model: str, workdir: Path, vms: int = 2, port: int | None = None) -> Vcsim:
    """Start vcsim (``vpx`` or ``esx``) with ``vms`` VMs per host and the test ISO files."""
    binary = build()
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log = workdir / f"vcsim-{model}-{port}.log"
    scratch = workdir / f"tmp-{port}"
    scratch.mkdir()
    process = backends.start_process(
        [str(binary), "-model", model, "-listen", f"127.0.0.1:{port}", "-user", USER, "-pass", PASSWORD,
         "-vms", str(vms), "-iso", ",".join(ISO_FILES)],
        log, env=os.environ | {"TMPDIR": str(scratch)})  # its datastores' folders: gone with workdir
    sim = Vcsim(model=model, port=port, process=process, url="", log=log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise VcsimError(f"vcsim exited with {process.returncode}:\n{sim.log_tail()}")
        first = log.read_text(errors="replace").splitlines()
        if first and first[0].startswith("http"):
            sim.url = first[0].strip()
            return sim
        time.sleep(0.05)
    sim.stop()
    raise VcsimError(f"vcsim did not print its URL within 60 s:\n{sim.log_tail()}")


@contextlib.contextmanager
def running(model: str, workdir: Path, vms: int = 2) -> Iterator[Vcsim]:
    sim = start(model, workdir, vms)
    try:
        yield sim
    finally:
        sim.stop()


def service_instance(sim: Vcsim) -> Any:
    """A pyvmomi ``ServiceInstance`` logged in to the simulator (test set-up, the benchmark)."""
    from pyVim.connect import SmartConnect

    return SmartConnect(host="127.0.0.1", port=sim.port, user=sim.user, pwd=sim.password,
                        disableSslCertValidation=True)


def make_template(sim: Vcsim, name: str = TEMPLATE) -> None:
    """Clone the model's first VM (powered off) into a template called ``name``."""
    from pyVim.connect import Disconnect
    from pyVim.task import WaitForTask
    from pyVmomi import vim

    si = service_instance(sim)
    try:
        content = si.RetrieveContent()
        view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
        vms = {vm.name: vm for vm in view.view}
        view.DestroyView()
        if name in vms:
            return
        source = sorted(vms.items())[0][1]
        pool = source.resourcePool
        dc = next(e for e in content.rootFolder.childEntity if isinstance(e, vim.Datacenter))
        spec = vim.vm.CloneSpec(location=vim.vm.RelocateSpec(pool=pool), powerOn=False, template=False)
        WaitForTask(source.CloneVM_Task(folder=dc.vmFolder, name=name, spec=spec))
        clone = next(vm for vm in dc.vmFolder.childEntity if getattr(vm, "name", None) == name)
        if clone.runtime.powerState != vim.VirtualMachine.PowerState.poweredOff:
            WaitForTask(clone.PowerOffVM_Task())
        clone.MarkAsTemplate()
    finally:
        Disconnect(si)


def make_vm(sim: Vcsim, name: str) -> None:
    """Create a small VM straight on the simulator, behind OpenIDCS's back."""
    from pyVim.connect import Disconnect
    from pyVim.task import WaitForTask
    from pyVmomi import vim

    si = service_instance(sim)
    try:
        content = si.RetrieveContent()
        dc = next(e for e in content.rootFolder.childEntity if isinstance(e, vim.Datacenter))
        compute = next(e for e in dc.hostFolder.childEntity if isinstance(e, vim.ComputeResource))
        store = compute.datastore[0].name
        config = vim.vm.ConfigSpec(name=name, guestId="otherLinux64Guest", numCPUs=1, memoryMB=64,
                                   files=vim.vm.FileInfo(vmPathName=f"[{store}]"))
        WaitForTask(dc.vmFolder.CreateVM_Task(config=config, pool=compute.resourcePool))
    finally:
        Disconnect(si)


def remove_vm(sim: Vcsim, name: str) -> None:
    """Power off and destroy the VM ``name`` if the simulator has it."""
    from pyVim.connect import Disconnect
    from pyVim.task import WaitForTask
    from pyVmomi import vim

    si = service_instance(sim)
    try:
        content = si.RetrieveContent()
        view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
        for vm in view.view:
            if vm.name == name:
                if vm.runtime.powerState != vim.VirtualMachine.PowerState.poweredOff:
                    WaitForTask(vm.PowerOffVM_Task())
                WaitForTask(vm.Destroy_Task())
        view.DestroyView()
    finally:
        Disconnect(si)


@dataclass
class PlainVnc:
    """A real VNC server (TigerVNC's Xvnc, no authentication) standing in for the VNC
    console an ESXi host serves for a VM: vcsim simulates the API, not the consoles."""

    port: int
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.process.poll() is None:
            backends.stop_pid(self.process.pid, timeout=10, proc=self.process)


def start_vnc(workdir: Path) -> PlainVnc:
    """Start Xvnc on a free display and port; fails loudly when it is not installed."""
    xvnc = shutil.which("Xvnc")
    if xvnc is None:
        raise VcsimError("Xvnc not found: apt-get install tigervnc-standalone-server (scripts/install-backends.sh)")
    display = next(n for n in range(40, 200) if not Path(f"/tmp/.X{n}-lock").exists()
                   and not Path(f"/tmp/.X11-unix/X{n}").exists())
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / f"xvnc-{port}.log"
    process = backends.start_process([xvnc, f":{display}", "-geometry", "640x480", "-rfbport", str(port), "-localhost",
                                      "-SecurityTypes", "None", "-nolisten", "tcp", "-desktop", "esxi-vm-console"], log)
    vnc = PlainVnc(port, process)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return vnc
        if process.poll() is not None:
            break
        time.sleep(0.05)
    vnc.stop()
    raise VcsimError(f"Xvnc did not listen on {port}:\n{backends.log_tail(log)}")
