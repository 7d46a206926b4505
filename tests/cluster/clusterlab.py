"""What the cluster tests share: the running world they act on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import docker

from idcs_core.testing.cluster import Cluster
from idcs_core.testing.server import ApiClient


@dataclass
class World:
    """The running cluster, an admin client through HAProxy, the host's name and the Docker daemon."""

    cluster: Cluster
    admin: ApiClient
    hs: str
    image: str
    docker: docker.DockerClient

    def containers(self, prefix: str) -> set[str]:
        """Names of the VM containers on Docker whose name starts with ``prefix`` (NAT forwarders and
        other helpers are not VMs: they carry no ``idcs.vm_uuid`` label)."""
        found = self.docker.containers.list(all=True, filters={"label": "idcs.vm_uuid"})
        return {str(c.name) for c in found if str(c.name).startswith(prefix)}

    def vm_body(self, vm: str) -> dict[str, Any]:
        return {"vm_uuid": vm, "os_name": self.image, "cpu_num": 1, "ram_num": 64, "hdd_num": 1}
