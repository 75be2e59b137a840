"""Subscription resolvers: authorize like the queries, then follow one feed of gateway.live."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Annotated

import strawberry
from graphql import GraphQLError

from gateway.api.context import Context
from gateway.billing.loaders import Loaders
from gateway.callers import authz
from gateway.live.feeds import SessionEnded, alert_feed, balance_feed
from resolvers._args import checked_subscription, opt
from resolvers.queries import CUSTOMER, SUBSCRIPTION
from schema.alerts import UsageAlertEvent
from schema.billing import UsageBalance


def _ended(exc: SessionEnded) -> GraphQLError:
    return GraphQLError(f"the subscription ended: {exc}", extensions={"code": "UNAUTHENTICATED"})


@checked_subscription
async def usage_balance(
    info: strawberry.Info,
    meter_slug: Annotated[str, strawberry.argument(description="The usage meter's slug.")],
    customer_external_id: Annotated[str | None, CUSTOMER] = strawberry.UNSET,
    subscription_id: Annotated[strawberry.ID | None, SUBSCRIPTION] = strawberry.UNSET,
) -> AsyncGenerator[UsageBalance, None]:
    ctx: Context = info.context
    session = ctx.require_live_session()
    loaders = Loaders(ctx.db, ctx.catalogs)
    customer = await authz.customer_for(session.caller, loaders, opt(customer_external_id))
    sub = (
        None
        if customer is None
        else await authz.subscription_for(loaders, customer, opt(subscription_id))
    )
    meter = None
    if sub is not None:
        catalog = await loaders.catalog.load(sub.pricing_model_id)
        meter = None if catalog is None else catalog.meter_by_slug.get(meter_slug)
    if sub is None or meter is None:
        # Another customer's balance reads like a missing one, as with Query.usageBalance.
        raise GraphQLError(
            f"no usage balance of meter {meter_slug} for this customer and subscription",
            extensions={"code": "NOT_FOUND"},
        )
    feed = balance_feed(
        ctx.services.hub,
        ctx.services.live_reads,
        (sub.id, meter.id),
        session,
        queue_size=ctx.settings.gateway_subscription_queue_size,
        on_overflow=ctx.drop_slow_client,
    )
    try:
        async for row in feed:
            if row is not None:
                ctx.loaders = Loaders(ctx.db, ctx.catalogs)  # fresh reads for every message
                yield UsageBalance(row=row)
    except SessionEnded as exc:
        raise _ended(exc) from exc


@checked_subscription
async def usage_alerts(
    info: strawberry.Info,
    customer_external_id: Annotated[
        str | None,
        strawberry.argument(
            description="A secret key: one customer's events (omitted: every customer's). A"
            " customer session token: its own (omitted or its own externalId)."
        ),
    ] = strawberry.UNSET,
) -> AsyncGenerator[UsageAlertEvent, None]:
    ctx: Context = info.context
    session = ctx.require_live_session()
    external_id = opt(customer_external_id)
    customer_id = None
    if session.caller.is_customer or external_id is not None:
        customer = await authz.customer_for(
            session.caller, Loaders(ctx.db, ctx.catalogs), external_id
        )
        if customer is None:
            raise GraphQLError(
                f"no customer {external_id}" if external_id else "no customer",
                extensions={"code": "NOT_FOUND"},
            )
        customer_id = customer.id
    feed = alert_feed(
        ctx.services.hub,
        ctx.services.live_reads,
        customer_id,
        session,
        queue_size=ctx.settings.gateway_subscription_queue_size,
        on_overflow=ctx.drop_slow_client,
    )
    try:
        async for data, pricing_model_id in feed:
            ctx.loaders = Loaders(ctx.db, ctx.catalogs)
            yield UsageAlertEvent.from_payload(data, pricing_model_id)
    except SessionEnded as exc:
        raise _ended(exc) from exc
