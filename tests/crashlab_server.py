"""``idcs serve`` with the crash-point engines of ``crashlab`` (tests only).

    CRASHLAB_DIR=<dir> python tests/crashlab_server.py --data-dir D --port P --engine oci|lxd

Serves the app exactly as ``idcs serve`` does, with the engine registered under its real type
name (OCInterface or LXD) and the ``EventLog`` event plugin.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import uvicorn
from crashlab import EventLog, PausingLXD, PausingOCI

from idcs_core.app import create_app
from idcs_core.config import Config
from idcs_core.plugins import PluginRegistry
from idcs_core.testing.server import ADMIN_PASSWORD


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--engine", choices=("oci", "lxd"), required=True)
    args = parser.parse_args()
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    registry = PluginRegistry()
    name, engine = ("OCInterface", PausingOCI()) if args.engine == "oci" else ("LXD", PausingLXD())
    assert registry.register_engine(name, engine) is not None, registry.failures
    registry.register_event_plugin("crashlab-events", EventLog())
    assert not registry.failures, registry.failures
    config = Config(data_dir=Path(args.data_dir), host="127.0.0.1", port=args.port, admin_password=ADMIN_PASSWORD)
    uvicorn.run(create_app(config, registry), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
