"""Where new VMs and disks go: the datastore and port group the host options name, or defaults."""

from __future__ import annotations

from pyVmomi import vim

from idcs_core import errors
from idcs_esxi.client import Connection
from idcs_esxi.props import read_view


def datastore(conn: Connection) -> vim.Datastore:
    """The datastore the option names, else the accessible one with most free space."""
    rows = read_view(conn, conn.ds_view, vim.Datastore, ["name", "summary.freeSpace", "summary.accessible"])
    wanted = conn.options.datastore
    if wanted:
        for row in rows:
            if row.get("name") == wanted:
                return row.obj
        names = ", ".join(sorted(str(r.get("name")) for r in rows))
        raise errors.BadRequest(f"host option datastore: no datastore {wanted!r} (there are: {names})")
    usable = [r for r in rows if r.get("summary.accessible", True)]
    if not usable:
        raise errors.VMOperationFailed(f"host {conn.host.name} has no accessible datastore")
    return max(usable, key=lambda r: int(r.get("summary.freeSpace") or 0)).obj


def network(conn: Connection) -> vim.Network:
    """The port group the option names, else the datacenter's first network."""
    nets = list(conn.datacenter.network)
    wanted = conn.options.network
    if wanted:
        for net in nets:
            if net.name == wanted:
                return net
        raise errors.BadRequest(f"host option network: no port group {wanted!r}")
    if not nets:
        raise errors.VMOperationFailed(f"host {conn.host.name} has no network")
    return nets[0]
