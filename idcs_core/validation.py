"""Rules for names and values that reach hypervisors and shell-like tools.

Host names, VM ids, disk and backup names end up in container names, file
paths and command lines on the hosts, so they are limited to a safe character
set *before* any engine sees them: letters, digits, ``_``, ``-`` and ``.``
(never ``..``), starting with a letter or digit. Image references and ISO
names may also carry ``:``, ``/``, ``@``, spaces, brackets and parentheses
(``library/ubuntu:22.04``, the datastore path ``[datastore1] iso/debian 12.iso``),
but never ``..``, control characters, a backslash, ``//`` or a local absolute path
(``/etc/...``, ``C:/...``); the services then accept only names the host lists
(``idcs_core.services.images``). Engines pass them to their SDKs as values,
never in a shell string.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated

from pydantic import AfterValidator, WithJsonSchema

from idcs_core import errors

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_IMAGE = re.compile(r"^[A-Za-z0-9\[][A-Za-z0-9_.:/@+\-\[\]() ]{0,254}$")
_DRIVE_PATH = re.compile(r"^[A-Za-z]:/")  # C:/Windows/...: a local path of the machine, not an image
_ADDR = re.compile(r"^[A-Za-z0-9_.:/@\[\]%+-]{1,512}$")
_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
# a host's login: root, administrator@vsphere.local, DOMAIN\user; empty where none is needed
_HOST_USER = re.compile(r"^([A-Za-z0-9_][A-Za-z0-9_.@\\-]{0,127})?$")
_EMAIL = re.compile(r"^[^@\s\"'<>;\\]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}$")
_DOMAIN = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9_]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$")


def safe_name(value: str, what: str = "name") -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value) or ".." in value:
        raise ValueError(f"{what} must be 1-64 characters of letters, digits, '_', '-' or '.' "
                         f"starting with a letter or digit (got {value!r:.80})")
    return value


def image_ref(value: str) -> str:
    """An image, template or ISO name as a host lists it (``ubuntu:22.04``, ``[datastore1] iso/debian 12.iso``)."""
    if (not _IMAGE.fullmatch(value) or ".." in value or "//" in value or value != value.strip()
            or _DRIVE_PATH.match(value)):
        raise ValueError("must be an image reference, template or ISO name the host lists: letters, digits, "
                         "spaces and _ . : / @ + - [ ] ( ) (no '..', '//', leading '/' or control characters)")
    return value


def server_addr(value: str) -> str:
    if not _ADDR.fullmatch(value) or "/../" in value or value.endswith("/..") or ".." in value.split("/")[0:1]:
        raise ValueError("must be an address such as https://host:8443, unix:///path/to.sock, "
                         "ssh://user@host or 'local' (no spaces, quotes or ';')")
    return value


def username(value: str) -> str:
    if not _USERNAME.fullmatch(value) or ".." in value:
        raise ValueError("must be 1-64 characters of letters, digits, '_', '-', '.' or '@'")
    return value


def host_user(value: str) -> str:
    if not _HOST_USER.fullmatch(value):
        raise ValueError("must be empty or up to 128 letters, digits and _ . @ - \\ (no spaces, quotes or ';')")
    return value


def email(value: str) -> str:
    if value and not _EMAIL.fullmatch(value):
        raise ValueError("is not a valid e-mail address")
    return value


def domain(value: str) -> str:
    if not _DOMAIN.fullmatch(value):
        raise ValueError("must be a domain name such as www.example.com")
    return value.lower()


def printable(value: str) -> str:
    """Free text (descriptions, notes, passwords): no control characters of any script."""
    for ch in value:
        if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn"):
            raise ValueError("must not contain control characters")
    return value


def _schema(pattern: re.Pattern[str], max_length: int, description: str) -> WithJsonSchema:
    """What the published schema says of a rule (the validator above is what enforces it)."""
    return WithJsonSchema({"type": "string", "pattern": pattern.pattern, "maxLength": max_length,
                           "description": description})


SafeName = Annotated[str, AfterValidator(safe_name),
                     _schema(_NAME, 64, "letters, digits, '_', '-', '.'; starts with a letter or digit; no '..'")]
ImageRef = Annotated[str, AfterValidator(image_ref),
                     _schema(_IMAGE, 255, "an image, template or ISO name of the host's list "
                             "(GET /api/client/os-images); no '..' or '//'")]
ServerAddr = Annotated[str, AfterValidator(server_addr), _schema(_ADDR, 512, "a host address; no '..' segments")]
UserName = Annotated[str, AfterValidator(username),
                     _schema(_USERNAME, 64, "unique without regard to case; no '..'")]
HostUser = Annotated[str, AfterValidator(host_user), _schema(_HOST_USER, 128, "the host's login name")]
Email = Annotated[str, AfterValidator(email), WithJsonSchema({"type": "string", "maxLength": 254,
                                                              "description": "an e-mail address, or empty"})]
Domain = Annotated[str, AfterValidator(domain), _schema(_DOMAIN, 253, "a domain name such as www.example.com")]
Text = Annotated[str, AfterValidator(printable),
                 WithJsonSchema({"type": "string", "description": "no control characters"})]

_SMALL_INT = re.compile(r"^[0-9]{1,9}$")


def small_int(value: str) -> str:
    """ASCII digits only (``str.isdigit`` also takes '¹' and '٣', which ``int`` refuses)."""
    if not _SMALL_INT.fullmatch(value):
        raise ValueError("must be a non-negative integer of at most 9 digits")
    return value


# Path parameters: what each may look like (the rest are safe names).
_PATH_RULES = {
    "iso_name": image_ref,
    "user_id": small_int,
    "ip_index": small_int,
    "rule_index": small_int,
    "proxy_index": small_int,
}


def check_path_param(name: str, value: str) -> str:
    """Validate one path parameter, raising ``BadRequest`` (400) when it is unsafe."""
    try:
        rule = _PATH_RULES.get(name)
        return rule(value) if rule else safe_name(value, name)
    except ValueError as exc:
        raise errors.BadRequest(f"{name}: {exc}") from None
