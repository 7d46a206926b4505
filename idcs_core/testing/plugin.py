"""The pytest plugin of idcs-core (entry point ``pytest11: idcs``), loaded by every pytest run
in an environment where idcs-core is installed.

It only declares what the conformance kit needs pytest to know about; the kit's cases
and fixtures live in ``idcs_core.testing.kit`` and run where a test module subclasses
``KitTests`` (see docs/writing-an-engine.md). Nothing here starts a server or imports an
engine, so loading it costs nothing.
"""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "idcs_hooks(*names): the engine hooks a conformance-kit case exercises")
