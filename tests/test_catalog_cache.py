"""The per-process catalog cache is dropped when any process changes the catalog."""

from __future__ import annotations

import asyncio
import uuid

from gateway.billing.catalog import notify_catalog_changed
from gateway.storage.db import Database, start_counting
from tests.factories import ok, setup_pricing

QUERY = '{ billing(customerExternalId: "user-1") { catalog { usageMeters { slug defaultPrice { slug } } } } }'


async def _defaults(gql) -> dict[str, str]:
    data = ok(await gql(QUERY), "billing")
    return {m["slug"]: m["defaultPrice"]["slug"] for m in data["catalog"]["usageMeters"]}


async def test_a_catalog_change_notified_by_another_process_is_seen_at_once(
    gql, db: Database, app
) -> None:
    model = await setup_pricing(gql)
    await gql('mutation { createCustomer(input: {externalId: "user-1"}) { __typename } }')
    assert (await _defaults(gql))["generations"] == "generations_overage"
    counter = start_counting()
    await _defaults(gql)
    assert counter.count == 1  # the customer: the key and the catalog came from caches

    # Another process archives the paid default: the default moves back to no-charge, and the
    # change is announced in the same transaction.
    async with db.transaction() as conn:
        await conn.execute(
            "UPDATE prices SET is_default = false, active = false WHERE slug = 'generations_overage'"
        )
        await conn.execute(
            "UPDATE prices SET is_default = true WHERE slug = 'generations_no_charge'"
        )
        await notify_catalog_changed(conn, uuid.UUID(model["id"]))
    catalogs = app.state.services.catalogs
    for _ in range(50):
        if uuid.UUID(model["id"]) not in catalogs._entries:
            break
        await asyncio.sleep(0.02)
    assert (await _defaults(gql))["generations"] == "generations_no_charge"
