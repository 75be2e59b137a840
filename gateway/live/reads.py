"""Reads shared by the subscriptions of a process: one round trip per loop tick, whatever
their number.

A change to a balance wakes every subscription watching it at once; each then asks for the
balance and for its credential's check. Batched by aiodataloader (without its cache: every
read must start after the wake-up that asked for it, and a batch starts only after every
request of its tick), 1,000 subscriptions on one balance cost one balance query and one
check per distinct credential, not 2,000 queries.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiodataloader import DataLoader

from gateway.billing.balances import balances
from gateway.billing.records import BalanceRow
from gateway.callers.auth import AuthenticationError, CredentialCache, authenticate
from gateway.live.hub import BalanceKey
from gateway.live.sessions import Session, SessionEnded
from gateway.storage.db import Database


class SharedReads:
    def __init__(
        self, db: Database, token_secret: str, credentials: CredentialCache | None = None
    ) -> None:
        self.db = db
        self.token_secret = token_secret
        self.credentials = credentials
        self._balances: DataLoader[BalanceKey, BalanceRow | None] = DataLoader(
            self._load_balances, cache=False
        )
        self._checks: DataLoader[str, str | None] = DataLoader(self._load_checks, cache=False)

    async def balance(self, key: BalanceKey) -> BalanceRow | None:
        return await self._balances.load(key)

    async def check(self, session: Session) -> None:
        """SessionEnded when the session's credential expired or was revoked."""
        problem = await self._checks.load(session.authorization)
        if problem is not None:
            raise SessionEnded(problem)

    async def _load_balances(self, keys: Sequence[BalanceKey]) -> list[BalanceRow | None]:
        found = await balances(self.db, list(dict.fromkeys(keys)))
        return [found.get(key) for key in keys]

    async def _load_checks(self, authorizations: Sequence[str]) -> list[str | None]:
        problems: dict[str, str | None] = {}
        for authorization in dict.fromkeys(authorizations):  # one round trip each
            try:
                await authenticate(self.db, self.token_secret, authorization, self.credentials)
                problems[authorization] = None
            except AuthenticationError as exc:
                problems[authorization] = str(exc)
        return [problems[a] for a in authorizations]
