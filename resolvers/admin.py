"""Administration mutations (secret key only)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import strawberry

from gateway import authz, balances, catalog_setup, customers, subscriptions
from gateway.auth import issue_customer_token
from gateway.errors import UserError, invalid, not_found
from resolvers._args import opt
from schema.admin import (
    CancelSubscriptionInput,
    CreateCustomerInput,
    CreateCustomerSessionInput,
    CreateSubscriptionInput,
    CustomerCreated,
    CustomerSessionCreated,
    GrantUsageCreditsInput,
    PricingModelSetUp,
    SetupPricingModelInput,
    SubscriptionCanceled,
    SubscriptionCreated,
    UsageCreditsGranted,
)
from schema.billing import Customer, Subscription, UsageBalance
from schema.catalog import PricingModel
from schema.errors import to_graphql

MAX_SESSION_SECONDS = 7 * 24 * 3600


async def setup_pricing_model(info: strawberry.Info, input: SetupPricingModelInput) -> Any:
    ctx = info.context
    authz.require_secret_key(ctx.caller)
    result = await catalog_setup.setup_pricing_model(ctx.db, input.definition)
    if isinstance(result, UserError):
        return to_graphql(result)
    ctx.catalogs.invalidate(result)
    return PricingModelSetUp(
        pricing_model=PricingModel(catalog=await ctx.loaders.catalog.load(result))
    )


async def create_customer(info: strawberry.Info, input: CreateCustomerInput) -> Any:
    ctx = info.context
    authz.require_secret_key(ctx.caller)
    result = await customers.create_customer(
        ctx.db, input.external_id, opt(input.name), opt(input.email)
    )
    if isinstance(result, UserError):
        return to_graphql(result)
    return CustomerCreated(customer=Customer(row=result))


async def create_subscription(info: strawberry.Info, input: CreateSubscriptionInput) -> Any:
    ctx = info.context
    authz.require_secret_key(ctx.caller)
    result = await subscriptions.create_subscription(
        ctx.db, ctx.catalogs, input.customer_external_id, input.price_slug, opt(input.start_date)
    )
    if isinstance(result, UserError):
        return to_graphql(result)
    return SubscriptionCreated(subscription=Subscription(row=result))


async def cancel_subscription(info: strawberry.Info, input: CancelSubscriptionInput) -> Any:
    ctx = info.context
    authz.require_secret_key(ctx.caller)
    result = await subscriptions.cancel_subscription(ctx.db, str(input.subscription_id))
    if isinstance(result, UserError):
        return to_graphql(result)
    return SubscriptionCanceled(subscription=Subscription(row=result))


async def grant_usage_credits(info: strawberry.Info, input: GrantUsageCreditsInput) -> Any:
    ctx = info.context
    authz.require_secret_key(ctx.caller)
    sub_id = subscriptions.parse_id(str(input.subscription_id))
    if sub_id is None:
        return to_graphql(
            not_found(f"no subscription {input.subscription_id}", "input", "subscriptionId")
        )
    result = await balances.grant_usage_credits(
        ctx.db, sub_id, input.usage_meter_slug, input.amount, opt(input.expires_at)
    )
    if isinstance(result, UserError):
        return to_graphql(result)
    return UsageCreditsGranted(balance=UsageBalance(row=result))


async def create_customer_session(info: strawberry.Info, input: CreateCustomerSessionInput) -> Any:
    ctx = info.context
    authz.require_secret_key(ctx.caller)
    seconds = 3600 if input.expires_in_seconds is None else input.expires_in_seconds
    if seconds <= 0 or seconds > MAX_SESSION_SECONDS:
        return to_graphql(
            invalid(
                f"expiresInSeconds must be between 1 and {MAX_SESSION_SECONDS}",
                "input",
                "expiresInSeconds",
            )
        )
    customer = await ctx.loaders.customer_by_external_id.load(input.customer_external_id)
    if customer is None:
        return to_graphql(
            not_found(
                f"no customer with externalId {input.customer_external_id!r}",
                "input",
                "customerExternalId",
            )
        )
    token, expires_at = issue_customer_token(
        ctx.services.token_secret, customer.id, timedelta(seconds=seconds)
    )
    return CustomerSessionCreated(token=token, expires_at=expires_at)
