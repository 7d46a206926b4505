"""Extra disks: host directories bind-mounted at ``/mnt/<disk>`` (containers have no CD-ROM: no ISO hooks).

A disk is the directory ``<disk_dir>/<vm>/<disk>``; attaching adds an ``lxc.mount.entry`` to the
managed block of the config. Mount entries apply when the container starts, so attaching to or
detaching from a running container restarts it (said through ``progress`` first).
"""

from __future__ import annotations

from idcs_core.types import DiskSpec, Progress, VMStatus
from idcs_lxc import lifecycle, naming
from idcs_lxc.client import Session


def _restart_if_running(session: Session, name: str, was: str) -> None:
    if was == VMStatus.RUNNING:
        lifecycle.stop(session, name, force=True)
        lifecycle.start(session, name)
        from idcs_lxc import network

        network.repoint(session, name)


def disk_attach(session: Session, name: str, disk: DiskSpec, progress: Progress) -> None:
    naming.check_item("disk", disk.name)
    meta = lifecycle.read_meta(session, name)
    was = lifecycle.read_status(session, name).status
    session.check(["mkdir", "-p", f"{session.opts.disk_dir}/{name}/{disk.name}"], f"make the disk {disk.name}")
    if disk.name in meta.mounted:
        meta.disks.setdefault(disk.name, disk.size_gb)
        lifecycle.write_meta(session, name, meta)
        return
    if was == VMStatus.RUNNING:
        progress(10, f"the container {name} restarts to mount the disk at /mnt/{disk.name}")
    meta.disks[disk.name] = disk.size_gb
    meta.mounted.append(disk.name)
    lifecycle.write_meta(session, name, meta)
    _restart_if_running(session, name, was)
    progress(100, f"disk {disk.name} mounted at /mnt/{disk.name}")


def disk_detach(session: Session, name: str, disk_name: str, progress: Progress) -> None:
    naming.check_item("disk", disk_name)
    meta = lifecycle.read_meta(session, name)
    if disk_name not in meta.mounted:
        return
    was = lifecycle.read_status(session, name).status
    if was == VMStatus.RUNNING:
        progress(10, f"the container {name} restarts to unmount /mnt/{disk_name}")
    meta.mounted.remove(disk_name)
    lifecycle.write_meta(session, name, meta)
    _restart_if_running(session, name, was)
    progress(100, f"disk {disk_name} unmounted; its data is kept")


def disk_delete(session: Session, name: str, disk_name: str, progress: Progress) -> None:
    naming.check_item("disk", disk_name)
    disk_detach(session, name, disk_name, progress)
    meta = lifecycle.read_meta(session, name)
    if meta.disks.pop(disk_name, None) is not None:
        lifecycle.write_meta(session, name, meta)
    session.check(["rm", "-rf", "--one-file-system", f"{session.opts.disk_dir}/{name}/{disk_name}"],
                  f"delete the disk {disk_name}")
    progress(100, f"disk {disk_name} deleted")

