"""A VM's backups as the contract shows them (with the billing dialect's ``vm_back`` / ``vm_tips``)."""

from __future__ import annotations

from typing import Any

from idcs_core.aliases import BACKUP, aliased
from idcs_core.services.backups import BackupRecord, BackupStarted


def backup(b: BackupRecord) -> dict[str, Any]:
    return aliased({"backup_name": b.backup_name, "vm_uuid": b.vm_uuid, "description": b.description,
                    "size_bytes": b.size_bytes, "status": b.status, "created_at": b.created_at}, BACKUP)


def backups(items: list[BackupRecord]) -> list[dict[str, Any]]:
    return [backup(b) for b in items]


def create_started(started: BackupStarted) -> dict[str, Any]:
    """A backup under way: its task and the new backup's name (known at once)."""
    return aliased({"task_id": started.task_id, "backup_name": started.backup_name}, BACKUP)


def restore_started(started: BackupStarted) -> dict[str, Any]:
    return {"task_id": started.task_id, "backup_name": started.backup_name}
