"""Query resolvers: parse arguments, authorize, call one gateway function, map the result."""

from __future__ import annotations

from typing import Annotated

import strawberry

import schema.paging as paging_docs
from gateway.billing import customers
from gateway.billing.paging import encode_cursor
from gateway.callers import authz
from resolvers import history
from resolvers._args import checked_arguments, opt
from schema.billing import Billing, Customer, CustomerConnection, CustomerEdge, UsageBalance
from schema.paging import PageInfo

DEFAULT_CUSTOMERS = 25


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
    info: strawberry.Info,
    first: Annotated[int | None, strawberry.argument(description=paging_docs.FIRST)] = 25,
    after: Annotated[
        str | None, strawberry.argument(description=paging_docs.AFTER)
    ] = strawberry.UNSET,
    last: Annotated[
        int | None, strawberry.argument(description=paging_docs.LAST)
    ] = strawberry.UNSET,
    before: Annotated[
        str | None, strawberry.argument(description=paging_docs.BEFORE)
    ] = strawberry.UNSET,
) -> CustomerConnection:
    ctx = info.context
    authz.require_secret_key(ctx.caller)
    request = history.page_request(first, opt(after), opt(last), opt(before), DEFAULT_CUSTOMERS)
    page = await customers.customers_page(ctx.db, request)
    edges = [CustomerEdge(cursor=encode_cursor(c.id), node=Customer(row=c)) for c in page.items]
    return CustomerConnection(
        edges=edges, page_info=PageInfo.of(page, lambda c: encode_cursor(c.id))
    )
