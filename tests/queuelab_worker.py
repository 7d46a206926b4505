"""``idcs worker`` with the crash-point Docker engine of ``crashlab`` (tests only).

    CRASHLAB_DIR=<dir> python tests/queuelab_worker.py --database-url URL --data-dir D [--name N]

Runs queued tasks exactly as ``idcs worker`` does, with ``PausingOCI`` registered as OCInterface
and the ``EventLog`` event plugin, so a test can SIGKILL it at a known point of a task.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from crashlab import EventLog, PausingOCI

from idcs_core.cli import run_worker
from idcs_core.config import Config
from idcs_core.plugins import PluginRegistry


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--name")
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    registry = PluginRegistry()
    assert registry.register_engine("OCInterface", PausingOCI()) is not None, registry.failures
    registry.register_event_plugin("crashlab-events", EventLog())
    config = Config(data_dir=Path(args.data_dir), database_url=args.database_url, node_name=args.name,
                    worker_concurrency=args.concurrency)
    return asyncio.run(run_worker(config, registry))


if __name__ == "__main__":
    sys.exit(main())
