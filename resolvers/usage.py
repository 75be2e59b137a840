"""createUsageEvent and createUsageEvents."""

from __future__ import annotations

from typing import Annotated, Any

import strawberry
from strawberry import UNSET

from gateway.api.observability import count_usage_results
from gateway.billing import usage
from gateway.callers import authz
from gateway.errors import UserError
from resolvers._args import checked_except, refused_input
from schema.billing import UsageBalance
from schema.errors import to_graphql
from schema.usage import CreateUsageEventInput, UsageEventRecorded, UsageEventTarget
from schema.usage_event import UsageEvent

ONE_EVENT = strawberry.argument(description="The event to record.")
EVENTS = strawberry.argument(
    description="The events to record, at most GATEWAY_MAX_BATCH_SIZE (1,000 by default)."
)
_KINDS: dict[str, usage.TargetKind] = {
    "price_id": "priceId",
    "price_slug": "priceSlug",
    "usage_meter_id": "usageMeterId",
    "usage_meter_slug": "usageMeterSlug",
}


def target_of(target: UsageEventTarget) -> tuple[usage.TargetKind, str]:
    """The one target named (@oneOf guarantees exactly one before any resolver runs)."""
    for name, kind in _KINDS.items():
        value = getattr(target, name)
        if value is not None and value is not UNSET:
            return kind, str(value)
    raise ValueError("no target")  # unreachable: @oneOf


def _parse(item: CreateUsageEventInput) -> usage.UsageInput:
    # opt() written out: this runs once per event, a batch's hundred times per request.
    kind, target = target_of(item.target)
    amount = item.amount
    subscription_id = item.subscription_id
    transaction_id = item.transaction_id
    usage_date = item.usage_date
    properties = item.properties
    return usage.UsageInput(
        target_kind=kind,
        target=target,
        amount=None if amount is UNSET else amount,
        subscription_id=None
        if subscription_id is None or subscription_id is UNSET
        else str(subscription_id),
        transaction_id=None if transaction_id is UNSET else transaction_id,
        usage_date=None if usage_date is UNSET else usage_date,
        properties=None if properties is UNSET else properties,
        require_balance=bool(item.require_balance),
    )


def map_result(result: usage.UsageResult) -> Any:
    if isinstance(result, UserError):
        return to_graphql(result)
    return UsageEventRecorded(
        usage_event=UsageEvent.from_json(result.event_data),
        replayed=result.replayed,
        balance=None if result.balance is None else UsageBalance(row=result.balance),
    )


@checked_except("input")
async def create_usage_event(
    info: strawberry.Info, input: Annotated[CreateUsageEventInput, ONE_EVENT]
) -> Any:
    ctx = info.context
    authz.require_caller(ctx.caller)
    refused = refused_input(input, ["input"])
    result = refused or await usage.record_usage_event(
        ctx.db, ctx.settings, ctx.caller, _parse(input)
    )
    count_usage_results([result])  # gateway_usage_events_total{result}
    return map_result(result)


@checked_except("input")
async def create_usage_events(
    info: strawberry.Info, input: Annotated[list[CreateUsageEventInput], EVENTS]
) -> list[Any]:
    ctx = info.context
    authz.require_caller(ctx.caller)
    # Each item's text is checked alone: a refused item is answered, the others recorded.
    items = [refused_input(item, ["input", str(i)]) or _parse(item) for i, item in enumerate(input)]
    results = await usage.record_usage_events(ctx.db, ctx.settings, ctx.caller, items)
    if isinstance(results, UserError):
        # The batch as a whole is refused: every item gets the same answer.
        return [to_graphql(results) for _ in input]
    count_usage_results(results)
    return [map_result(r) for r in results]
