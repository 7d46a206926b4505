"""pylxd / requests failures to OpenIDCS business errors, in one place.

Every hook runs its LXD calls inside ``translated(cache, host, what)`` (the toolkit's
``idcs_core.enginekit.translated`` with this engine's mapping); the message keeps LXD's own
explanation so an operator sees what the daemon said.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

import requests
from pylxd import exceptions as lxd_exc

from idcs_core import errors
from idcs_core.enginekit import ErrorFactory
from idcs_core.enginekit import translated as kit_translated
from idcs_core.types import HostSpec

if TYPE_CHECKING:
    from idcs_lxd.client import ClientCache


class OperationFailed(Exception):
    """An LXD background operation ended in failure; ``str()`` is LXD's error text."""


def api_message(exc: lxd_exc.LXDAPIException) -> str:
    """LXD's own error text from an API exception."""
    response = getattr(exc, "response", None)
    if response is not None:
        try:
            body = response.json()
            return str(body.get("error") or body.get("metadata", {}).get("err") or response.reason)
        except ValueError:
            return f"HTTP {response.status_code}: {response.text[:200]}"
    return str(exc)


def short(exc: BaseException) -> str:
    """A connection failure in a few words ("connection refused", "socket not found", ...)."""
    text = str(exc) or type(exc).__name__
    if "Fingerprints did not match" in text:
        return "the server's TLS certificate changed: it is not the pinned one"
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return f"the server's TLS certificate is not trusted ({text[:200]})"
    if "Connection refused" in text or isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if "No such file or directory" in text or isinstance(exc, FileNotFoundError):
        return "socket not found"
    return text[:300]


def translated(cache: ClientCache, host: HostSpec, what: str) -> AbstractContextManager[None]:
    """Turn pylxd/requests failures inside the block into ``idcs_core.errors``.

    A lost connection drops the cached client (the next call reconnects) and
    becomes ``HostUnreachable``, and so does a refusal of our certificate (401/403:
    the trust was revoked); a request LXD calls bad (400) becomes ``BadRequest``;
    any other LXD error ``VMOperationFailed``.
    """
    where = f"LXD host {host.name} ({host.addr})"

    def lost(exc: BaseException, _action: str) -> errors.IDCSError:
        return errors.HostUnreachable(f"{where} unreachable during {what}: {short(exc)}")

    def refused(exc: BaseException, _action: str) -> errors.IDCSError:
        assert isinstance(exc, lxd_exc.LXDAPIException)
        status = exc.response.status_code if getattr(exc, "response", None) is not None else None
        if status in (401, 403):
            return errors.HostUnreachable(
                f"{where} refused {what} (HTTP {status}: {api_message(exc)}): "
                "is this engine's client certificate still trusted there?")
        if status == 400:
            return errors.BadRequest(f"{what}: {api_message(exc)}")
        return errors.VMOperationFailed(f"{what}: {api_message(exc)}")

    mapping: dict[type[BaseException] | tuple[type[BaseException], ...], ErrorFactory] = {
        (lxd_exc.ClientConnectionFailed, requests.ConnectionError, requests.Timeout): lost,
               lxd_exc.LXDAPIException: refused, OperationFailed: errors.VMOperationFailed}
    return kit_translated(what, mapping, default=None, on_unreachable=lambda: cache.drop(host))
