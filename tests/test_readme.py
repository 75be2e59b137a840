"""The README's first GraphQL session works when pasted in order."""

from __future__ import annotations

import json
import re
from pathlib import Path

README = (Path(__file__).parent.parent / "README.md").read_text()


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)


async def test_first_session(gql) -> None:
    setup, customer, usage, balance = _blocks("graphql")
    variables = json.loads(_blocks("json")[0])
    model = await gql(setup, variables)
    assert model.errors is None
    meters = model.data["setupPricingModel"]["pricingModel"]["usageMeters"]
    assert meters[0]["defaultPrice"] == {"slug": "generation_overage"}

    created = await gql(customer)
    assert created.errors is None
    sub = created.data["createSubscription"]["subscription"]

    recorded = await gql(usage.replace("<subscription id>", sub["id"]))
    assert recorded.errors is None
    event = recorded.data["createUsageEvent"]
    assert event["replayed"] is False
    assert event["balance"] == {"availableBalance": 999}
    again = await gql(usage.replace("<subscription id>", sub["id"]))
    assert again.data["createUsageEvent"]["replayed"] is True

    read = await gql(balance)
    assert read.errors is None
    assert read.data["usageBalance"]["availableBalance"] == 999
    assert read.data["usageBalance"]["usedBalance"] == 1
    assert read.data["usageBalance"]["percentUsed"] == 0.1
