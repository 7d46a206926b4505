"""Session fixture: one vmrest stand-in process for all of the engine's tests, stopped by PID."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from vmrest_standin.launch import StandIn, start


@pytest.fixture(scope="session")
def vmrest() -> Iterator[StandIn]:
    standin = start()
    yield standin
    standin.stop()
