"""``idcs`` with an ExampleLab FakeCloud host up in this process (for task_throughput.py).

    BENCH_FAKE_ADDR=fake://bench python bench/_queue_node.py serve|worker ...

FakeCloud lives in the memory of the process that calls the engine, so every node of the bench
brings up its own (same address, same credentials): each worker creates the VMs of the jobs it
runs in its own FakeCloud. ``BENCH_NO_WORKER=1`` adds ``--no-worker`` to ``serve``.
"""

from __future__ import annotations

import os
import sys

from idcs_example import fakecloud

from idcs_core.cli import main

if __name__ == "__main__":
    fakecloud.start(os.environ.get("BENCH_FAKE_ADDR", "fake://bench"), "admin", "secret")
    argv = sys.argv[1:]
    if argv[:1] == ["serve"] and os.environ.get("BENCH_NO_WORKER") == "1":
        argv.insert(1, "--no-worker")
    sys.exit(main(argv))
