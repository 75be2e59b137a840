"""Per-request DataLoaders. Created fresh for every request in the GraphQL context, so nothing
is cached across requests here (the catalog's process cache lives in gateway.catalog).

Every batch function issues one statement for all keys of a tick: a dashboard of 100
customers with subscriptions and balances costs the same number of round trips as one.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import TypeVar

from aiodataloader import DataLoader

from gateway import balances, customers, subscriptions
from gateway.catalog import CatalogCache
from gateway.db import Database
from gateway.records import BalanceRow, Catalog, ChargeRow, CustomerRow, SubscriptionRow

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class MappingLoader(DataLoader[K, V | None]):
    """A DataLoader over a function that returns a mapping for a list of keys."""

    def __init__(
        self,
        fetch: Callable[[list[K]], Awaitable[Mapping[K, V]]],
        default: Callable[[], V | None] = lambda: None,
    ) -> None:
        super().__init__()
        self._fetch = fetch
        self._default = default

    async def batch_load_fn(self, keys: list[K]) -> list[V | None]:
        found = await self._fetch(keys)
        return [found.get(k, self._default()) for k in keys]


class Loaders:
    def __init__(self, db: Database, catalogs: CatalogCache) -> None:
        self.catalog: MappingLoader[uuid.UUID, Catalog] = MappingLoader(catalogs.get_many)
        self.customer_by_id: MappingLoader[uuid.UUID, CustomerRow] = MappingLoader(
            lambda ids: customers.customers_by_id(db, ids)
        )
        self.customer_by_external_id: MappingLoader[str, CustomerRow] = MappingLoader(
            lambda ids: customers.customers_by_external_id(db, ids)
        )
        self.subscription_by_id: MappingLoader[uuid.UUID, SubscriptionRow] = MappingLoader(
            lambda ids: subscriptions.subscriptions_by_id(db, ids)
        )
        self.subscriptions_by_customer: MappingLoader[uuid.UUID, list[SubscriptionRow]] = (
            MappingLoader(lambda ids: subscriptions.subscriptions_by_customer(db, ids), list)
        )
        self.balance: MappingLoader[balances.BalanceKey, BalanceRow] = MappingLoader(
            lambda keys: balances.balances(db, keys)
        )
        self.charges: MappingLoader[uuid.UUID, list[ChargeRow]] = MappingLoader(
            lambda ids: balances.current_charges(db, ids), list
        )
