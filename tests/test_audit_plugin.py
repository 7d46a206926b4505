"""The audit log is written by its default event plugin, and by nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

from idcs_core.config import Config
from idcs_core.context import CoreContext
from idcs_core.plugins import PluginRegistry
from idcs_core.services import audit
from idcs_core.testing.databases import database_url, drop_postgres_schema


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_entries_come_from_the_audit_log_plugin(tmp_path: Path, kind: str) -> None:
    registry = PluginRegistry()
    url = database_url(kind, tmp_path)
    core = await CoreContext.start(Config(data_dir=tmp_path, database_url=url, admin_password="Core11-pw-1234"),
                                   registry, serve=False)
    try:
        names = [n for n, _p in registry.events.list_name_plugin() if n.startswith("audit-log@")]
        assert len(names) == 1
        await core.audit("alice", "thing.do", "target-1", detail="first")
        assert [(e.username, e.action, e.target, e.detail) for e in await audit.latest(core, 5)] == [
            ("alice", "thing.do", "target-1", "first")]
        registry.events.unregister(name=names[0])  # without the plugin, an action leaves no entry
        await core.audit("alice", "thing.do", "target-2")
        assert [e.target for e in await audit.latest(core, 5)] == ["target-1"]
    finally:
        await core.stop()
        if kind == "postgresql":
            drop_postgres_schema(url)
    assert not [n for n, _p in registry.events.list_name_plugin() if n.startswith("audit-log@")]
