"""Secrets of one installation: password hashing, JWT signing, encryption at rest.

Two key files live in the data directory, created on first start with mode 0600:
``jwt.key`` signs login tokens (HS256), ``fernet.key`` encrypts host passwords
and the global API token in the database.
"""

from __future__ import annotations

import hmac
import os
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.fernet import Fernet, InvalidToken

from idcs_core import errors

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


# A hash to verify against when the user does not exist, so timing does not tell.
DUMMY_HASH = _hasher.hash(secrets.token_hex(8))


def generate_password(length: int = 20) -> str:
    return secrets.token_urlsafe(length)[:length]


def generate_api_token() -> str:
    return "idcs_" + secrets.token_urlsafe(32)


def constant_time_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def _key_file(path: Path, make: Any) -> bytes:
    if path.exists():
        return path.read_bytes().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = make()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return data


@dataclass
class TokenClaims:
    user_id: int
    jti: str
    expires_at: datetime
    vm_id: int | None = None


class Keys:
    """The installation's keys, loaded from (or created in) the data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.jwt_secret = _key_file(data_dir / "jwt.key", lambda: secrets.token_hex(48).encode())
        self.fernet = Fernet(_key_file(data_dir / "fernet.key", Fernet.generate_key))

    # -- encryption at rest
    def encrypt(self, plain: str) -> str:
        return self.fernet.encrypt(plain.encode()).decode() if plain else ""

    def decrypt(self, token: str) -> str:
        if not token:
            return ""
        try:
            return self.fernet.decrypt(token.encode()).decode()
        except InvalidToken as exc:
            raise errors.IDCSError("a stored secret cannot be decrypted: wrong fernet.key?") from exc

    # -- login tokens
    def issue_token(self, user_id: int, ttl_seconds: int, vm_id: int | None = None) -> tuple[str, TokenClaims]:
        now = datetime.now(UTC)
        claims = TokenClaims(user_id, uuid.uuid4().hex, (now + timedelta(seconds=ttl_seconds)).replace(tzinfo=None),
                             vm_id)
        payload: dict[str, Any] = {"sub": str(user_id), "jti": claims.jti, "iat": now,
                                   "exp": now + timedelta(seconds=ttl_seconds), "iss": "idcs"}
        if vm_id is not None:
            payload["vm"] = vm_id
        return jwt.encode(payload, self.jwt_secret, algorithm="HS256"), claims

    def decode_token(self, token: str) -> TokenClaims:
        try:
            payload = jwt.decode(token, self.jwt_secret, algorithms=["HS256"], issuer="idcs",
                                 options={"require": ["exp", "sub", "jti"]})
        except jwt.ExpiredSignatureError as exc:
            raise errors.TokenExpired() from exc
        except jwt.PyJWTError as exc:
            raise errors.TokenInvalid() from exc
        try:
            user_id = int(payload["sub"])
        except (TypeError, ValueError) as exc:
            raise errors.TokenInvalid() from exc
        vm = payload.get("vm")
        return TokenClaims(user_id, str(payload["jti"]),
                           datetime.fromtimestamp(payload["exp"], UTC).replace(tzinfo=None),
                           int(vm) if vm is not None else None)
