"""Session set-up: real LXC 5.0 on this machine, driven locally and over an sshd of the test's own.

Containers live in a private lxcpath, NAT rules in a private nftables table, so nothing another
test or helper made is touched. The bridge comes from ``lxc-net`` (started here if missing and then
stopped at the end), the busybox image is built once and cached. A missing tool FAILS the session.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from idcs_lxc import testing
from idcs_lxc.testing import Backend

TOOLS = ("lxc-create", "lxc-attach", "nft", "sshd", "ssh-keygen", "busybox")


@pytest.fixture(scope="session")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists()]
    if missing:
        pytest.fail(f"LXC back end missing {missing}: run scripts/backends/lxc.sh as root", pytrace=False)
    root = tmp_path_factory.mktemp("lxc")
    started_bridge = testing.ensure_bridge()
    image_dir = testing.build_image()
    table = f"idcslxct_{os.getpid()}_{secrets.token_hex(2)}"
    sshd = testing.Sshd(root / "sshd").prepare().start()
    backend = Backend(root=root, lxcpath=str(root / "containers"), image_dir=str(image_dir), table=table,
                      sshd=sshd)
    Path(backend.lxcpath).mkdir()
    try:
        yield backend
    finally:
        testing.destroy_all(backend.lxcpath)
        testing.drop_table(table)
        backend.sshd.stop()
        if started_bridge:
            testing.stop_bridge()
