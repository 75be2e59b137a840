"""Per-request DataLoaders. Created fresh for every request in the GraphQL context, so nothing
is cached across requests here (the catalog's process cache lives in gateway.billing.catalog).

Every batch function issues one statement for all keys of a tick: a dashboard of 100
customers with subscriptions and balances costs the same number of round trips as one.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Hashable, Mapping
from functools import cached_property
from typing import TypeVar

from aiodataloader import DataLoader

from gateway.billing import balances, customers, subscriptions, usage_history
from gateway.billing.catalog import CatalogCache
from gateway.billing.records import BalanceRow, Catalog, ChargeRow, CustomerRow, SubscriptionRow
from gateway.billing.usage_history import HistoryFilter, HistoryKey, UsageEventRow
from gateway.storage.db import Database
from gateway.webhooks import endpoints as webhook_endpoints

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

    def load(self, key: K) -> asyncio.Future[V | None]:
        # One future serves every field that loads the same key. graphql-core cancels the
        # sibling fields of a failed non-null field; without the shield, cancelling one of
        # them would cancel the shared future, and the other fields (elsewhere in the
        # document) would end with CancelledError instead of their value.
        return asyncio.shield(super().load(key))

    async def batch_load_fn(self, keys: list[K]) -> list[V | None]:
        found = await self._fetch(keys)
        return [found.get(k, self._default()) for k in keys]


class Loaders:
    """The request's loaders, each built on first use: most requests need one or two of them
    (a usage event none), and every DataLoader costs some set-up."""

    def __init__(self, db: Database, catalogs: CatalogCache) -> None:
        self._db = db
        self._catalogs = catalogs

    @cached_property
    def catalog(self) -> MappingLoader[uuid.UUID, Catalog]:
        return MappingLoader(self._catalogs.get_many)

    @cached_property
    def customer_by_id(self) -> MappingLoader[uuid.UUID, CustomerRow]:
        return MappingLoader(lambda ids: customers.customers_by_id(self._db, ids))

    @cached_property
    def customer_by_external_id(self) -> MappingLoader[str, CustomerRow]:
        return MappingLoader(lambda ids: customers.customers_by_external_id(self._db, ids))

    @cached_property
    def subscription_by_id(self) -> MappingLoader[uuid.UUID, SubscriptionRow]:
        return MappingLoader(lambda ids: subscriptions.subscriptions_by_id(self._db, ids))

    @cached_property
    def subscriptions_by_customer(self) -> MappingLoader[uuid.UUID, list[SubscriptionRow]]:
        return MappingLoader(
            lambda ids: subscriptions.subscriptions_by_customer(self._db, ids), list
        )

    @cached_property
    def balance(self) -> MappingLoader[balances.BalanceKey, BalanceRow]:
        return MappingLoader(lambda keys: balances.balances(self._db, keys))

    @cached_property
    def charges(self) -> MappingLoader[uuid.UUID, list[ChargeRow]]:
        return MappingLoader(lambda ids: balances.current_charges(self._db, ids), list)

    @cached_property
    def webhook_deliveries(
        self,
    ) -> MappingLoader[tuple[uuid.UUID, int], list[webhook_endpoints.DeliveryRow]]:
        return MappingLoader(
            lambda keys: webhook_endpoints.deliveries_by_endpoint(self._db, keys), list
        )

    @cached_property
    def usage_event_page(self) -> MappingLoader[HistoryKey, list[UsageEventRow]]:
        return MappingLoader(lambda keys: usage_history.usage_event_pages(self._db, keys), list)

    @cached_property
    def usage_event_count(self) -> MappingLoader[HistoryFilter, int]:
        return MappingLoader(lambda keys: usage_history.usage_event_counts(self._db, keys), int)

    @cached_property
    def customer_count(self) -> MappingLoader[str, int]:
        """Keyed by "all" (a DataLoader needs a key): the number of customers."""

        async def count(_keys: list[str]) -> dict[str, int]:
            return {"all": await customers.customer_count(self._db)}

        return MappingLoader(count, int)
