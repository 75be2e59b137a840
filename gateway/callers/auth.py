"""Who is calling: secret API keys (the merchant's backend) and customer session tokens.

Secret keys are random strings shown once; only their SHA-256 hash is stored, and a key is
looked up by hash. Customer session tokens are HMAC-SHA256 signed claims (customer id, issue
time and expiry) under the server's token secret, checked against their customer's row: a
token of a customer that no longer exists, or issued before the customer's sessions were
revoked (``revoke_customer_sessions``), is refused.

What those lookups find (a valid key's id, an existing customer's revocation instant) is kept
per process in a ``CredentialCache`` (``gateway.storage.notified_cache``): a trigger on
``api_keys`` and ``customers`` (``storage/sql/credentials.sql``) sends a notification in the
transaction of every revocation, key deletion, customer deletion or change of
``sessions_revoked_before``, whatever made it (the CLI, GraphQL, plain SQL), and every process
drops the entry when it arrives: within milliseconds, bounded by
``GATEWAY_AUTH_CACHE_SECONDS`` should a notification be lost, and at once on the process that
revoked. While the process's listener is down the cache is bypassed: every request looks its
credential up. Unknown keys and customers are never kept, so a new key works at once and
random keys fill no memory.

Issue times are read from the database clock, as the revocation instant is, so that gateway
processes with skewed clocks agree on which tokens a revocation covers; they are kept in
microseconds, so a token issued right after a revocation is not covered by it.
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
from gateway.storage.notified_cache import NotifiedCache

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


CREDENTIALS_CHANNEL = "gateway_credentials"  # sent by storage/sql/credentials.sql
_KEY = "key:"  # + the key's hash: the key's id
_CUSTOMER = "customer:"  # + the customer's id: its sessions_revoked_before in microseconds
_HEX = frozenset("0123456789abcdef")


def _entry_of(payload: str) -> str | None:
    """The entry a notification names; None (drop every entry) when it names none."""
    kind, _, value = payload.partition(":")
    if kind + ":" == _KEY and len(value) == 64 and _HEX.issuperset(value):
        return payload
    if kind + ":" == _CUSTOMER:
        try:
            return _CUSTOMER + str(uuid.UUID(value))
        except ValueError:
            return None
    return None


class CredentialCache(NotifiedCache[uuid.UUID | int]):
    """Valid keys' ids by hash, existing customers' revocation instants by id."""

    def __init__(self, max_entries: int, max_age: float) -> None:
        super().__init__(
            CREDENTIALS_CHANNEL, max_entries=max_entries, max_age=max_age, parse=_entry_of
        )


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
    """Revoke a key; False when no such active key exists.

    Every process drops the key from its cache when the trigger's notification arrives."""
    status = await db.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL", key_id
    )
    return status.endswith(" 1")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _micros(at: datetime) -> int:
    return (at - EPOCH) // timedelta(microseconds=1)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def issue_customer_token(
    secret: str, customer_id: uuid.UUID, expires_in: timedelta, now: datetime | None = None
) -> tuple[str, datetime]:
    now = now or datetime.now(UTC)
    expires_at = (now + expires_in).replace(microsecond=0)
    claims = orjson.dumps(
        {"cid": str(customer_id), "iat": _micros(now), "exp": int(expires_at.timestamp())}
    )
    body = _b64(claims)
    signature = _b64(hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest())
    return f"{TOKEN_PREFIX}{body}.{signature}", expires_at


@dataclass(frozen=True)
class TokenClaims:
    customer_id: uuid.UUID
    issued_at_us: int  # microseconds since the epoch; 0 for tokens issued without one
    expires_at: int = 0  # seconds since the epoch


def verify_customer_token(secret: str, token: str, now: datetime | None = None) -> TokenClaims:
    """The claims of a valid token; AuthenticationError when forged, malformed or expired."""
    if not token.startswith(TOKEN_PREFIX) or token.count(".") != 1 or not token.isascii():
        raise AuthenticationError("malformed session token")
    body, signature = token[len(TOKEN_PREFIX) :].split(".")
    expected = _b64(hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(expected, signature):
        raise AuthenticationError("invalid session token")
    try:
        claims = orjson.loads(_unb64(body))
        customer_id = uuid.UUID(claims["cid"])
        expires = int(claims["exp"])
        issued = int(claims.get("iat", 0))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise AuthenticationError("malformed session token") from exc
    if (now or datetime.now(UTC)).timestamp() >= expires:
        raise AuthenticationError("session token expired")
    return TokenClaims(customer_id, issued, expires)


def _printable_ascii(text: str) -> bool:
    return text.isascii() and text.isprintable()


async def authenticate(
    db: Database,
    token_secret: str,
    authorization: str | None,
    cache: CredentialCache | None = None,
) -> Caller:
    """The caller of a request from its Authorization header: one round trip when present,
    none when ``cache`` holds the credential's row (see the module docstring)."""
    if not authorization:
        return ANONYMOUS
    scheme, _, credential = authorization.partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential:
        raise AuthenticationError("use Authorization: Bearer <secret key or session token>")
    if not _printable_ascii(credential):  # keys and tokens are URL-safe base64 text
        raise AuthenticationError("malformed credential")
    if credential.startswith(SECRET_KEY_PREFIX):
        return Caller(kind="secret_key", key_id=await _key_id(db, hash_key(credential), cache))
    claims = verify_customer_token(token_secret, credential)
    revoked_before_us = await _sessions_revoked_before(db, claims.customer_id, cache)
    if claims.issued_at_us < revoked_before_us:
        raise AuthenticationError("the session token was revoked")
    return Caller(kind="customer", customer_id=claims.customer_id)


async def _key_id(db: Database, digest: str, cache: CredentialCache | None) -> uuid.UUID:
    entry = _KEY + digest
    # A dict lookup by the hash of the presented key: its timing tells nothing of a stored
    # key (the caller does not choose the hash's bytes).
    cached = cache.get(entry) if cache is not None else None
    if isinstance(cached, uuid.UUID):
        return cached
    ticket = cache.ticket() if cache is not None else 0
    row = await db.fetchrow(
        "SELECT id, key_hash FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL", digest
    )
    if row is None or not hmac.compare_digest(row["key_hash"], digest):
        raise AuthenticationError("unknown or revoked secret key")  # not cached
    key_id: uuid.UUID = row["id"]
    if cache is not None:
        cache.put(entry, key_id, ticket)
    return key_id


async def _sessions_revoked_before(
    db: Database, customer_id: uuid.UUID, cache: CredentialCache | None
) -> int:
    """The customer's revocation instant in microseconds (0: never revoked)."""
    entry = _CUSTOMER + str(customer_id)
    cached = cache.get(entry) if cache is not None else None
    if isinstance(cached, int):
        return cached
    ticket = cache.ticket() if cache is not None else 0
    # The query that checks the customer exists also reads its revocation instant.
    row = await db.fetchrow(
        "SELECT sessions_revoked_before FROM customers WHERE id = $1", customer_id
    )
    if row is None:
        raise AuthenticationError("the session's customer no longer exists")  # not cached
    revoked_before = row["sessions_revoked_before"]
    micros = 0 if revoked_before is None else _micros(revoked_before)
    if cache is not None:
        cache.put(entry, micros, ticket)
    return micros


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
    # Issued at the database clock (clock_timestamp(): not the transaction's start), the clock
    # revoke_customer_sessions() reads.
    row = await db.fetchrow(
        "SELECT id, clock_timestamp() AS now FROM customers WHERE external_id = $1",
        customer_external_id,
    )
    if row is None:
        return not_found(
            f"no customer with externalId {customer_external_id!r}", "input", "customerExternalId"
        )
    return issue_customer_token(
        token_secret, row["id"], timedelta(seconds=expires_in_seconds), now=row["now"]
    )


async def revoke_customer_sessions(
    db: Database, customer_external_id: str, cache: CredentialCache | None = None
) -> datetime | UserError:
    """Refuse every session token of the customer issued before now; returns that instant.

    Never moves the instant back: a revocation covers at least what an earlier one did. This
    process's ``cache`` forgets the customer at once, the others when the trigger's
    notification arrives.
    """
    # By the customer's id, found through customer_external_ids with the instant: on Citus the
    # update then runs on the customer's shard (by external_id it would go to every shard), and
    # Citus refuses a volatile function (clock_timestamp()) in any update of a distributed
    # table. The id of an external id never changes.
    found = await db.fetchrow(
        "SELECT customer_id, clock_timestamp() AS now FROM customer_external_ids"
        " WHERE external_id = $1",
        customer_external_id,
    )
    row = None
    if found is not None:
        row = await db.fetchrow(
            "UPDATE customers SET sessions_revoked_before"
            " = greatest(sessions_revoked_before, $2::timestamptz)"
            " WHERE id = $1 RETURNING id, sessions_revoked_before",
            found["customer_id"],
            found["now"],
        )
    if row is None:
        return not_found(
            f"no customer with externalId {customer_external_id!r}", "input", "customerExternalId"
        )
    if cache is not None:
        cache.invalidate(_CUSTOMER + str(row["id"]))
    result: datetime = row["sessions_revoked_before"]
    return result
