"""One real cluster per session: three API nodes and one worker on a fresh PostgreSQL schema of
their own, HAProxy round robin in front, the session's Docker Engine (``oci_backend``) as the
one host. See ``idcs_core.testing.cluster``."""

from __future__ import annotations

import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from clusterlab import World

from idcs_core.testing.cluster import Cluster
from idcs_core.testing.databases import drop_postgres_schema, fresh_postgres_url


@pytest.fixture(scope="session")
def world(oci_backend: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    url = fresh_postgres_url()
    folder = Path(tmp_path_factory.mktemp("cluster"))
    cluster = Cluster(folder, url, nodes=3, workers=1, env={"IDCS_LOAD_ENGINES": "OCInterface"})
    dc = oci_backend.client()
    try:
        cluster.start()
        admin = cluster.admin()
        spec = oci_backend.host_spec()
        hs = f"cl{secrets.token_hex(3)}"
        admin.post("/api/server/create", {"server_name": hs, "server_type": "OCInterface", "server_addr": spec.addr,
                                          "server_user": "", "server_pass": "",
                                          "options": spec.options | {"nat_bind": "127.0.0.1"}})
        yield World(cluster, admin, hs, oci_backend.image, dc)
        admin.close()
    finally:
        cluster.stop()
        dc.close()
        drop_postgres_schema(url)
