"""The engine conformance kit (idcs_core.testing.kit) against the session's real LXD and Incus.

``backend`` is parametrised over both daemons, so every kit case runs once against LXD 5.0
and once against Incus 6.0, through the REST API of a real idcs server.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from idcs_lxd import guest, network, testing
from idcs_lxd.client import Client, open_client, wait_operation
from idcs_lxd.naming import instance_name

from idcs_core.testing.kit import EngineUnderTest, KitTests
from idcs_core.types import NatRule

# The guest's CPU count, then its memory limit in bytes (cgroup v1, else v2), from a cgroup mount of its own.
GUEST_RESOURCES = ('d=/tmp/idcs-kit-cgroup; mkdir -p $d; grep -q " $d " /proc/mounts || '
                   'mount -t cgroup -o memory none $d 2>/dev/null || mount -t cgroup2 none $d; '
                   'nproc; cat $d/memory.limit_in_bytes 2>/dev/null || cat $d/memory.max')


def _exec(client: Client, vm: str, command: list[str], stdin: bytes = b"") -> tuple[int, str]:
    result = guest.run(client, vm, command, stdin=stdin, timeout=60)
    return result.exit_code, result.stdout.decode(errors="replace")


@pytest.fixture(scope="module")
def idcs_engine(backend: testing.Backend, workdir: Path) -> Iterator[EngineUnderTest]:
    client = open_client(str(backend.socket_path))

    def write_file(vm: str, path: str, text: str) -> None:
        code, out = _exec(client, vm, ["sh", "-c", 'mkdir -p "$(dirname "$2")" && printf %s "$1" > "$2"', "_",
                                       text, path])
        assert code == 0, out

    def read_file(vm: str, path: str) -> str | None:
        code, out = _exec(client, vm, ["cat", path])
        return out if code == 0 else None

    def make_foreign(name: str) -> None:
        op = client.api.instances.post(json={"name": name, "source": {"type": "image", "alias": backend.image_alias},
                                             "profiles": ["default"]})
        wait_operation(client, op.json()["operation"], timeout=60)
        op = client.api.instances[name].state.put(json={"action": "start", "timeout": 30})
        wait_operation(client, op.json()["operation"], timeout=60)

    def remove_foreign(name: str) -> None:
        with contextlib.suppress(Exception):
            op = client.api.instances[name].state.put(json={"action": "stop", "force": True, "timeout": 30})
            wait_operation(client, op.json()["operation"], timeout=60)
        with contextlib.suppress(Exception):
            op = client.api.instances[name].delete()
            wait_operation(client, op.json()["operation"], timeout=60)

    def guest_resources(vm: str) -> tuple[int | None, int | None]:
        """``nproc`` (LXD pins limits.cpu as a CPU set) and the memory cgroup's limit, which the
        busybox guest mounts itself (no lxcfs here: /proc/meminfo shows the host's memory)."""
        code, out = _exec(client, vm, ["sh", "-c", GUEST_RESOURCES])
        assert code == 0, out
        words = out.split()
        ram = int(words[1]) // 2**20 if len(words) > 1 and words[1].isdigit() else None
        return int(words[0]), ram

    def drop_forward(vm: str, host_port: int, protocol: str) -> None:
        """The rule's proxy device removed from the instance behind OpenIDCS's back (``lxc config device remove``)."""
        inst = client.instances.get(instance_name(vm))
        inst.devices.pop(network.device_name(NatRule(host_port, 0, protocol)))
        inst.save(wait=True)

    # SIGSTOP freezes the daemon: it stops answering without losing anything. Only a daemon this
    # session started is frozen; one another session started is shared (the offline case skips).
    pid = backend.pid
    take_down = bring_up = None
    if pid is not None:
        def take_down() -> None:
            os.kill(pid, signal.SIGSTOP)

        def bring_up() -> None:
            os.kill(pid, signal.SIGCONT)
    yield EngineUnderTest(
        server_type="LXD", server_addr=str(backend.socket_path), server_user="", server_pass="",
        options={"nat_listen": "127.0.0.1", "cert_dir": str(workdir / "certs")},
        image=backend.image_alias, unreachable_addr=str(workdir / "no-such-daemon" / "unix.socket"),
        write_file=write_file, read_file=read_file, disk_path="/mnt/{disk}",
        http_port=80, http_body="idcs-busybox",
        make_foreign_vm=make_foreign, remove_foreign_vm=remove_foreign,
        take_down=take_down, bring_up=bring_up,
        # containers have no CD-ROM: LXD mounts ISOs only on virtual machines, which need KVM
        unsupported=frozenset({"iso"}),
        vm_spec={"cpu_num": 1, "ram_num": 128, "hdd_num": 1}, host_timeout=3.0,
        # limits.memory applies at once, but LXD pins a limits.cpu count to CPUs by its own balancer,
        # which may leave a running container on its old CPU set: the guest is sure to see both
        # after a restart
        guest_resources=guest_resources, update_applies="restart",
        drop_forward=drop_forward,
    )
    testing.cleanup(backend, "kit-")  # whatever a failed case left behind


class TestLXDKit(KitTests):
    """Every applicable kit case, through the REST API of a real server, on LXD and on Incus."""
