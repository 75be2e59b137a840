"""The credential of a WebSocket connection, checked again while its subscriptions run."""

from __future__ import annotations

import time
from dataclasses import dataclass

from gateway.callers.auth import (
    SECRET_KEY_PREFIX,
    AuthenticationError,
    Caller,
    CredentialCache,
    authenticate,
    verify_customer_token,
)
from gateway.storage.db import Database


class SessionEnded(Exception):
    """The connection's credential expired or was revoked: its subscriptions end.

    Checked again before every message (``gateway.live.reads.SharedReads.check``)."""


@dataclass(frozen=True)
class Session:
    """``authorization`` as sent in ``connection_init`` (``Bearer <key or token>``)."""

    authorization: str
    caller: Caller
    expires_at: float | None  # epoch seconds; None for secret keys

    @classmethod
    async def open(
        cls,
        db: Database,
        token_secret: str,
        authorization: str,
        credentials: CredentialCache | None = None,
    ) -> Session:
        """AuthenticationError when the credential is not valid now."""
        caller = await authenticate(db, token_secret, authorization, credentials)
        if caller.kind == "anonymous":
            raise AuthenticationError("connection_init must carry Authorization: Bearer ...")
        credential = authorization.partition(" ")[2].strip()
        expires_at = None
        if not credential.startswith(SECRET_KEY_PREFIX):
            expires_at = float(verify_customer_token(token_secret, credential).expires_at)
        return cls(authorization, caller, expires_at)

    def seconds_left(self) -> float | None:
        return None if self.expires_at is None else max(0.0, self.expires_at - time.time())
