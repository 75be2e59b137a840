"""Who is calling: secret API keys (the merchant's backend) and customer session tokens.

Secret keys are random strings shown once; only their SHA-256 hash is stored, and a key is
looked up by hash on every request, so a revocation takes effect on the next request on every
process. Customer session tokens are stateless HMAC-SHA256 signed claims (customer id and
expiry) under the server's token secret; a token of a customer that no longer exists is
refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import orjson

from gateway.errors import UserError, invalid, not_found
from gateway.storage.db import Database

SECRET_KEY_PREFIX = "sk_"
TOKEN_PREFIX = "cst_"


class AuthenticationError(Exception):
    """No usable credentials: the request is answered with HTTP 401."""


@dataclass(frozen=True)
class Caller:
    kind: Literal["anonymous", "secret_key", "customer"]
    key_id: uuid.UUID | None = None
    customer_id: uuid.UUID | None = None

    @property
    def is_secret_key(self) -> bool:
        return self.kind == "secret_key"

    @property
    def is_customer(self) -> bool:
        return self.kind == "customer"


ANONYMOUS = Caller(kind="anonymous")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class ApiKeyInfo:
    id: uuid.UUID
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


async def create_api_key(db: Database, name: str) -> tuple[ApiKeyInfo, str]:
    """Create a key; the plain key is returned once and never stored."""
    key = SECRET_KEY_PREFIX + secrets.token_urlsafe(32)
    row = await db.fetchrow(
        "INSERT INTO api_keys (name, prefix, key_hash) VALUES ($1, $2, $3)"
        " RETURNING id, name, prefix, created_at, revoked_at",
        name,
        key[:10],
        hash_key(key),
    )
    assert row is not None
    return ApiKeyInfo(**dict(row)), key


async def list_api_keys(db: Database) -> list[ApiKeyInfo]:
    rows = await db.fetch(
        "SELECT id, name, prefix, created_at, revoked_at FROM api_keys ORDER BY created_at, id"
    )
    return [ApiKeyInfo(**dict(r)) for r in rows]


async def revoke_api_key(db: Database, key_id: uuid.UUID) -> bool:
    """Revoke a key; False when no such active key exists."""
    status = await db.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL", key_id
    )
    return status.endswith(" 1")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue_customer_token(
    secret: str, customer_id: uuid.UUID, expires_in: timedelta, now: datetime | None = None
) -> tuple[str, datetime]:
    now = now or datetime.now(UTC)
    expires_at = (now + expires_in).replace(microsecond=0)
    claims = orjson.dumps({"cid": str(customer_id), "exp": int(expires_at.timestamp())})
    body = _b64(claims)
    signature = _b64(hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest())
    return f"{TOKEN_PREFIX}{body}.{signature}", expires_at


def verify_customer_token(secret: str, token: str, now: datetime | None = None) -> uuid.UUID:
    """The customer id of a valid token; AuthenticationError when forged, malformed or expired."""
    if not token.startswith(TOKEN_PREFIX) or token.count(".") != 1:
        raise AuthenticationError("malformed session token")
    body, signature = token[len(TOKEN_PREFIX) :].split(".")
    expected = _b64(hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(expected, signature):
        raise AuthenticationError("invalid session token")
    try:
        claims = orjson.loads(_unb64(body))
        customer_id = uuid.UUID(claims["cid"])
        expires = int(claims["exp"])
    except (ValueError, KeyError, TypeError) as exc:
        raise AuthenticationError("malformed session token") from exc
    if (now or datetime.now(UTC)).timestamp() >= expires:
        raise AuthenticationError("session token expired")
    return customer_id


async def authenticate(db: Database, token_secret: str, authorization: str | None) -> Caller:
    """The caller of a request from its Authorization header (one round trip when present)."""
    if not authorization:
        return ANONYMOUS
    scheme, _, credential = authorization.partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential:
        raise AuthenticationError("use Authorization: Bearer <secret key or session token>")
    if credential.startswith(SECRET_KEY_PREFIX):
        digest = hash_key(credential)
        row = await db.fetchrow(
            "SELECT id, key_hash FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL", digest
        )
        if row is None or not hmac.compare_digest(row["key_hash"], digest):
            raise AuthenticationError("unknown or revoked secret key")
        return Caller(kind="secret_key", key_id=row["id"])
    customer_id = verify_customer_token(token_secret, credential)
    exists = await db.fetchval("SELECT EXISTS (SELECT 1 FROM customers WHERE id = $1)", customer_id)
    if not exists:
        raise AuthenticationError("the session's customer no longer exists")
    return Caller(kind="customer", customer_id=customer_id)


MAX_SESSION_SECONDS = 7 * 24 * 3600


async def create_customer_session(
    db: Database, token_secret: str, customer_external_id: str, expires_in_seconds: int
) -> tuple[str, datetime] | UserError:
    """A session token for one customer, valid for ``expires_in_seconds`` (at most a week)."""
    if not 0 < expires_in_seconds <= MAX_SESSION_SECONDS:
        return invalid(
            f"expiresInSeconds must be between 1 and {MAX_SESSION_SECONDS}",
            "input",
            "expiresInSeconds",
        )
    customer_id = await db.fetchval(
        "SELECT id FROM customers WHERE external_id = $1", customer_external_id
    )
    if customer_id is None:
        return not_found(
            f"no customer with externalId {customer_external_id!r}", "input", "customerExternalId"
        )
    return issue_customer_token(token_secret, customer_id, timedelta(seconds=expires_in_seconds))
