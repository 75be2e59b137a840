"""The bench's data: set up through the gateway's own GraphQL API, history through SQL.

``setup()`` creates, over HTTP with a secret key: the pricing model of bench/pricing.yaml
(a copy of the tests' fixture), 100 dashboard customers each subscribed to ``pro_monthly``
with one event on every meter (so every meter has a balance), and two history customers whose
subscriptions started a year ago.

``make_history()`` gives one (subscription, meter) N usage events of history with set-based
SQL (INSERT ... SELECT FROM generate_series), spread evenly over the year, together with the
state the write path would have left: each period's recurring credit grant and its
``consumed``, the one-time grant's ``consumed``, ``usage_totals`` per period and the meter's
``event_seq``. Allocation follows the write path's rule (soonest-expiring grant first): per
period the recurring grant covers the first events, then the one-time grant covers the next
ones across periods, the rest is overage. ``gateway.billing.reconcile`` recomputes all of it
independently and must find no drift.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

PRICING = (Path(__file__).parent / "pricing.yaml").read_text()
DASHBOARD_CUSTOMERS = 100
METER = "generations"

RESULT = """__typename
  ... on UsageEventRecorded { replayed usageEvent { id transactionId }
                              balance { availableBalance usedBalance } }
  ... on UserError { code message }"""
CREATE_USAGE_EVENT = (
    "mutation($input: CreateUsageEventInput!) { createUsageEvent(input: $input) { "
    + RESULT
    + " } }"
)
CREATE_USAGE_EVENTS = (
    "mutation($input: [CreateUsageEventInput!]!) { createUsageEvents(input: $input) { "
    + RESULT
    + " } }"
)
# Reserve + finalize (benchmark 1): one hold, then the event that settles it.
RESERVE_USAGE = (
    "mutation($input: ReserveUsageInput!) { reserveUsage(input: $input) { __typename"
    " ... on UsageReserved { reservation { id } } ... on UserError { code message } } }"
)
FINALIZE_USAGE = (
    "mutation($input: FinalizeUsageReservationInput!) { finalizeUsageReservation(input: $input)"
    " { " + RESULT + " } }"
)
USAGE_BALANCE = """query($meter: String!, $customer: String) {
  usageBalance(meterSlug: $meter, customerExternalId: $customer) {
    usageMeter { slug } subscriptionId availableBalance usedBalance balanceLimit percentUsed
    billingPeriodStart billingPeriodEnd
  }
}"""
# The dashboard of tests/test_query_counts.py.
DASHBOARD = """query($first: Int) {
  customers(first: $first) {
    edges { node { externalId billing {
      currentSubscription { id price { slug } currentBillingPeriodEnd
        usageBalances { usageMeter { slug } availableBalance usedBalance percentUsed } }
      subscriptions { status }
      usageBalances { availableBalance }
      catalog { name usageMeters { slug defaultPrice { slug } } }
      currentChargeTotals { amount currency }
      featureAccess(featureSlug: "priority_support")
    } } }
    pageInfo { hasNextPage }
  }
}"""


@dataclass
class Scenario:
    token: str
    dashboard_subscriptions: list[str]
    history_customers: dict[str, str]  # external id -> subscription id


class GraphQL:
    def __init__(self, http: httpx.AsyncClient, token: str) -> None:
        self.http = http
        self.token = token

    async def __call__(self, query: str, variables: dict[str, Any] | None = None) -> Any:
        answer = await self.http.post(
            "/graphql",
            json={"query": query, "variables": variables or {}},
            headers={"Authorization": f"Bearer {self.token}"},
        )
        body = answer.json()
        if answer.status_code != 200 or body.get("errors"):
            raise RuntimeError(f"GraphQL failed ({answer.status_code}): {body}")
        return body["data"]


def _expect(result: dict[str, Any], typename: str) -> dict[str, Any]:
    if result.get("__typename") != typename:
        raise RuntimeError(f"expected {typename}, got {result}")
    return result


async def create_secret_key(database_url: str) -> str:
    from gateway.callers.auth import create_api_key
    from gateway.storage.db import Database

    db = Database(database_url, min_size=1, max_size=1)
    await db.connect()
    try:
        _, key = await create_api_key(db, "bench")
    finally:
        await db.close()
    return key


async def _customer(gql: GraphQL, external_id: str, start: str | None) -> str:
    created = await gql(
        """mutation($e: String!) { createCustomer(input: {externalId: $e}) {
             __typename ... on UserError { message } } }""",
        {"e": external_id},
    )
    _expect(created["createCustomer"], "CustomerCreated")
    subscribed = await gql(
        """mutation($e: String!, $d: DateTime) {
             createSubscription(input: {customerExternalId: $e, priceSlug: "pro_monthly",
                                        startDate: $d}) {
               __typename ... on SubscriptionCreated { subscription { id } }
               ... on UserError { message } } }""",
        {"e": external_id, "d": start},
    )
    return str(
        _expect(subscribed["createSubscription"], "SubscriptionCreated")["subscription"]["id"]
    )


async def setup(base_url: str, database_url: str, token: str | None = None) -> Scenario:
    """`token`: a secret key made beforehand (by another checkout's own command, when the
    bench compares two versions); else one is created here."""
    token = token or await create_secret_key(database_url)
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
        gql = GraphQL(http, token)
        model = await gql(
            """mutation($d: String!) { setupPricingModel(input: {definition: $d}) {
                 __typename ... on UserError { message } } }""",
            {"d": PRICING},
        )
        _expect(model["setupPricingModel"], "PricingModelSetUp")
        # Created one after the other: the dashboard's first page is exactly these customers.
        subs = [await _customer(gql, f"dash-{i:03d}", None) for i in range(DASHBOARD_CUSTOMERS)]
        year_ago = (datetime.now(UTC) - timedelta(days=350)).isoformat()
        history = {
            name: await _customer(gql, name, year_ago) for name in ("hist-small", "hist-large")
        }
        seed = []
        for i, sub in enumerate(subs):
            seed += [
                {
                    "target": {"usageMeterSlug": "generations"},
                    "subscriptionId": sub,
                    "amount": 1,
                    "transactionId": f"seed-g-{i}",
                },
                {
                    "target": {"usageMeterSlug": "api_calls"},
                    "subscriptionId": sub,
                    "amount": i + 1,
                    "transactionId": f"seed-a-{i}",
                },
                {
                    "target": {"usageMeterSlug": "unique_users"},
                    "subscriptionId": sub,
                    "amount": 1,
                    "transactionId": f"seed-u-{i}",
                    "properties": {"user": "u1"},
                },
            ]
        results = (await gql(CREATE_USAGE_EVENTS, {"input": seed}))["createUsageEvents"]
        for result in results:
            _expect(result, "UsageEventRecorded")
    return Scenario(token=token, dashboard_subscriptions=subs, history_customers=history)


async def make_history(
    database_url: str, subscription_id: str, events: int, meter_slug: str = METER
) -> float:
    """N events of history on (subscription, meter), set-based; returns seconds taken."""
    from gateway.storage.db import asyncpg_dsn

    started = asyncio.get_running_loop().time()
    conn = await asyncpg.connect(asyncpg_dsn(database_url), server_settings={"timezone": "UTC"})
    try:
        await _make_history(conn, uuid.UUID(subscription_id), events, meter_slug)
        await conn.execute("VACUUM (ANALYZE) usage_events")
        await conn.execute("VACUUM (ANALYZE) usage_totals, credit_grants, meter_balances")
    finally:
        await conn.close()
    return asyncio.get_running_loop().time() - started


async def _make_history(
    conn: asyncpg.Connection, sub_id: uuid.UUID, n: int, meter_slug: str
) -> None:
    sub = await conn.fetchrow(
        """SELECT s.*, m.id AS meter_id, pr.id AS usage_price_id, now() - interval '1 minute'
                  AS last_at
             FROM subscriptions s JOIN customers c ON c.id = s.customer_id
             JOIN usage_meters m ON m.pricing_model_id = c.pricing_model_id AND m.slug = $2
             JOIN prices pr ON pr.usage_meter_id = m.id AND pr.is_default AND pr.type = 'usage'
            WHERE s.id = $1""",
        sub_id,
        meter_slug,
    )
    assert sub is not None
    meter_id = sub["meter_id"]
    if await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM usage_events WHERE subscription_id = $1"
        " AND usage_meter_id = $2)",
        sub_id,
        meter_id,
    ):
        raise RuntimeError("make_history needs a (subscription, meter) without events")
    recurring = await conn.fetch(
        """SELECT f.id, f.amount FROM product_features pf JOIN features f ON f.id = pf.feature_id
            WHERE pf.product_id = $1 AND f.usage_meter_id = $2
              AND f.renewal_frequency = 'every_billing_period'""",
        sub["product_id"],
        meter_id,
    )
    once = await conn.fetch(
        "SELECT id, amount FROM credit_grants WHERE subscription_id = $1"
        " AND usage_meter_id = $2 AND source = 'once'",
        sub_id,
        meter_id,
    )
    if len(recurring) > 1 or len(once) > 1:
        raise RuntimeError("make_history handles one recurring and one one-time grant")
    per_period = recurring[0]["amount"] if recurring else 0
    once_left = once[0]["amount"] if once else 0
    once_taken = 0

    # Event g (1..n) happens at start + (g - 0.5) / n of the span: evenly spread, increasing.
    when = "$2::timestamptz + ($3::timestamptz - $2::timestamptz) * ((g - 0.5) / $4::float8)"
    periods = await _periods(conn, sub, n, when)
    async with conn.transaction():
        await conn.execute("SET LOCAL synchronous_commit = off")
        for p in periods:
            count = p["hi"] - p["lo"] + 1
            by_period = min(count, per_period)
            by_once = min(count - by_period, once_left - once_taken)
            once_taken += by_once
            covered = by_period + by_once
            await conn.execute(
                f"""
                INSERT INTO usage_events (id, customer_id, subscription_id, usage_meter_id,
                  price_id, billing_period_id, period_start, period_end, amount, consumed,
                  covered, seq, transaction_id, usage_date, properties, properties_given,
                  usage_date_given, created_at)
                SELECT gen_random_uuid(), $5, $1, $6, $7, billing_period_id($1, $8), $8, $9,
                       1, 1, (g - $10 < $11)::int, g, 'hist-' || g, {when}, '{{}}'::jsonb,
                       false, true, {when}
                  FROM generate_series($10::bigint, $12::bigint) g
                """,
                sub_id,
                sub["start_date"],
                sub["last_at"],
                float(n),
                sub["customer_id"],
                meter_id,
                sub["usage_price_id"],
                p["period_start"],
                p["period_end"],
                p["lo"],
                covered,
                p["hi"],
            )
            await conn.execute(
                """INSERT INTO usage_totals (subscription_id, usage_meter_id, period_start,
                     price_id, customer_id, period_end, used, covered, uncovered)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $7::bigint - $8::bigint)""",
                sub_id,
                meter_id,
                p["period_start"],
                sub["usage_price_id"],
                sub["customer_id"],
                p["period_end"],
                count,
                covered,
            )
            if recurring:
                await conn.execute(
                    """INSERT INTO credit_grants (id, customer_id, subscription_id,
                         usage_meter_id, feature_id, source, amount, consumed, granted_at,
                         expires_at)
                       VALUES (uuid_v7(), $1, $2, $3, $4, 'every_billing_period', $5, $6, $7,
                               $8)""",
                    sub["customer_id"],
                    sub_id,
                    meter_id,
                    recurring[0]["id"],
                    per_period,
                    by_period,
                    p["period_start"],
                    p["period_end"],
                )
        if once:
            await conn.execute(
                "UPDATE credit_grants SET consumed = $2 WHERE id = $1", once[0]["id"], once_taken
            )
        await conn.execute(
            """INSERT INTO meter_balances (subscription_id, usage_meter_id, customer_id,
                 event_seq) VALUES ($1, $2, $3, $4)""",
            sub_id,
            meter_id,
            sub["customer_id"],
            n,
        )


async def _periods(conn: asyncpg.Connection, sub: Any, n: int, when: str) -> list[dict[str, Any]]:
    """The periods and their event ranges without computing a period per event: the period
    of g is monotonic in g, so each boundary is found by bisection (a few dozen queries)."""

    async def period_of(g: int) -> tuple[datetime, datetime]:
        row = await conn.fetchrow(
            f"""SELECT p.period_start, p.period_end FROM (SELECT $1::bigint AS g) x
                  CROSS JOIN LATERAL billing_period($2, $5, $6, {when}) p""",
            g,
            sub["start_date"],
            sub["last_at"],
            float(n),
            sub["interval_unit"],
            sub["interval_count"],
        )
        assert row is not None
        return row["period_start"], row["period_end"]

    result: list[dict[str, Any]] = []
    lo = 1
    while lo <= n:
        start, end = await period_of(lo)
        low, high = lo, n  # the last g in the same period
        while low < high:
            mid = (low + high + 1) // 2
            if (await period_of(mid))[0] == start:
                low = mid
            else:
                high = mid - 1
        result.append({"period_start": start, "period_end": end, "lo": lo, "hi": low})
        lo = low + 1
    return result


async def verify_history(database_url: str, external_id: str) -> list[str]:
    """Drifts found by gateway.billing.reconcile on one customer ([] when the history is exact)."""
    from gateway.billing.reconcile import reconcile
    from gateway.storage.db import Database

    db = Database(database_url, min_size=1, max_size=1)
    await db.connect()
    try:
        customer = await db.fetchval("SELECT id FROM customers WHERE external_id = $1", external_id)
        return [str(d) for d in await reconcile(db, [customer])]
    finally:
        await db.close()


async def fund_reservations(base_url: str, token: str, subscriptions: list[str]) -> None:
    """Credits enough that no hold of the reserve + finalize run is refused."""
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
        gql = GraphQL(http, token)
        for sub in subscriptions:
            granted = await gql(
                """mutation($s: ID!) { grantUsageCredits(input: {subscriptionId: $s,
                     usageMeterSlug: "generations", amount: 2000000000}) {
                     __typename ... on UserError { message } } }""",
                {"s": sub},
            )
            _expect(granted["grantUsageCredits"], "UsageCreditsGranted")
