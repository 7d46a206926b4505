"""Session-wide fixtures shared by the core, kit and engine tests: each real back end is
started once per test session (and stopped by its PID), whichever tests ask for it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session")
def oci_backend() -> Iterator[Any]:
    """A private Docker Engine with a busybox image (``idcs_oci.testing``); fails loudly if absent."""
    from idcs_oci.testing import docker_backend

    with docker_backend() as backend:
        yield backend


@pytest.fixture(scope="session")
def podman_service() -> Iterator[Any]:
    """A private rootful Podman service (Docker-compatible API) with a busybox image
    (``idcs_oci.testing.podman_backend``); fails loudly if absent."""
    from idcs_oci.testing import podman_backend

    with podman_backend() as backend:
        yield backend
