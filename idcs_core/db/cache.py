"""Results of read-only queries, kept in memory until the next commit that writes anything.

Cheap reads (the host list, system counts) are asked far more often than anything
changes. Each entry remembers the database generation it was loaded at
(``Database.generation``, bumped after every writing commit of this process) and is
loaded again once that has moved on. The generation is read *before* loading, so a
commit that lands while a value is being loaded makes the next reader load it again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from idcs_core.db.session import Database

T = TypeVar("T")


class ReadCache:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._entries: dict[str, tuple[int, Any]] = {}

    async def get(self, key: str, load: Callable[[], Awaitable[T]]) -> T:
        """The value of ``key`` as of the current generation, loading it if needed."""
        generation = self.db.generation
        hit = self._entries.get(key)
        if hit is not None and hit[0] == generation:
            return hit[1]  # type: ignore[no-any-return, unused-ignore]  # entries hold each key's own T
        value = await load()
        self._entries[key] = (generation, value)
        return value
