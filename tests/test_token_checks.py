"""A busy client's token is checked against the database once per recheck period, not once per request."""

from __future__ import annotations

import asyncio
from pathlib import Path

from idcs_core.config import Config
from idcs_core.context import CoreContext
from idcs_core.services import auth


async def test_concurrent_requests_share_one_token_check(tmp_path: Path) -> None:
    core = await CoreContext.start(Config(data_dir=tmp_path, admin_password="Admin-Pass-1"))
    try:
        token = (await core.auth.login("admin", "Admin-Pass-1", "127.0.0.1"))["token"]
        checks = 0
        real = core.auth._load_session

        async def counted(jti: str) -> tuple[auth.Principal, float]:
            nonlocal checks
            checks += 1
            await asyncio.sleep(0.05)  # a slow database: the other requests arrive meanwhile
            return await real(jti)

        core.auth._load_session = counted  # type: ignore[method-assign]
        core.auth._tokens.clear()  # as when the remembered entry is due for its recheck
        who = await asyncio.gather(*(core.auth.authenticate(f"Bearer {token}") for _ in range(30)))
        assert {p.username for p in who} == {"admin"}
        assert checks == 1, f"{checks} database checks for one token"
        await core.auth.authenticate(f"Bearer {token}")  # remembered now
        assert checks == 1
    finally:
        await core.stop()
