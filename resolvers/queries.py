"""Query resolvers: parse arguments, authorize, call one gateway function, map the result."""

from __future__ import annotations

import strawberry

from gateway.billing import customers
from gateway.callers import authz
from gateway.errors import BadUserInput, UserError
from resolvers._args import checked_arguments, opt
from schema.billing import (
    Billing,
    Customer,
    CustomerConnection,
    CustomerEdge,
    PageInfo,
    UsageBalance,
)


@checked_arguments
async def billing(
    info: strawberry.Info, customer_external_id: str | None = strawberry.UNSET
) -> Billing | None:
    ctx = info.context
    customer = await authz.customer_for(ctx.caller, ctx.loaders, opt(customer_external_id))
    return None if customer is None else Billing(customer_row=customer)


@checked_arguments
async def usage_balance(
    info: strawberry.Info,
    meter_slug: str,
    customer_external_id: str | None = strawberry.UNSET,
    subscription_id: strawberry.ID | None = strawberry.UNSET,
) -> UsageBalance | None:
    ctx = info.context
    customer = await authz.customer_for(ctx.caller, ctx.loaders, opt(customer_external_id))
    if customer is None:
        return None
    sub = await authz.subscription_for(ctx.loaders, customer, opt(subscription_id))
    if sub is None:
        return None
    catalog = await ctx.loaders.catalog.load(sub.pricing_model_id)
    meter = catalog.meter_by_slug.get(meter_slug)
    if meter is None:
        return None
    balance = await ctx.loaders.balance.load((sub.id, meter.id))
    return None if balance is None else UsageBalance(row=balance)


@checked_arguments
async def customers_page(
    info: strawberry.Info, first: int | None = 25, after: str | None = strawberry.UNSET
) -> CustomerConnection:
    ctx = info.context
    authz.require_secret_key(ctx.caller)
    page = await customers.customers_page(ctx.db, 25 if first is None else first, opt(after))
    if isinstance(page, UserError):
        raise BadUserInput(page.message)
    edges = [CustomerEdge(cursor=page.cursor(c), node=Customer(row=c)) for c in page.customers]
    return CustomerConnection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=page.has_next_page, end_cursor=edges[-1].cursor if edges else None
        ),
    )
