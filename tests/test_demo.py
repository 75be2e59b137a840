"""`billing-gateway demo`: the demo data, idempotent across restarts, and the command itself."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from gateway.billing.pricing_setup import parse_plan
from gateway.callers.auth import verify_customer_token
from gateway.demo import DEMO_QUERY, PRICING_PATH, banner, prepare_demo
from gateway.settings import Settings
from gateway.storage.db import Database
from tests.conftest import GraphQLClient
from tests.servers import free_port

ROOT = Path(__file__).parent.parent
BALANCES = """
query($customer: String!) {
  billing(customerExternalId: $customer) {
    customer { externalId name email }
    currentSubscription { id status price { slug } }
    usageBalances { usageMeter { slug defaultPrice { slug unitPrice usageEventsPerUnit } }
                    availableBalance usedBalance balanceLimit }
    catalog { name products { slug features { slug type amount renewalFrequency } } }
    prioritySupport: featureAccess(featureSlug: "priority_support")
  }
}
"""
EXPECTED_BALANCES = [
    {
        "usageMeter": {
            "slug": "api_calls",
            "defaultPrice": {
                "slug": "api_calls_standard",
                "unitPrice": 50,
                "usageEventsPerUnit": 1000,
            },
        },
        "availableBalance": 8750,
        "usedBalance": 1250,
        "balanceLimit": 10000,
    },
    {
        "usageMeter": {
            "slug": "ai_generations",
            "defaultPrice": {
                "slug": "ai_generations_no_charge",
                "unitPrice": 0,
                "usageEventsPerUnit": 1,
            },
        },
        "availableBalance": 97,
        "usedBalance": 3,
        "balanceLimit": 100,
    },
]


def test_the_demo_pricing_model_is_a_valid_setup_definition() -> None:
    definition, problems = parse_plan(PRICING_PATH.read_text())
    assert problems == []
    assert definition is not None
    assert definition.warnings == ()
    assert [p.slug for p in definition.products] == ["free", "pro"]
    assert [m.slug for m in definition.meters] == ["api_calls", "ai_generations"]
    assert {(f.slug, f.type, f.renewal_frequency) for f in definition.features} == {
        ("ai_generations_monthly_pro", "usage_credit_grant", "every_billing_period"),
        ("ai_generations_monthly_free", "usage_credit_grant", "every_billing_period"),
        ("api_calls_welcome", "usage_credit_grant", "once"),
        ("priority_support", "toggle", None),
    }


async def test_prepare_demo_sets_up_once_and_reuses_after(
    gql: GraphQLClient, db: Database, settings: Settings
) -> None:
    secret = settings.token_secret()
    first = await prepare_demo(db, settings, secret)
    second = await prepare_demo(db, settings, secret)
    assert (first.created, second.created) == (True, False)
    assert (second.pricing_model_id, second.customer_id, second.subscription_id) == (
        first.pricing_model_id,
        first.customer_id,
        first.subscription_id,
    )
    assert first.secret_key != second.secret_key
    assert verify_customer_token(secret, second.customer_token).customer_id == first.customer_id
    assert await db.fetchval("SELECT count(*) FROM pricing_models") == 1
    assert await db.fetchval("SELECT count(*) FROM customers") == 1
    assert await db.fetchval("SELECT count(*) FROM subscriptions") == 1
    # The seeded usage was replayed on the second start, not charged again.
    assert await db.fetchval("SELECT count(*) FROM usage_events") == 2

    response = await gql(BALANCES, {"customer": "demo-user"}, token=second.secret_key)
    assert response.errors is None
    billing = response.data["billing"]
    assert billing["customer"] == {
        "externalId": "demo-user",
        "name": "Demo User",
        "email": "demo@example.com",
    }
    assert billing["currentSubscription"] == {
        "id": str(first.subscription_id),
        "status": "ACTIVE",
        "price": {"slug": "pro_monthly"},
    }
    assert billing["usageBalances"] == EXPECTED_BALANCES
    assert billing["prioritySupport"] is True
    assert billing["catalog"]["name"] == "Billing gateway demo"
    assert [p["slug"] for p in billing["catalog"]["products"]] == ["free", "pro"]

    # The printed query works with the printed customer token.
    printed = banner(second, "http://127.0.0.1:8000/graphql")
    assert f'{{"Authorization": "Bearer {second.customer_token}"}}' in printed
    assert second.secret_key in printed
    as_customer = await gql(DEMO_QUERY, token=second.customer_token)
    assert as_customer.errors is None
    assert [b["availableBalance"] for b in as_customer.data["billing"]["usageBalances"]] == [
        8750,
        97,
    ]


async def test_a_canceled_demo_subscription_is_replaced(
    gql: GraphQLClient, db: Database, settings: Settings
) -> None:
    first = await prepare_demo(db, settings, settings.token_secret())
    canceled = await gql(
        "mutation($s: ID!) { cancelSubscription(input: {subscriptionId: $s}) { __typename } }",
        {"s": str(first.subscription_id)},
        token=first.secret_key,
    )
    assert canceled.data == {"cancelSubscription": {"__typename": "SubscriptionCanceled"}}
    again = await prepare_demo(db, settings, settings.token_secret())
    assert again.customer_id == first.customer_id
    assert again.subscription_id != first.subscription_id
    assert await db.fetchval("SELECT count(*) FROM usage_events") == 4


def _read_banner(path: Path, process: subprocess.Popen[bytes], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text()
        if "Stop with Ctrl-C" in text:
            return text
        if process.poll() is not None or time.monotonic() > deadline:
            errors = path.with_suffix(".err").read_text()
            raise AssertionError(f"no banner (exit code {process.poll()}):\n{text}\n{errors}")
        time.sleep(0.1)


def _run_demo(data_dir: Path, port: int, out: Path) -> tuple[subprocess.Popen[bytes], str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "GATEWAY_TOKEN_SECRET")}
    with out.open("w") as stdout, (out.with_suffix(".err")).open("w") as stderr:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway.cli",
                "demo",
                "--data-dir",
                str(data_dir),
                "--port",
                str(port),
            ],
            cwd=ROOT,
            env=env,
            stdout=stdout,
            stderr=stderr,
        )
    return process, _read_banner(out, process, 120)


def _field(text: str, label: str) -> str:
    match = re.search(rf"^  {label}:\s+(\S+)$", text, re.M)
    assert match, (label, text)
    return match.group(1)


def _stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise


def _query(url: str, token: str, query: str) -> Any:
    deadline = time.monotonic() + 30
    while True:
        try:
            response = httpx.post(
                url, json={"query": query}, timeout=10, headers={"Authorization": f"Bearer {token}"}
            )
            return response.json()
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_the_demo_command_end_to_end(tmp_path: Path, embedded_data_dir: Path) -> None:
    data_dir = embedded_data_dir / "demo"
    port = free_port()
    process, text = _run_demo(data_dir, port, tmp_path / "first.out")
    try:
        url = _field(text, "GraphiQL")
        key = _field(text, "Secret key")
        token = _field(text, "Customer token")
        assert url == f"http://127.0.0.1:{port}/graphql"
        assert key.startswith("sk_") and token.startswith("cst_")
        assert "Billing gateway demo (created customer demo-user, subscription " in text
        header = json.loads(re.search(r"^  (\{\"Authorization\".*\})$", text, re.M).group(1))  # type: ignore[union-attr]
        assert header == {"Authorization": f"Bearer {token}"}
        printed_query = "\n".join(
            line[2:]
            for line in text.split("and run this query:\n\n")[1]
            .split("\n\nStop with")[0]
            .splitlines()
        )
        assert printed_query == DEMO_QUERY
        result = _query(url, token, printed_query)
        billing = result["data"]["billing"]
        assert [
            (b["usageMeter"]["slug"], b["availableBalance"]) for b in billing["usageBalances"]
        ] == [("api_calls", 8750), ("ai_generations", 97)]
        assert billing["prioritySupport"] is True
        page = httpx.get(url, headers={"Accept": "text/html"}, timeout=10)
        assert "GraphiQL" in page.text
    finally:
        code = _stop(process)
    assert code == 0
    # The embedded PostgreSQL stopped with the gateway.
    assert not (data_dir / "pgdata" / "postmaster.pid").exists()

    # A restart reuses the data: same customer and subscription, usage not charged twice.
    process, again = _run_demo(data_dir, port, tmp_path / "second.out")
    try:
        subscription = re.search(r"subscription (\S+)\)", text).group(1)  # type: ignore[union-attr]
        assert f"(reused customer demo-user, subscription {subscription})" in again
        assert _field(again, "Secret key") != key
        result = _query(url, _field(again, "Customer token"), DEMO_QUERY)
        assert [b["usedBalance"] for b in result["data"]["billing"]["usageBalances"]] == [1250, 3]
        # The old token stays valid: the token secret is kept in the data directory.
        assert _query(url, token, DEMO_QUERY)["data"]["billing"]["customer"] == {
            "externalId": "demo-user",
            "name": "Demo User",
        }
    finally:
        code = _stop(process)
    assert code == 0
    assert not (data_dir / "pgdata" / "postmaster.pid").exists()
