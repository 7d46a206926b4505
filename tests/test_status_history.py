"""The billing dialect's status history: samples with an ISO time and the same instant as epoch seconds."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from helpers import create_vm

from idcs_core.testing.server import ApiClient


def test_history_samples_carry_epoch_timestamps(admin: ApiClient, host: str) -> None:
    create_vm(admin, host, "hist1")
    before = int(time.time())
    status = admin.get(f"/api/client/status/{host}/hist1", params={"limit": 5})
    assert status["power_status"] == status["status"] == "running"
    assert status["history"], status
    sample = status["history"][-1]
    assert isinstance(sample["timestamp"], int) and abs(sample["timestamp"] - before) <= 5
    parsed = datetime.fromisoformat(sample["time"].replace("Z", "+00:00"))
    assert int(parsed.astimezone(UTC).timestamp()) == sample["timestamp"]
    admin.run_task("DELETE", f"/api/client/delete/{host}/hist1")
