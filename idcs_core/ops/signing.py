"""How webhook requests are signed, and how a receiver checks them.

Each request carries::

    X-IDCS-Timestamp: <unix seconds when this attempt was sent>
    X-IDCS-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>." + raw body)>

A receiver recomputes the HMAC over the timestamp header, a dot and the raw body bytes with the
webhook's secret, compares it in constant time, and rejects a timestamp more than five minutes
from its own clock (a replayed request is then refused); ``X-IDCS-Event-Id`` is the same on every
retry of one event, so a receiver that stores it handles each event once.
"""

from __future__ import annotations

import hashlib
import hmac
import time

TOLERANCE_SECONDS = 300


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-IDCS-Signature`` value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"v1={mac.hexdigest()}"


def verify(secret: str, timestamp: str, body: bytes, signature: str, *, now: float | None = None,
           tolerance: int = TOLERANCE_SECONDS) -> bool:
    """True when ``signature`` is valid for ``body`` and ``timestamp`` lies within ``tolerance``."""
    if not timestamp.isdigit():
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, int(timestamp), body), signature)
