"""Usage history (Billing.usageEvents) and Relay paging on it and on customers."""

from __future__ import annotations

import uuid
from typing import Any

from gateway.billing.paging import encode_cursor
from gateway.storage.db import Database, start_counting
from tests.conftest import GraphQLClient
from tests.factories import (
    CREATE_USAGE_EVENTS,
    create_customer,
    customer_on_plan,
    ok,
    record,
    session_token,
    setup_pricing,
)

HISTORY = """
query($c: String, $meter: String, $sub: ID, $first: Int, $after: String, $last: Int,
      $before: String) {
  billing(customerExternalId: $c) {
    usageEvents(meterSlug: $meter, subscriptionId: $sub, first: $first, after: $after,
                last: $last, before: $before) {
      edges { cursor node { id transactionId amount subscriptionId } }
      pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    }
  }
}
"""
HISTORY_COUNT = HISTORY.replace("pageInfo {", "totalCount pageInfo {")


async def _history(gql: GraphQLClient, token: str | None = "default", **variables: Any) -> Any:
    variables.setdefault("c", "user-1")
    return ok(await gql(HISTORY, variables, token=token), "billing")["usageEvents"]


async def _record_batch(gql: GraphQLClient, sub_id: str, meter: str, ids: list[str]) -> None:
    items = [
        {
            "target": {"usageMeterSlug": meter},
            "subscriptionId": sub_id,
            "amount": 1,
            "transactionId": t,
        }
        for t in ids
    ]
    results = ok(await gql(CREATE_USAGE_EVENTS, {"input": items}), "createUsageEvents")
    assert [r["__typename"] for r in results] == ["UsageEventRecorded"] * len(ids)


async def _newest_first(db: Database, external_id: str = "user-1") -> list[tuple[str, str]]:
    """(transaction id, cursor) of the customer's events in the promised order: id desc."""
    rows = await db.fetch(
        "SELECT e.id, e.transaction_id FROM usage_events e JOIN customers c"
        " ON c.id = e.customer_id WHERE c.external_id = $1 ORDER BY e.id DESC",
        external_id,
    )
    return [(r["transaction_id"], encode_cursor(r["id"])) for r in rows]


async def test_a_later_request_comes_first(gql: GraphQLClient, db: Database) -> None:
    await setup_pricing(gql)
    sub = await customer_on_plan(gql)
    for t in ("first", "second", "third"):
        await record(gql, subscriptionId=sub, amount=2, transactionId=t)
    page = await _history(gql)
    assert [e["node"]["transactionId"] for e in page["edges"]] == ["third", "second", "first"]
    assert {e["node"]["amount"] for e in page["edges"]} == {2}
    assert page["pageInfo"] == {
        "hasNextPage": False,
        "hasPreviousPage": False,
        "startCursor": page["edges"][0]["cursor"],
        "endCursor": page["edges"][-1]["cursor"],
    }


async def test_forward_pages_cross_boundaries_at_a_pinned_cost(
    gql: GraphQLClient, db: Database
) -> None:
    await setup_pricing(gql)
    sub = await customer_on_plan(gql)
    await _record_batch(gql, sub, "generations", [f"g{i}" for i in range(7)])
    await _record_batch(gql, sub, "api_calls", ["a0", "a1"])
    expected = await _newest_first(db)
    assert len(expected) == 9
    seen: list[tuple[str, str]] = []
    after = None
    for number in range(3):
        counter = start_counting()
        page = await _history(gql, first=4, after=after)
        # the customer by externalId, the page (the key is cached): one however deep
        assert counter.count == 2, counter.statements
        seen += [(e["node"]["transactionId"], e["cursor"]) for e in page["edges"]]
        assert page["pageInfo"] == {
            "hasNextPage": number < 2,
            "hasPreviousPage": number > 0,
            "startCursor": page["edges"][0]["cursor"],
            "endCursor": page["edges"][-1]["cursor"],
        }
        after = page["pageInfo"]["endCursor"]
    assert seen == expected
    assert [len(p) for p in (seen[:4], seen[4:8], seen[8:])] == [4, 4, 1]


async def test_backward_pages_from_the_end_and_from_a_cursor(
    gql: GraphQLClient, db: Database
) -> None:
    await setup_pricing(gql)
    sub = await customer_on_plan(gql)
    await _record_batch(gql, sub, "generations", [f"g{i}" for i in range(5)])
    expected = await _newest_first(db)
    tail = await _history(gql, last=2)
    assert [(e["node"]["transactionId"], e["cursor"]) for e in tail["edges"]] == expected[3:]
    assert tail["pageInfo"] == {
        "hasNextPage": False,
        "hasPreviousPage": True,
        "startCursor": expected[3][1],
        "endCursor": expected[4][1],
    }
    before = await _history(gql, last=2, before=tail["pageInfo"]["startCursor"])
    assert [(e["node"]["transactionId"], e["cursor"]) for e in before["edges"]] == expected[1:3]
    assert before["pageInfo"] == {
        "hasNextPage": True,
        "hasPreviousPage": True,
        "startCursor": expected[1][1],
        "endCursor": expected[2][1],
    }
    head = await _history(gql, last=2, before=before["pageInfo"]["startCursor"])
    assert [(e["node"]["transactionId"], e["cursor"]) for e in head["edges"]] == expected[:1]
    assert head["pageInfo"]["hasPreviousPage"] is False
    # `before` alone takes `first` items
    assert len((await _history(gql, first=3, before=expected[4][1]))["edges"]) == 3


async def test_filters_and_total_counts(gql: GraphQLClient, db: Database) -> None:
    await setup_pricing(gql)
    sub = await customer_on_plan(gql)
    other_sub = await customer_on_plan(gql, "user-2")
    await _record_batch(gql, sub, "generations", ["g0", "g1", "g2"])
    await _record_batch(gql, sub, "api_calls", ["a0"])
    await _record_batch(gql, other_sub, "generations", ["o0", "o1"])

    async def ids_and_count(**variables: Any) -> tuple[list[str], int]:
        variables.setdefault("c", "user-1")
        page = ok(await gql(HISTORY_COUNT, variables), "billing")["usageEvents"]
        return sorted(e["node"]["transactionId"] for e in page["edges"]), page["totalCount"]

    assert await ids_and_count() == (["a0", "g0", "g1", "g2"], 4)
    newest = (await _newest_first(db))[0][0]
    assert await ids_and_count(first=1) == ([newest], 4)
    assert await ids_and_count(meter="api_calls") == (["a0"], 1)
    assert await ids_and_count(meter="generations", sub=sub) == (["g0", "g1", "g2"], 3)
    assert await ids_and_count(c="user-2") == (["o0", "o1"], 2)
    # another customer's subscription, an unknown meter, a malformed id: nothing
    assert await ids_and_count(sub=other_sub) == ([], 0)
    assert await ids_and_count(meter="nope") == ([], 0)
    assert await ids_and_count(sub="not-a-uuid") == ([], 0)


async def test_a_customer_token_reads_its_own_history_only(gql: GraphQLClient) -> None:
    await setup_pricing(gql)
    sub = await customer_on_plan(gql)
    other_sub = await customer_on_plan(gql, "user-2")
    await _record_batch(gql, sub, "generations", ["mine"])
    await _record_batch(gql, other_sub, "generations", ["theirs"])
    token = await session_token(gql, "user-1")
    own = ok(await gql(HISTORY, {}, token=token), "billing")["usageEvents"]
    assert [e["node"]["transactionId"] for e in own["edges"]] == ["mine"]
    assert ok(await gql(HISTORY, {"c": "user-2"}, token=token), "billing") is None
    # the other customer's subscription named through one's own billing: nothing
    page = ok(await gql(HISTORY, {"sub": other_sub}, token=token), "billing")["usageEvents"]
    assert page["edges"] == []


async def test_page_arguments_are_bounded(gql: GraphQLClient, db: Database) -> None:
    await setup_pricing(gql)
    await customer_on_plan(gql)
    cursor = encode_cursor(uuid.uuid4())
    for variables, message in [
        ({"first": 101}, "first must be between 0 and 100"),
        ({"first": -1}, "first must be between 0 and 100"),
        ({"last": 101}, "last must be between 0 and 100"),
        ({"after": "%%%"}, "after is not a cursor of this connection"),
        ({"before": "abc"}, "before is not a cursor of this connection"),
        (
            {"after": cursor, "before": cursor},
            "after and before cannot be combined: page one way at a time",
        ),
    ]:
        response = await gql(HISTORY, {"c": "user-1", **variables})
        assert response.status == 200
        assert response.data == {"billing": None}, variables
        assert [(e["message"], e["extensions"]["code"]) for e in response.errors or []] == [
            (message, "BAD_USER_INPUT")
        ], variables
    # first: 100 is the largest page
    assert (await _history(gql, first=100))["edges"] == []


async def test_the_history_query_uses_the_index(gql: GraphQLClient, db: Database) -> None:
    from gateway.billing.usage_history import _PAGES_SQL

    await setup_pricing(gql)
    sub = await customer_on_plan(gql)
    await _record_batch(gql, sub, "generations", ["g0"])
    customer = await db.fetchval(
        "SELECT customer_id FROM subscriptions WHERE id = $1", uuid.UUID(sub)
    )
    # Fresh statistics: left from earlier tests (other row counts), they made the planner
    # pick another index and a sort now and then.
    await db.execute("ANALYZE usage_events")
    async with db.transaction() as conn:
        await conn.execute("SET LOCAL enable_seqscan = off")
        plan = await conn.fetch(
            "EXPLAIN " + _PAGES_SQL,
            [customer],
            [None],
            [None],
            [True],
            [uuid.UUID(int=(1 << 128) - 1)],
            [51],
        )
    text = "\n".join(r[0] for r in plan)
    assert "usage_events_pkey" in text, text  # (customer_id, id)
    assert "Sort" not in text, text


# ------------------------------------------------------------------ customers


CUSTOMERS = """
query($first: Int, $after: String, $last: Int, $before: String) {
  customers(first: $first, after: $after, last: $last, before: $before) {
    totalCount
    edges { cursor node { externalId } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}
"""


async def test_customers_page_both_ways(gql: GraphQLClient, db: Database) -> None:
    await setup_pricing(gql)
    for i in range(5):
        await create_customer(gql, f"c{i}")
    ids = [r["id"] for r in await db.fetch("SELECT id FROM customers ORDER BY id")]
    cursors = [encode_cursor(i) for i in ids]

    async def page(**variables: Any) -> tuple[list[str], dict[str, Any], int]:
        data = ok(await gql(CUSTOMERS, variables), "customers")
        assert [e["cursor"] for e in data["edges"]] == [
            cursors[int(e["node"]["externalId"][1:])] for e in data["edges"]
        ]
        names = [e["node"]["externalId"] for e in data["edges"]]
        return names, data["pageInfo"], data["totalCount"]

    def info(nxt: bool, prev: bool, start: int | None, end: int | None) -> dict[str, Any]:
        return {
            "hasNextPage": nxt,
            "hasPreviousPage": prev,
            "startCursor": None if start is None else cursors[start],
            "endCursor": None if end is None else cursors[end],
        }

    assert await page(first=2) == (["c0", "c1"], info(True, False, 0, 1), 5)
    assert await page(first=2, after=cursors[1]) == (["c2", "c3"], info(True, True, 2, 3), 5)
    assert await page(first=2, after=cursors[3]) == (["c4"], info(False, True, 4, 4), 5)
    assert await page(last=2) == (["c3", "c4"], info(False, True, 3, 4), 5)
    assert await page(last=2, before=cursors[3]) == (["c1", "c2"], info(True, True, 1, 2), 5)
    assert await page(last=2, before=cursors[1]) == (["c0"], info(True, False, 0, 0), 5)
    assert await page(first=0) == ([], info(True, False, None, None), 5)
    assert await page() == (["c0", "c1", "c2", "c3", "c4"], info(False, False, 0, 4), 5)


async def test_a_refused_page_leaves_the_rest_of_the_document_alone(gql: GraphQLClient) -> None:
    """The failed non-null field nulls its Billing, and graphql-core cancels its siblings: the
    other Billing, loading the same subscriptions, still gets them (a shared loader future)."""
    await setup_pricing(gql)
    sub = await customer_on_plan(gql)
    response = await gql(
        '{ a: billing(customerExternalId: "user-1") { subscriptions { id }'
        " usageEvents(first: 101) { totalCount } }"
        ' b: billing(customerExternalId: "user-1") { subscriptions { id } } }'
    )
    assert response.status == 200
    assert response.data == {"a": None, "b": {"subscriptions": [{"id": sub}]}}
    assert [(e["path"], e["extensions"]["code"]) for e in response.errors or []] == [
        (["a", "usageEvents"], "BAD_USER_INPUT")
    ]
