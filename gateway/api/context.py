"""The per-request GraphQL context: who is calling, the database, fresh loaders."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.websockets import WebSocket
from strawberry.fastapi import BaseContext

from gateway.billing.catalog import CatalogCache
from gateway.billing.loaders import Loaders
from gateway.callers.auth import Caller, CredentialCache
from gateway.callers.authz import NotAuthenticated
from gateway.live.hub import Hub
from gateway.live.reads import SharedReads
from gateway.live.sessions import Session
from gateway.settings import Settings
from gateway.storage.db import Database

if TYPE_CHECKING:
    from gateway.api.rate_limit import RateLimited


@dataclass
class Services:
    """Process-wide objects shared by all requests (no per-request state)."""

    settings: Settings
    db: Database
    catalogs: CatalogCache
    credentials: CredentialCache  # valid keys and customers' revocations (gateway.callers.auth)
    token_secret: str
    hub: Hub  # live updates: the subscriptions of this process (gateway.live)
    live_reads: SharedReads  # their reads, batched


SLOW_CLIENT_CLOSE_CODE = 4008  # graphql-transport-ws leaves 4000-4999 to applications


class Context(BaseContext):
    def __init__(self, services: Services, caller: Caller) -> None:
        super().__init__()
        self.services = services
        self.settings = services.settings
        self.db = services.db
        self.catalogs = services.catalogs
        self.caller = caller
        self.loaders = Loaders(services.db, services.catalogs)
        # Set when the operation never executed (parse, validation or variable errors): the
        # HTTP layer answers 400 to application/graphql-response+json clients (gateway.api.http).
        self.request_error = False
        # Charges the caller's rate limit this many more tokens (RateLimited when it has not
        # that many): set by the app; a request's usage events cost one each.
        self.charge: Callable[[int], None] = _free
        # Set when the request was refused for the work it asked for: HTTP 429, nothing ran.
        self.rate_limited: RateLimited | None = None
        # The compiled plan the executor ran for this request (gateway.api.graphql_fast), if any.
        self.compiled: object | None = None
        # Hints for the developer, answered in extensions.warnings (each once).
        self.warnings: dict[str, None] = {}

        # A WebSocket connection's credential, from its connection_init (gateway.api.http).
        self.live_session: Session | None = None

    def require_live_session(self) -> Session:
        if self.live_session is None:  # the router authenticates in connection_init
            raise NotAuthenticated("authentication required: connection_init's Authorization")
        return self.live_session

    async def drop_slow_client(self) -> None:
        """Close this WebSocket connection: a client that does not read its messages."""
        websocket = self.request
        if isinstance(websocket, WebSocket):
            await websocket.close(code=SLOW_CLIENT_CLOSE_CODE, reason="slow client")

    def warn(self, message: str) -> None:
        """A hint in the response's ``extensions.warnings`` (for a null that needs a word)."""
        self.warnings[message] = None


def _free(_cost: int) -> None:
    return None
