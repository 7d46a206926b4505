"""The server's own Caddy (``proxy_endpoint`` ``local``): started on demand, stopped by PID.

Everything lives in ``<data dir>/caddy``: ``data/`` and ``config/`` (Caddy's
``XDG_DATA_HOME``/``XDG_CONFIG_HOME``: certificates and the internal CA, whose root is
``data/caddy/pki/authorities/local/root.crt``), ``caddy.json`` (only the admin listener: the
routes are loaded through the admin API), ``admin.sock`` (the admin API, a unix socket only
this machine's root can reach), ``caddy.pid`` and ``caddy.log``. Caddy is always started
with ``--config`` (without it, ``caddy run`` would read a Caddyfile from the working
directory). A Caddy left running by a server that crashed is found by its pid file (and
its command line) and taken over, never started twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from idcs_core.proxy.admin import UNIX_ORIGIN, CaddyAdmin, ProxyUnreachable

log = logging.getLogger("idcs.proxy")

READY_SECONDS = 15.0
STOP_SECONDS = 10.0
MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes


class LocalCaddy:
    """One Caddy process with a private data directory under ``base``."""

    def __init__(self, base: Path, binary: str | None = None) -> None:
        self.base = base
        self.binary = binary or shutil.which("caddy") or ""
        self.config_path = base / "caddy.json"
        self.pid_path = base / "caddy.pid"
        self.log_path = base / "caddy.log"
        self.socket_path = base / "admin.sock"
        self.root_cert = base / "data" / "caddy" / "pki" / "authorities" / "local" / "root.crt"
        self._proc: subprocess.Popen[bytes] | None = None
        self._admin: CaddyAdmin | None = None
        # set once this server started or took over the Caddy: only then does stop() end it
        # (a one-off command such as ``idcs user`` on the same data dir must leave it alone)
        self._owned = False

    # ------------------------------------------------------------------ state

    @property
    def pid(self) -> int | None:
        """The PID of the Caddy this server runs (or took over), if it is alive."""
        if self._proc is not None:
            return self._proc.pid if self._proc.poll() is None else None
        pid = self._pid_from_file()
        return pid if pid is not None and self._is_ours(pid) else None

    def running(self) -> bool:
        return self.pid is not None

    def admin(self) -> CaddyAdmin:
        if self._admin is None:
            self._admin = CaddyAdmin(socket_path=str(self.socket_path))
        return self._admin

    def _pid_from_file(self) -> int | None:
        try:
            return int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return None

    def _is_ours(self, pid: int) -> bool:
        """Is ``pid`` alive and a Caddy running our configuration (not a reused PID)?"""
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return str(self.config_path).encode() in cmdline

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> bool:
        """Make sure Caddy runs and its admin API answers; True when it was (re)started now."""
        self._owned = True
        if self.running():
            if self._proc is None and self._pid_from_file() is not None:
                log.debug("taking over the local Caddy (pid %s)", self.pid)
            if await self.admin().alive():
                return False
            await self.stop()  # alive but deaf: start afresh
        if not self.binary:
            raise ProxyUnreachable("caddy is not installed (Debian package caddy): the local reverse proxy "
                                   "cannot start; install it or set the host's proxy_endpoint")
        if len(str(self.socket_path)) > MAX_SOCKET_PATH:
            raise ProxyUnreachable(f"the data directory path is too long for Caddy's admin socket "
                                   f"({self.socket_path}); use a shorter data directory")
        for folder in (self.base, self.base / "data", self.base / "config"):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        self.config_path.write_text(json.dumps({"admin": {"listen": f"unix/{self.socket_path}",
                                                          "origins": [UNIX_ORIGIN]}}))
        self._proc = self._spawn()
        self._owned = True
        await self._wait_ready()
        log.info("local Caddy started (pid %s, admin %s)", self._proc.pid, self.socket_path)
        return True

    def _spawn(self) -> subprocess.Popen[bytes]:
        """Start ``caddy run`` in its own session, with only PATH and its private dirs in its
        environment (nothing of the server's, secrets included, reaches it)."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.base),
               "XDG_DATA_HOME": str(self.base / "data"), "XDG_CONFIG_HOME": str(self.base / "config")}
        with open(self.log_path, "ab") as out:
            return subprocess.Popen(
                [self.binary, "run", "--config", str(self.config_path), "--pidfile", str(self.pid_path)],
                cwd=self.base, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_SECONDS
        assert self._proc is not None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise ProxyUnreachable(f"the local Caddy exited at start ({self._proc.returncode}): {self.log_tail()}")
            if self.socket_path.exists() and await self.admin().alive():
                return
            await asyncio.sleep(0.05)
        raise ProxyUnreachable(f"the local Caddy did not answer within {READY_SECONDS:g} s: {self.log_tail()}")

    async def stop(self) -> None:
        """Stop the Caddy this server started or took over, by its PID (TERM, then KILL after
        ``STOP_SECONDS``)."""
        pid = self.pid if self._owned else None
        self._owned = False
        if self._admin is not None:
            await self._admin.close()
            self._admin = None
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            if not await self._wait_gone(pid, STOP_SECONDS):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                await self._wait_gone(pid, STOP_SECONDS)
            log.info("local Caddy stopped (pid %s)", pid)
        self._proc = None
        with contextlib.suppress(FileNotFoundError):
            self.pid_path.unlink()

    async def _wait_gone(self, pid: int, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.pid == pid:
                if self._proc.poll() is not None:
                    return True
            elif not self._is_ours(pid):
                return True
            await asyncio.sleep(0.05)
        return False

    def log_tail(self, lines: int = 8) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return "(no log)"
        return " | ".join(text)
