"""The two RFB (VNC) handshakes of the console bridge.

The core stands between the browser's noVNC and the engine's VNC server:

- towards the VNC server it is the client: it agrees on a version and logs in with the
  endpoint's password (VNC authentication) or none, so the password stays in the core;
- towards the browser it is the server: it offers security type None only (the
  browser already proved who it is with its one-time ticket).

After both handshakes the bytes from ``ClientInit`` on are passed through unchanged.
RFC 6143 describes the protocol; versions 3.3, 3.7 and 3.8 are spoken.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import struct
from collections.abc import Awaitable, Callable

from idcs_core import errors
from idcs_core.types import ConsoleEndpoint

SEC_NONE, SEC_VNC_AUTH = 1, 2
_VERSION = re.compile(rb"RFB (\d{3})\.(\d{3})\n")


class RFBError(errors.VMOperationFailed):
    """The VNC server or the browser broke the RFB handshake."""


def _minor(version: bytes, who: str) -> int:
    found = _VERSION.fullmatch(version)
    if not found:
        raise RFBError(f"{who} does not speak RFB")
    major, minor = int(found[1]), int(found[2])
    if major > 3 or minor >= 8:
        return 8
    return 7 if minor == 7 else 3


def vnc_auth_response(password: str, challenge: bytes) -> bytes:
    """VNC authentication: DES of the 16-byte challenge, keyed by the password's first 8
    bytes with each byte's bits reversed (RFC 6143 section 7.2.2)."""
    from cryptography.hazmat.primitives.ciphers import Cipher, modes

    try:
        from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
    except ImportError:  # cryptography < 43
        from cryptography.hazmat.primitives.ciphers.algorithms import TripleDES  # type: ignore[no-redef, unused-ignore]  # one of two homes

    key = bytes(int(f"{b:08b}"[::-1], 2) for b in password.encode("latin-1", "replace")[:8].ljust(8, b"\0"))
    encryptor = Cipher(TripleDES(key * 3), modes.ECB()).encryptor()  # three equal keys: single DES
    return encryptor.update(challenge) + encryptor.finalize()


async def _reason(reader: asyncio.StreamReader) -> str:
    (length,) = struct.unpack(">I", await reader.readexactly(4))
    return (await reader.readexactly(min(length, 1024))).decode(errors="replace")


async def connect_vnc(endpoint: ConsoleEndpoint, timeout: float = 10
                      ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a TCP (or TLS) connection to ``endpoint`` and log in; the server then waits for ClientInit."""
    context = ssl.create_default_context() if endpoint.tls else None
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(endpoint.address, endpoint.port, ssl=context), timeout)
    except (OSError, TimeoutError) as exc:
        raise errors.VMOperationFailed(f"the VM's console does not answer: {exc.__class__.__name__}") from exc
    try:
        await asyncio.wait_for(_log_in(reader, writer, endpoint.password), timeout)
    except BaseException:
        writer.close()
        raise
    return reader, writer


async def _log_in(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, password: str | None) -> None:
    try:
        minor = _minor(await reader.readexactly(12), "the VM's console")
        writer.write(b"RFB 003.%03d\n" % minor)
        if minor == 3:
            (chosen,) = struct.unpack(">I", await reader.readexactly(4))
            if chosen == 0:
                raise RFBError(f"the VM's console refused the connection: {await _reason(reader)}")
        else:
            (count,) = await reader.readexactly(1)
            if count == 0:
                raise RFBError(f"the VM's console refused the connection: {await _reason(reader)}")
            offered = await reader.readexactly(count)
            if password and SEC_VNC_AUTH in offered:
                chosen = SEC_VNC_AUTH
            elif SEC_NONE in offered:
                chosen = SEC_NONE
            else:
                raise RFBError(f"the VM's console offers no security type the core speaks ({list(offered)})")
            writer.write(bytes([chosen]))
        if chosen == SEC_VNC_AUTH:
            challenge = await reader.readexactly(16)
            writer.write(vnc_auth_response(password or "", challenge))
        elif chosen != SEC_NONE:
            raise RFBError(f"the VM's console asks for security type {chosen}, which the core does not speak")
        await writer.drain()
        if chosen == SEC_VNC_AUTH or minor == 8:
            (result,) = struct.unpack(">I", await reader.readexactly(4))
            if result != 0:
                reason = await _reason(reader) if minor == 8 else ""
                raise RFBError(f"the VM's console refused the login {reason}".strip())
    except asyncio.IncompleteReadError as exc:
        raise RFBError("the VM's console closed the connection during the handshake") from exc


class MessageReader:
    """Exact reads over a stream of websocket messages (``receive`` returns one message's bytes)."""

    def __init__(self, receive: Callable[[], Awaitable[bytes]]) -> None:
        self._receive = receive
        self.buffer = b""

    async def read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self.buffer += await self._receive()
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data


async def greet_browser(send: Callable[[bytes], Awaitable[None]], reader: MessageReader) -> None:
    """Be the RFB server towards the browser up to (not including) its ClientInit."""
    await send(b"RFB 003.008\n")
    minor = _minor(await reader.read(12), "the browser")
    if minor == 3:
        await send(struct.pack(">I", SEC_NONE))
        return
    await send(bytes([1, SEC_NONE]))
    if (await reader.read(1))[0] != SEC_NONE:
        raise RFBError("the browser chose a security type that was not offered")
    if minor == 8:
        await send(struct.pack(">I", 0))
