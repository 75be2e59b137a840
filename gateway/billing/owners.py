"""Whose rows: the customer of a subscription, a reservation or a usage event, known before
the call that writes them.

The hot path's database functions take the customer as their first argument and touch only
that customer's rows (gateway/storage/distribution.py: distributed by customer, each call
runs on one shard). A customer session names its customer; a secret key names a
subscription (or a reservation, an event), and its customer is looked up here. The answer
never changes (a row never moves to another customer), so it is cached per process with no
invalidation: a process pays one look-up per subscription it has not seen, and none for the
subscriptions it created or read. A cached owner of a row that was since removed is
harmless: the function finds no row of that customer and answers NOT_FOUND.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from gateway.callers.auth import Caller
from gateway.storage.db import Database

CACHE_SIZE = 200_000


class _OwnerCache:
    """A bounded id -> customer map. Hand-written: a dict that forgets its oldest entry when
    full is all it needs (entries never go stale, so recency bookkeeping buys nothing)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._owners: dict[uuid.UUID, uuid.UUID] = {}

    def get(self, key: uuid.UUID) -> uuid.UUID | None:
        return self._owners.get(key)

    def put(self, key: uuid.UUID, owner: uuid.UUID) -> None:
        if key not in self._owners and len(self._owners) >= self._size:
            del self._owners[next(iter(self._owners))]
        self._owners[key] = owner


_SUBSCRIPTIONS = _OwnerCache(CACHE_SIZE)
_RESERVATIONS = _OwnerCache(CACHE_SIZE)
_EVENTS = _OwnerCache(CACHE_SIZE)


def remember_subscription(subscription_id: uuid.UUID, customer_id: uuid.UUID) -> None:
    """A subscription this process created or read: its owner is known from now on."""
    _SUBSCRIPTIONS.put(subscription_id, customer_id)


def remember_reservation(reservation_id: uuid.UUID, customer_id: uuid.UUID) -> None:
    _RESERVATIONS.put(reservation_id, customer_id)


def remember_event(event_id: uuid.UUID, customer_id: uuid.UUID) -> None:
    """An event a reservation settled (a void of it needs no look-up). Events recorded by
    createUsageEvent(s) are not remembered: voids are rare, the hot path stays lean."""
    _EVENTS.put(event_id, customer_id)


async def subscription_owners(
    db: Database, subscription_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, uuid.UUID]:
    """The customer of each subscription that exists; one round trip for those not cached,
    none when all are."""
    found: dict[uuid.UUID, uuid.UUID] = {}
    missing: list[uuid.UUID] = []
    for sub_id in subscription_ids:
        owner = _SUBSCRIPTIONS.get(sub_id)
        if owner is None:
            missing.append(sub_id)
        else:
            found[sub_id] = owner
    if missing:
        rows = await db.fetch(
            "SELECT id, customer_id FROM subscriptions WHERE id = ANY($1::uuid[])", missing
        )
        for row in rows:
            _SUBSCRIPTIONS.put(row["id"], row["customer_id"])
            found[row["id"]] = row["customer_id"]
    return found


async def subscription_owner(db: Database, subscription_id: uuid.UUID) -> uuid.UUID | None:
    return (await subscription_owners(db, [subscription_id])).get(subscription_id)


async def usage_owner(
    db: Database, caller: Caller, subscription_id: uuid.UUID | None
) -> uuid.UUID | None:
    """Whose usage a call records: a customer session's own customer (whatever subscription it
    names: the function refuses another customer's), else the subscription's. None when the
    subscription does not exist (or no subscription was named by a secret key)."""
    if caller.customer_id is not None:
        return caller.customer_id
    if subscription_id is None:
        return None
    return await subscription_owner(db, subscription_id)


async def group_by_customer(
    db: Database, caller_customer_id: uuid.UUID | None, subscription_ids: list[uuid.UUID | None]
) -> tuple[dict[uuid.UUID, list[int]], list[int]]:
    """A batch's events by customer: their positions for each customer (a customer session's
    own, else each subscription's), and the positions of no existing subscription."""
    if caller_customer_id is not None:
        return {caller_customer_id: list(range(len(subscription_ids)))}, []
    found = await subscription_owners(db, {s for s in subscription_ids if s is not None})
    groups: dict[uuid.UUID, list[int]] = {}
    missing: list[int] = []
    for index, sub_id in enumerate(subscription_ids):
        owner = None if sub_id is None else found.get(sub_id)
        if owner is None:
            missing.append(index)
        else:
            groups.setdefault(owner, []).append(index)
    return groups, missing


async def _owner_by_id(
    db: Database, cache: _OwnerCache, table: str, row_id: uuid.UUID
) -> uuid.UUID | None:
    owner = cache.get(row_id)
    if owner is None:
        owner = await db.fetchval(f"SELECT customer_id FROM {table} WHERE id = $1", row_id)
        if owner is not None:
            cache.put(row_id, owner)
    return owner


async def reservation_owner_argument(
    db: Database, caller: Caller, reservation_id: uuid.UUID, id_param: str
) -> tuple[str, uuid.UUID | None] | None:
    """The customer argument of a call on a reservation, as (SQL expression for $1, the value
    of $1); None when the reservation is known not to exist.

    A reservation is often settled by another process than the one that made it (a finalize
    after a reserve, on another worker), so its owner is often not cached here. On one
    PostgreSQL the call's own statement then looks it up (``id_param`` is the reservation
    id's parameter): no round trip of its own, and a missing reservation reaches the
    function as a NULL customer, which finds no row and answers NOT_FOUND. On Citus a call is
    routed to a shard by the argument's value, so the owner is looked up first.
    """
    owner = caller.customer_id or _RESERVATIONS.get(reservation_id)
    if owner is not None:
        return "$1::uuid", owner
    if not db.distributed:
        lookup = f"(SELECT customer_id FROM usage_reservations WHERE id = {id_param})"
        return f"coalesce($1::uuid, {lookup})", None
    owner = await _owner_by_id(db, _RESERVATIONS, "usage_reservations", reservation_id)
    return None if owner is None else ("$1::uuid", owner)


async def event_owner(db: Database, event_id: uuid.UUID) -> uuid.UUID | None:
    """A usage event's customer (voids are a secret key's: the event names it)."""
    return await _owner_by_id(db, _EVENTS, "usage_events", event_id)
