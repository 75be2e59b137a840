"""Query resolvers: parse arguments, authorize, call one gateway function, map the result."""

from __future__ import annotations

from typing import Annotated

import strawberry

from gateway.api.context import Context
from gateway.billing import customers
from gateway.billing.paging import encode_cursor
from gateway.callers import authz
from resolvers import history
from resolvers._args import checked_arguments, opt
from schema.billing import Billing, Customer, CustomerConnection, CustomerEdge, UsageBalance
from schema.paging import AfterArg, BeforeArg, FirstArg, LastArg, PageInfo

DEFAULT_CUSTOMERS = 25


CUSTOMER = strawberry.argument(
    description="The customer's externalId: required with a secret key; a customer session"
    " token may omit it (its own customer)."
)
SUBSCRIPTION = strawberry.argument(
    description="One of the customer's subscriptions; default: the newest current one."
)


def hint_missing_customer(ctx: Context, field: str, external_id: str | None) -> None:
    """A secret key names the customer: without one the answer is null, and says why."""
    if external_id is None and ctx.caller.is_secret_key:
        ctx.warn(
            f"{field}: a secret key must name the customer with customerExternalId;"
            " without it the answer is null (a customer session token reads its own)"
        )


@checked_arguments
async def billing(
    info: strawberry.Info,
    customer_external_id: Annotated[str | None, CUSTOMER] = strawberry.UNSET,
) -> Billing | None:
    ctx = info.context
    hint_missing_customer(ctx, "billing", opt(customer_external_id))
    customer = await authz.customer_for(ctx.caller, ctx.loaders, opt(customer_external_id))
    return None if customer is None else Billing(customer_row=customer)


@checked_arguments
async def usage_balance(
    info: strawberry.Info,
    meter_slug: Annotated[str, strawberry.argument(description="The usage meter's slug.")],
    customer_external_id: Annotated[str | None, CUSTOMER] = strawberry.UNSET,
    subscription_id: Annotated[strawberry.ID | None, SUBSCRIPTION] = strawberry.UNSET,
) -> UsageBalance | None:
    ctx = info.context
    hint_missing_customer(ctx, "usageBalance", opt(customer_external_id))
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
    first: FirstArg = 25,
    after: AfterArg = strawberry.UNSET,
    last: LastArg = strawberry.UNSET,
    before: BeforeArg = strawberry.UNSET,
) -> CustomerConnection:
    ctx = info.context
    authz.require_secret_key(ctx.caller)
    request = history.page_request(first, opt(after), opt(last), opt(before), DEFAULT_CUSTOMERS)
    page = await customers.customers_page(ctx.db, request)
    edges = [CustomerEdge(cursor=encode_cursor(c.id), node=Customer(row=c)) for c in page.items]
    return CustomerConnection(
        edges=edges, page_info=PageInfo.of(page, lambda c: encode_cursor(c.id))
    )
