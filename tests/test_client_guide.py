"""The recipes of docs/client-guide.md run, in order, as written there.

Every ```graphql block of the guide is a recipe, marked by the HTML comment before it with its
name and caller (secret key or customer session token); a ```json block right after it holds
its variables, where "<subscription id>" stands for the id the backend recipe looked up. The
customer token is the one the guide's first recipe creates.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.demo import prepare_demo
from gateway.settings import Settings
from gateway.storage.db import Database
from tests.conftest import GraphQLClient

GUIDE = (Path(__file__).parent.parent / "docs" / "client-guide.md").read_text()
RECIPE = re.compile(
    r"<!-- recipe: (?P<name>[a-z-]+), caller: (?P<caller>secret-key|customer-token) -->\n"
    r"```graphql\n(?P<query>.*?)```"
    r"(?:\n\n```json\n(?P<variables>.*?)```)?",
    re.DOTALL,
)


@dataclass(frozen=True)
class Recipe:
    name: str
    caller: str
    query: str
    variables: str | None


RECIPES = {
    m["name"]: Recipe(m["name"], m["caller"], m["query"], m["variables"])
    for m in RECIPE.finditer(GUIDE)
}


def test_every_graphql_block_of_the_guide_is_a_recipe() -> None:
    assert GUIDE.count("```graphql") == len(RECIPES) == 15
    assert list(RECIPES) == [
        "create-session",
        "backend-subscription",
        "backend-record",
        "frontend-record",
        "mobile-batch",
        "meter-prices",
        "backend-api-calls",
        "idempotency-conflict",
        "precheck",
        "reserve",
        "finalize",
        "release",
        "display",
        "require-balance",
        "sign-out",
    ]


async def test_the_recipes_work_as_written(
    gql: GraphQLClient, db: Database, settings: Settings
) -> None:
    demo = await prepare_demo(db, settings, settings.token_secret())  # ai_generations: 97 of 100
    state: dict[str, str] = {}

    async def run(name: str, **override: str) -> Any:
        recipe = RECIPES[name]
        variables = None
        if recipe.variables is not None:
            text = recipe.variables
            if "<subscription id>" in text:
                text = text.replace("<subscription id>", state["subscription"])
            if "<reservation id>" in text:
                text = text.replace("<reservation id>", state["reservation"])
            variables = {**json.loads(text), **override}
        token = demo.secret_key if recipe.caller == "secret-key" else state["customer token"]
        response = await gql(recipe.query, variables, token=token)
        assert response.status == 200, (name, response.body)
        assert response.errors is None, (name, response.errors)
        return response.data

    session = (await run("create-session"))["createCustomerSession"]
    assert session["__typename"] == "CustomerSessionCreated"
    state["customer token"] = session["token"]

    # 1.1 Server-side recording.
    subscription = (await run("backend-subscription"))["billing"]["currentSubscription"]
    assert subscription == {"id": str(demo.subscription_id), "status": "ACTIVE"}
    state["subscription"] = subscription["id"]
    recorded = (await run("backend-record"))["createUsageEvent"]
    assert recorded["__typename"] == "UsageEventRecorded"
    assert recorded["replayed"] is False
    assert recorded["usageEvent"]["amount"] == 1
    assert recorded["usageEvent"]["transactionId"] == "gen_img_7f3c2a"
    assert recorded["balance"] == {"availableBalance": 96, "usedBalance": 4}
    retried = (await run("backend-record"))["createUsageEvent"]
    assert retried == {**recorded, "replayed": True}

    # 1.2 Client-side recording, with the defaults, and a retry-safe batch.
    feature = (await run("frontend-record"))["createUsageEvent"]
    assert feature["__typename"] == "UsageEventRecorded"
    assert feature["usageEvent"]["amount"] == 1
    assert feature["usageEvent"]["transactionId"].startswith("gen_")
    assert feature["balance"] == {"availableBalance": 95, "usedBalance": 5, "percentUsed": 5.0}
    batch = (await run("mobile-batch"))["createUsageEvents"]
    assert batch == [
        {
            "__typename": "UsageEventRecorded",
            "replayed": False,
            "usageEvent": {"transactionId": "ios-5b1e0c3a-0001"},
            "balance": {"availableBalance": 94},
        },
        {
            "__typename": "UsageEventRecorded",
            "replayed": False,
            "usageEvent": {"transactionId": "ios-5b1e0c3a-0002"},
            "balance": {"availableBalance": 93},
        },
    ]
    flushed_again = (await run("mobile-batch"))["createUsageEvents"]
    assert [r["replayed"] for r in flushed_again] == [True, True]
    assert [r["balance"] for r in flushed_again] == [{"availableBalance": 93}] * 2

    # 2. Meter resolution.
    meters = (await run("meter-prices"))["billing"]["catalog"]["usageMeters"]
    by_slug = {m["slug"]: m for m in meters}
    api_default = by_slug["api_calls"]["defaultPrice"]
    assert {k: v for k, v in api_default.items() if k != "id"} == {
        "slug": "api_calls_standard",
        "unitPrice": 50,
        "currency": "USD",
        "usageEventsPerUnit": 1000,
    }
    assert sorted(map(tuple, (p.values() for p in by_slug["api_calls"]["prices"]))) == [
        ("api_calls_no_charge", False),
        ("api_calls_standard", True),
    ]
    assert by_slug["ai_generations"]["defaultPrice"]["slug"] == "ai_generations_no_charge"
    metered = (await run("backend-api-calls"))["createUsageEvent"]
    assert metered == {
        "__typename": "UsageEventRecorded",
        "usageEvent": {"priceId": api_default["id"], "amount": 250},
    }

    # 3. Idempotency: the same transactionId with another amount.
    conflict = (await run("idempotency-conflict"))["createUsageEvent"]
    assert conflict["__typename"] == "IdempotencyConflict"
    assert conflict["existingEvent"] == {"amount": 1, "transactionId": "gen_img_7f3c2a"}

    # 4. Pre-check.
    balance = (await run("precheck"))["usageBalance"]
    assert {k: v for k, v in balance.items() if k != "billingPeriodEnd"} == {
        "availableBalance": 93,
        "usedBalance": 7,
        "balanceLimit": 100,
        "percentUsed": 7.0,
    }

    # 4. Reserve, call the model, settle with the real cost; release when the call fails.
    held = (await run("reserve"))["reserveUsage"]
    assert held["__typename"] == "UsageReserved"
    assert (held["replayed"], held["reservation"]["status"]) == (False, "HELD")
    assert held["balance"] == {"availableBalance": 88, "reservedBalance": 5}
    state["reservation"] = held["reservation"]["id"]
    settled = (await run("finalize"))["finalizeUsageReservation"]
    assert settled == {
        "__typename": "UsageEventRecorded",
        "replayed": False,
        "usageEvent": {"amount": 3, "transactionId": "llm_req_91c2"},
        "balance": {"availableBalance": 90, "usedBalance": 10, "reservedBalance": 0},
    }
    assert (await run("finalize"))["finalizeUsageReservation"] == {**settled, "replayed": True}
    failed = (await run("reserve", request="llm_req_91c3"))["reserveUsage"]
    assert failed["balance"] == {"availableBalance": 85, "reservedBalance": 5}
    state["reservation"] = failed["reservation"]["id"]
    released = (await run("release"))["releaseUsageReservation"]
    assert released == {
        "__typename": "UsageReservationReleased",
        "reservation": {"status": "RELEASED"},
        "balance": {"availableBalance": 90, "reservedBalance": 0},
    }

    # 5. Display.
    page = (await run("display"))["billing"]
    assert page["currentSubscription"]["status"] == "ACTIVE"
    assert page["currentSubscription"]["price"] == {"slug": "pro_monthly"}
    assert page["currentSubscription"]["currentBillingPeriodEnd"] == balance["billingPeriodEnd"]
    assert page["usageBalances"] == [
        {
            "usageMeter": {"slug": "api_calls", "name": "API calls"},
            "availableBalance": 8500,
            "usedBalance": 1500,
            "balanceLimit": 10000,
            "percentUsed": 15.0,
        },
        {
            "usageMeter": {"slug": "ai_generations", "name": "AI generations"},
            "availableBalance": 90,
            "usedBalance": 10,
            "balanceLimit": 100,
            "percentUsed": 10.0,
        },
    ]
    assert page["prioritySupport"] is True
    assert sum(t["amount"] for t in page["currentChargeTotals"]) == 0

    # 6. Exhausted balance: refused atomically, with upgrade options; nothing recorded.
    refused = (await run("require-balance"))["createUsageEvent"]
    assert refused["__typename"] == "InsufficientBalance"
    assert (refused["meterSlug"], refused["availableBalance"], refused["required"]) == (
        "ai_generations",
        90,
        200,
    )
    # The customer is on the plan granting the most credits: there is nothing to upgrade to.
    assert refused["upgradeOptions"] == []
    assert (await run("precheck"))["usageBalance"]["availableBalance"] == 90

    # 7. Signing out: the session made first no longer works; a new one does.
    revoked = (await run("sign-out"))["revokeCustomerSessions"]
    assert revoked["__typename"] == "CustomerSessionsRevoked"
    response = await gql(RECIPES["precheck"].query, None, token=state["customer token"])
    assert (response.status, response.errors) == (
        401,
        [{"message": "the session token was revoked", "extensions": {"code": "UNAUTHENTICATED"}}],
    )
    state["customer token"] = (await run("create-session"))["createCustomerSession"]["token"]
    assert (await run("precheck"))["usageBalance"]["availableBalance"] == 90
