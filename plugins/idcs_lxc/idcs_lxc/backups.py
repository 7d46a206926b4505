"""Backups: a tar.gz of the container's ``config`` and ``rootfs`` plus a small JSON beside it.

Kept as ``<backup_dir>/<vm>/<backup>.tar.gz`` and ``<backup>.json`` (description, time); a
running container is frozen while it is archived, so the archive is consistent.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from idcs_core import errors
from idcs_core.types import BackupInfo, Progress, VMInfo, VMStatus
from idcs_lxc import lifecycle, naming, network
from idcs_lxc.client import Session

# $1 = backup_dir: one line per backup, "<vm>/<name>\t<size>\t<json>".
LIST_SCRIPT = r"""
[ -d "$1" ] || exit 0
cd "$1" && for j in */*.json; do
  [ -f "$j" ] || continue
  b=${j%.json}; [ -f "$b.tar.gz" ] || continue
  printf '%s\t%s\t%s\n' "$b" "$(stat -c %s "$b.tar.gz")" "$(tr -d '\n' < "$j")"
done
exit 0
"""


def _paths(session: Session, vm: str, backup: str) -> tuple[str, str]:
    base = f"{session.opts.backup_dir}/{vm}/{naming.check_item('backup', backup)}"
    return f"{base}.tar.gz", f"{base}.json"


def backup_create(session: Session, name: str, backup: str, description: str, progress: Progress) -> BackupInfo:
    archive, info = _paths(session, name, backup)
    state = lifecycle.read_status(session, name).power_state
    session.check(["mkdir", "-p", f"{session.opts.backup_dir}/{name}"], "make the backup folder")
    frozen = state == "RUNNING" and session.run(session.lxc("lxc-freeze", "-n", name)).code == 0
    try:
        progress(20, f"archiving {name}" + (" (frozen meanwhile)" if frozen else ""))
        session.check(["tar", "-czpf", f"{archive}.part", "--numeric-owner", "-C",
                       f"{session.opts.lxcpath}/{name}", "config", "rootfs"], f"archive {name}",
                      timeout=max(session.opts.timeout, 1800))
    finally:
        if frozen:
            session.run(session.lxc("lxc-unfreeze", "-n", name))
    created = datetime.now(UTC).isoformat(timespec="seconds")
    session.write_file(info, json.dumps({"description": description, "created_at": created}).encode(),
                       "write the backup's description")
    session.check(["mv", f"{archive}.part", archive], "keep the backup")
    size = session.run(["stat", "-c", "%s", archive]).out.strip()
    progress(100, "backup made")
    return BackupInfo(backup, name, description, int(size) if size.isdigit() else None, created)


def backup_restore(session: Session, name: str, backup: str, progress: Progress) -> VMInfo:
    archive, _ = _paths(session, name, backup)
    if session.run(["test", "-f", archive]).code != 0:
        raise errors.NotFound(f"backup {backup} of {name} is not on the host")
    was = lifecycle.read_status(session, name).status
    progress(10, f"stopping {name}")
    lifecycle.stop(session, name, force=True)
    root = f"{session.opts.lxcpath}/{name}"
    progress(30, "replacing the root file system")
    session.check(["rm", "-rf", "--one-file-system", f"{root}/rootfs"], f"clear the rootfs of {name}")
    session.check(["tar", "-xzpf", archive, "--numeric-owner", "-C", root], f"restore {backup}",
                  timeout=max(session.opts.timeout, 1800))
    if was in (VMStatus.RUNNING, VMStatus.PAUSED):
        progress(80, f"starting {name}")
        lifecycle.start(session, name)
        network.repoint(session, name)
    progress(100, "restored")
    return lifecycle.read_status(session, name)


def backup_delete(session: Session, name: str, backup: str) -> None:
    archive, info = _paths(session, name, backup)
    session.check(["rm", "-f", archive, info, f"{archive}.part"], f"delete backup {backup}")


def backup_list(session: Session) -> list[BackupInfo]:
    result = session.check(["sh", "-c", LIST_SCRIPT, "idcs-backups", session.opts.backup_dir], "list backups")
    found: list[BackupInfo] = []
    for line in result.out.splitlines():
        path, size, text = [*line.split("\t", 2), "", ""][:3]
        vm, _, backup = path.partition("/")
        try:
            meta = json.loads(text) if text else {}
        except ValueError:
            meta = {}
        found.append(BackupInfo(backup, vm, str(meta.get("description") or ""),
                                int(size) if size.isdigit() else None, meta.get("created_at")))
    return found
