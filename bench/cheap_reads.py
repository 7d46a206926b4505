#!/usr/bin/env python3
"""Goal 1: authenticated cheap reads per second, ours beside the previous OpenIDCS server.

Starts, on 127.0.0.1, our ``idcs serve`` (fresh SQLite data dir, no hosts) and the previous
server (OpenIDCS-Client, Flask dev server, run as ``python HostServer.py`` does, in its own
virtualenv) in two modes: as shipped (``debug=True``: reloader + debugger) and with debug
off. Then wrk hits equivalent routes of each, one server at a time, alternating servers
round after round, and prints the medians side by side.

    python3 bench/cheap_reads.py                      # about 6 minutes
    python3 bench/cheap_reads.py --duration 5 --rounds 1 --rows engine,identity
    python3 bench/cheap_reads.py --no-old             # ours only; compared to the stated 1,700 rps

The previous server's source: ``--old-src`` (a checkout, or a bare git dir of
OpenIDCS-Client), default ``$OPENIDCS_OLD_SRC`` or the mirror at
``/work/.mirror/OpenIDCSTeam+OpenIDCS-Client/repo``. Its virtualenv (``--old-venv``, default
``/tmp/openidcs-old-venv``) is made once with the Linux packages of its
``HostConfig/pipinstall.txt``. Nothing of it is written into this repository.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    BENCH_DIR,
    Cleanup,
    OurServer,
    WrkResult,
    free_port,
    loadavg,
    machine_line,
    median_result,
    request,
    stop_process,
    wait_http,
    wrk,
)

DEFAULT_MIRROR = "/work/.mirror/OpenIDCSTeam+OpenIDCS-Client/repo"
STATED_OLD_RPS = 1700.0
WINDOWS_ONLY = {"pywin32", "pythonnet"}

# name -> (what it is, route of the previous server, our route)
ROWS: dict[str, tuple[str, str, str]] = {
    "engine": ("engine/type list", "/api/engine/types", "/api/system/engine"),
    "identity": ("who am I (old: its token)", "/api/token/current", "/api/users/current"),
    "token": ("current API token (same path)", "/api/token/current", "/api/token/current"),
    "hosts": ("host list, 0 hosts", "/api/hosts", "/api/server/detail"),
    "stats": ("system stats, 0 hosts (same path)", "/api/system/stats", "/api/system/stats"),
}


@dataclass
class Target:
    name: str
    url: str
    token: str
    old: bool


def export_old_source(src: Path, dest: Path) -> str:
    """Copy the previous server's source into ``dest``; return a description of its version."""
    if (src / "HostServer.py").exists():
        shutil.copytree(src, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".git", "DataSaving"))
        rev = subprocess.run(["git", "-C", str(src), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        return f"{src} ({rev.stdout.strip() or 'not a git checkout'})"
    git = ["git", f"--git-dir={src}"]
    rev = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
    listing = subprocess.run([*git, "ls-tree", "-r", "-z", "HEAD"], capture_output=True, text=True, check=True)
    missing = []
    for entry in filter(None, listing.stdout.split("\0")):
        meta, path = entry.split("\t", 1)
        _mode, kind, obj = meta.split()
        if kind != "blob":
            continue
        blob = subprocess.run([*git, "cat-file", "blob", obj], capture_output=True)
        if blob.returncode != 0:  # the mirror may leave large files out
            missing.append(path)
            continue
        target = dest / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(blob.stdout)
    if not (dest / "HostServer.py").exists():
        raise RuntimeError(f"{src}: no HostServer.py at HEAD: not OpenIDCS-Client")
    note = f", {len(missing)} file(s) absent from the mirror: {', '.join(missing)}" if missing else ""
    return f"OpenIDCS-Client {rev.stdout.strip()} ({src}{note})"


def ensure_old_venv(venv: Path, source: Path) -> Path:
    """The previous server's own virtualenv, made once; returns its python."""
    python = venv / "bin" / "python"
    wanted = [line.strip() for line in (source / "HostConfig" / "pipinstall.txt").read_text().splitlines()]
    wanted = sorted({w for w in wanted if w and w.lower() not in WINDOWS_ONLY})
    if python.exists():
        check = subprocess.run([str(python), "-c", "import flask, psutil, cpuinfo, GPUtil, requests"],
                               capture_output=True)
        if check.returncode == 0:
            return python
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    print(f"installing the previous server's packages into {venv}: {' '.join(wanted)}", flush=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *wanted], check=True)
    return python


def start_old(cleanup: Cleanup, python: Path, source: Path, debug: bool, token: str,
              pin: str | None) -> tuple[str, Path]:
    run_dir = cleanup.tempdir("idcs-bench-old-")
    shutil.copytree(source, run_dir, dirs_exist_ok=True)
    # its database module reads the schema from DataSaving/HostManage.sql (shipped in HostConfig/)
    (run_dir / "DataSaving").mkdir(exist_ok=True)
    shutil.copy(source / "HostConfig" / "HostManage.sql", run_dir / "DataSaving" / "HostManage.sql")
    port = free_port()
    log = run_dir / "server.log"
    env = os.environ | {"OLD_TOKEN": token, "OLD_PORT": str(port), "OLD_DEBUG": "1" if debug else "0",
                        "PYTHONUNBUFFERED": "1"}
    env.pop("PYTHONPATH", None)
    with open(log, "ab") as out:
        cmd = [str(python), str(BENCH_DIR / "_old_launch.py")]
        proc = subprocess.Popen(["taskset", "-c", pin, *cmd] if pin else cmd, cwd=run_dir, env=env,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    # the reloader (debug mode) runs the server in a child: stop the whole group this child leads
    cleanup.callback(stop_process, proc, True)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/login", proc, log)
    return url, log


def check(target: Target, path: str) -> None:
    status, body = request("GET", target.url + path, token=target.token, timeout=10)
    if status != 200 or not isinstance(body, dict) or body.get("code") != 200:
        raise RuntimeError(f"{target.name} {path}: HTTP {status}: {str(body)[:300]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=8, help="seconds of one wrk run (default 8)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians are shown (default 3)")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {','.join(ROWS)}")
    parser.add_argument("--old-src", default=os.environ.get("OPENIDCS_OLD_SRC", DEFAULT_MIRROR))
    parser.add_argument("--old-venv", default="/tmp/openidcs-old-venv")
    parser.add_argument("--old-modes", default="shipped,nodebug",
                        help="shipped (debug=True, as `python HostServer.py`), nodebug (debug=False)")
    parser.add_argument("--no-old", action="store_true", help="measure ours only")
    parser.add_argument("--pin", action="store_true",
                        help="pin the servers to CPU 0 and wrk to CPU 1 (default: no pinning)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    for r in rows:
        if r not in ROWS:
            parser.error(f"unknown row {r!r}")
    if not shutil.which("wrk"):
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2

    with Cleanup() as cleanup:
        targets: list[Target] = []
        old_version = None
        if not args.no_old:
            src = Path(args.old_src)
            if not src.exists():
                print(f"previous server source not found at {src}: measuring ours only", file=sys.stderr)
            else:
                source = cleanup.tempdir("idcs-bench-oldsrc-")
                old_version = export_old_source(src, source)
                python = ensure_old_venv(Path(args.old_venv), source)
                token = secrets.token_hex(8)  # the old server's token format: 16 hex digits
                for mode in [m.strip() for m in args.old_modes.split(",") if m.strip()]:
                    if mode not in ("shipped", "nodebug"):
                        parser.error(f"unknown old mode {mode!r}")
                    url, _log = start_old(cleanup, python, source, mode == "shipped", token,
                                          "0" if args.pin else None)
                    name = "old Flask (debug=True, as shipped)" if mode == "shipped" else "old Flask (debug=False)"
                    targets.append(Target(name, url, token, True))
        ours = OurServer(cleanup.tempdir("idcs-bench-ours-"), pin="0" if args.pin else None).start(cleanup)
        targets.append(Target("ours (idcs serve)", ours.url, ours.token, False))

        for t in targets:
            for r in rows:
                check(t, ROWS[r][1] if t.old else ROWS[r][2])

        print(f"machine: {machine_line()}")
        if old_version:
            print(f"previous server: {old_version}")
        print(f"wrk: {args.threads} threads, {args.connections} connections, {args.duration:g} s per run, "
              f"{args.rounds} round(s), servers alternating; medians shown\n", flush=True)
        results: dict[str, dict[str, list[WrkResult]]] = {r: {t.name: [] for t in targets} for r in rows}
        loads: list[str] = []
        for rnd in range(args.rounds):
            for r in rows:
                for t in (targets if rnd % 2 == 0 else list(reversed(targets))):
                    path = ROWS[r][1] if t.old else ROWS[r][2]
                    res = wrk(t.url + path, t.token, args.duration, args.connections, args.threads,
                              pin="1" if args.pin else None)
                    results[r][t.name].append(res)
                    print(f"  round {rnd + 1} {r:<8} {t.name:<34} {res.row()}", flush=True)
            loads.append(loadavg())

        print("\n| route | server | path | rps | p50 ms | p99 ms | bad |")
        print("|---|---|---|---:|---:|---:|---:|")
        summary = []
        for r in rows:
            label = ROWS[r][0]
            meds = {}
            for t in targets:
                m = median_result(results[r][t.name])
                meds[t.name] = m
                path = ROWS[r][1] if t.old else ROWS[r][2]
                print(f"| {label} | {t.name} | `{path}` | {m.rps:.0f} | {m.p50:.2f} | {m.p99:.2f} | {m.bad} |")
                summary.append({"row": r, "server": t.name, "path": path, **asdict(m),
                                "runs": [asdict(x) for x in results[r][t.name]]})
        print()
        ours_name = targets[-1].name
        for r in rows:
            o = meds_of(results, r, ours_name)
            parts = [f"{ROWS[r][0]}: ours {o.rps:.0f} rps = {o.rps / STATED_OLD_RPS:.1f}x the stated 1,700"]
            for t in targets[:-1]:
                m = meds_of(results, r, t.name)
                parts.append(f"{o.rps / m.rps:.1f}x {t.name} (p99 {o.p99:.1f} vs {m.p99:.1f} ms)")
            print("; ".join(parts))
        print(f"\nload average after each round: {' | '.join(loads)}")
        if args.json:
            Path(args.json).write_text(json.dumps({"machine": machine_line(), "old": old_version,
                                                   "results": summary}, indent=1))
    return 0


def meds_of(results: dict[str, dict[str, list[WrkResult]]], row: str, name: str) -> WrkResult:
    return median_result(results[row][name])


if __name__ == "__main__":
    sys.exit(main())
