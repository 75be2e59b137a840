"""Administration mutations (secret key only): parse, authorize, call one gateway function,
map the result."""

from __future__ import annotations

from typing import Annotated, Any

import strawberry

from gateway.billing import balances, customers, pricing_setup, pricing_update, subscriptions
from gateway.callers import auth, authz
from gateway.errors import UserError
from resolvers._args import checked_input, opt
from schema.admin import (
    CancelSubscriptionInput,
    CreateCustomerInput,
    CreateCustomerSessionInput,
    CreateSubscriptionInput,
    CustomerCreated,
    CustomerSessionCreated,
    CustomerSessionsRevoked,
    GrantUsageCreditsInput,
    PricingModelSetUp,
    PricingModelUpdated,
    RevokeCustomerSessionsInput,
    SetupPricingModelInput,
    SubscriptionCanceled,
    SubscriptionCreated,
    UpdatePricingModelInput,
    UsageCreditsGranted,
)
from schema.billing import Customer, Subscription, UsageBalance
from schema.catalog import PricingModel
from schema.errors import respond, to_graphql

INPUT = strawberry.argument(description="What to do: see the input type's fields.")


@checked_input
async def setup_pricing_model(
    info: strawberry.Info, input: Annotated[SetupPricingModelInput, INPUT]
) -> Any:
    ctx = info.context
    authz.require_secret_key(ctx.caller)
    result = await pricing_setup.setup_pricing_model(ctx.db, input.definition)
    if isinstance(result, UserError):
        return to_graphql(result)
    catalog = await ctx.loaders.catalog.load(result.pricing_model_id)
    return PricingModelSetUp(
        pricing_model=PricingModel(catalog=catalog), warnings=list(result.warnings)
    )


@checked_input
async def update_pricing_model(
    info: strawberry.Info, input: Annotated[UpdatePricingModelInput, INPUT]
) -> Any:
    ctx = info.context
    authz.require_secret_key(ctx.caller)
    result = await pricing_update.update_pricing_model(
        ctx.db, str(input.pricing_model_id), input.definition
    )
    if isinstance(result, UserError):
        return to_graphql(result)
    # The NOTIFY reaches this process's cache asynchronously: drop the old copy now.
    ctx.catalogs.invalidate(result.pricing_model_id)
    catalog = await ctx.loaders.catalog.load(result.pricing_model_id)
    return PricingModelUpdated(
        pricing_model=PricingModel(catalog=catalog),
        changes=list(result.changes),
        warnings=list(result.warnings),
    )


@checked_input
async def create_customer(
    info: strawberry.Info, input: Annotated[CreateCustomerInput, INPUT]
) -> Any:
    ctx = info.context
    authz.require_secret_key(ctx.caller)
    result = await customers.create_customer(
        ctx.db, input.external_id, opt(input.name), opt(input.email)
    )
    return respond(result, lambda row: CustomerCreated(customer=Customer(row=row)))


@checked_input
async def create_subscription(
    info: strawberry.Info, input: Annotated[CreateSubscriptionInput, INPUT]
) -> Any:
    ctx = info.context
    authz.require_secret_key(ctx.caller)
    result = await subscriptions.create_subscription(
        ctx.db, ctx.catalogs, input.customer_external_id, input.price_slug, opt(input.start_date)
    )
    return respond(result, lambda row: SubscriptionCreated(subscription=Subscription(row=row)))


@checked_input
async def cancel_subscription(
    info: strawberry.Info, input: Annotated[CancelSubscriptionInput, INPUT]
) -> Any:
    ctx = info.context
    authz.require_secret_key(ctx.caller)
    result = await subscriptions.cancel_subscription(ctx.db, str(input.subscription_id))
    return respond(result, lambda row: SubscriptionCanceled(subscription=Subscription(row=row)))


@checked_input
async def grant_usage_credits(
    info: strawberry.Info, input: Annotated[GrantUsageCreditsInput, INPUT]
) -> Any:
    ctx = info.context
    authz.require_secret_key(ctx.caller)
    result = await balances.grant_usage_credits(
        ctx.db,
        str(input.subscription_id),
        input.usage_meter_slug,
        input.amount,
        opt(input.expires_at),
    )
    return respond(result, lambda row: UsageCreditsGranted(balance=UsageBalance(row=row)))


@checked_input
async def create_customer_session(
    info: strawberry.Info, input: Annotated[CreateCustomerSessionInput, INPUT]
) -> Any:
    ctx = info.context
    authz.require_secret_key(ctx.caller)
    seconds = opt(input.expires_in_seconds)
    result = await auth.create_customer_session(
        ctx.db,
        ctx.services.token_secret,
        input.customer_external_id,
        3600 if seconds is None else seconds,
    )
    return respond(result, lambda t: CustomerSessionCreated(token=t[0], expires_at=t[1]))


@checked_input
async def revoke_customer_sessions(
    info: strawberry.Info, input: Annotated[RevokeCustomerSessionsInput, INPUT]
) -> Any:
    ctx = info.context
    authz.require_secret_key(ctx.caller)
    result = await auth.revoke_customer_sessions(
        ctx.db, input.customer_external_id, ctx.services.credentials
    )
    return respond(result, lambda at: CustomerSessionsRevoked(revoked_before=at))
