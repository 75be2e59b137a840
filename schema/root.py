"""The root types: every field delegates to a thin resolver in resolvers/."""

from __future__ import annotations

import strawberry

from resolvers import admin, queries, reservations, usage
from schema.admin import (
    CancelSubscriptionResult,
    CreateCustomerResult,
    CreateCustomerSessionResult,
    CreateSubscriptionResult,
    GrantUsageCreditsResult,
    RevokeCustomerSessionsResult,
    SetupPricingModelResult,
)
from schema.billing import Billing, CustomerConnection, UsageBalance
from schema.reservations import (
    ReleaseUsageReservationResult,
    ReserveUsageResult,
    VoidUsageEventResult,
)
from schema.usage import CreateUsageEventResult


@strawberry.type
class Query:
    billing: Billing | None = strawberry.field(
        resolver=queries.billing,
        description="The caller's billing picture. A customer session reads its own customer;"
        " a secret key must name the customer. Unknown customer: null.",
    )
    usage_balance: UsageBalance | None = strawberry.field(
        resolver=queries.usage_balance,
        description="checkUsageBalance: one meter's balance on the customer's current (or the"
        " named) subscription; null when the meter has no balance there.",
    )
    customers: CustomerConnection = strawberry.field(
        resolver=queries.customers_page,
        description="Dashboards (secret key only): customers page by page; first <= 100.",
    )


@strawberry.type
class Mutation:
    create_usage_event: CreateUsageEventResult = strawberry.field(
        resolver=usage.create_usage_event,
        description="Record metered usage, exactly once per (customer, meter, transactionId).",
    )
    create_usage_events: list[CreateUsageEventResult] = strawberry.field(
        resolver=usage.create_usage_events,
        description="Up to 1,000 events: one result per input, in order; items independent.",
    )
    setup_pricing_model: SetupPricingModelResult = strawberry.field(
        resolver=admin.setup_pricing_model,
        description="Create a pricing model from Flowglad's setup format (YAML or JSON).",
    )
    create_customer: CreateCustomerResult = strawberry.field(resolver=admin.create_customer)
    create_subscription: CreateSubscriptionResult = strawberry.field(
        resolver=admin.create_subscription
    )
    cancel_subscription: CancelSubscriptionResult = strawberry.field(
        resolver=admin.cancel_subscription
    )
    grant_usage_credits: GrantUsageCreditsResult = strawberry.field(
        resolver=admin.grant_usage_credits
    )
    create_customer_session: CreateCustomerSessionResult = strawberry.field(
        resolver=admin.create_customer_session,
        description="A short-lived bearer token for a frontend or mobile client of one customer.",
    )
    revoke_customer_sessions: RevokeCustomerSessionsResult = strawberry.field(
        resolver=admin.revoke_customer_sessions,
        description="Every session token of the customer issued before now stops working,"
        " on every process.",
    )
    reserve_usage: ReserveUsageResult = strawberry.field(
        resolver=reservations.reserve_usage,
        description="Hold credits before work whose final cost is not known yet (an LLM"
        " call), decided atomically like requireBalance: only if availableBalance >= amount.",
    )
    finalize_usage_reservation: CreateUsageEventResult = strawberry.field(
        resolver=reservations.finalize_usage_reservation,
        description="Settle a hold: records ONE usage event of the actual amount under the"
        " reservation's transactionId, and frees the hold. Idempotent.",
    )
    release_usage_reservation: ReleaseUsageReservationResult = strawberry.field(
        resolver=reservations.release_usage_reservation,
        description="Give a hold back without recording usage. Idempotent.",
    )
    void_usage_event: VoidUsageEventResult = strawberry.field(
        resolver=reservations.void_usage_event,
        description="Secret key only: reverse a usage event of its subscription's current"
        " billing period. Its credits come back and its charge goes; the transactionId stays"
        " taken. Idempotent.",
    )
