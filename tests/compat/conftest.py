"""One real server (HTTPS, subprocess) on a real Docker Engine for the billing module tests."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from modules import DockerWorld

from idcs_core.testing.server import LiveServer, free_port


@pytest.fixture(scope="session")
def docker_world(oci_backend: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerWorld]:
    folder = tmp_path_factory.mktemp("modules")
    port = free_port()  # console links are absolute under the public URL, as an operator configures it
    with LiveServer(Path(folder), subprocess_mode=True, tls=True, port=port,
                    env={"IDCS_LOAD_ENGINES": "OCInterface", "IDCS_PUBLIC_URL": f"https://127.0.0.1:{port}"}) as srv:
        admin = srv.admin()
        spec = oci_backend.host_spec()
        yield DockerWorld(srv, admin, spec.addr, spec.options, oci_backend.image, oci_backend.client())
        admin.close()
