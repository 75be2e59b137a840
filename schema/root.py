"""The root types: every field delegates to a thin resolver in resolvers/."""

from __future__ import annotations

import strawberry

from resolvers import admin, alerts, queries, reservations, usage
from schema.admin import (
    CancelSubscriptionResult,
    CreateCustomerResult,
    CreateCustomerSessionResult,
    CreateSubscriptionResult,
    GrantUsageCreditsResult,
    RevokeCustomerSessionsResult,
    SetupPricingModelResult,
    UpdatePricingModelResult,
)
from schema.alerts import CreateUsageAlertResult, DeleteUsageAlertResult
from schema.billing import Billing, CustomerConnection, UsageBalance
from schema.reservations import (
    ReleaseUsageReservationResult,
    ReserveUsageResult,
    VoidUsageEventResult,
)
from schema.usage import CreateUsageEventResult
from schema.webhooks import (
    CreateWebhookEndpointResult,
    DeleteWebhookEndpointResult,
    WebhookEndpoint,
)


@strawberry.type(
    description="Reads. A customer session token reads its own customer only; a secret key"
    " reads any customer, named by customerExternalId."
)
class Query:
    billing: Billing | None = strawberry.field(
        resolver=queries.billing,
        description="The caller's billing picture. A customer session reads its own customer"
        " (customerExternalId omitted or its own; another customer's: null). A secret key"
        " must pass customerExternalId (without it: null, with a hint in the response's"
        " extensions.warnings). Unknown customer: null.",
    )
    usage_balance: UsageBalance | None = strawberry.field(
        resolver=queries.usage_balance,
        description="checkUsageBalance: one meter's balance on the customer's current (or the"
        " named) subscription. Null when the meter has no balance there, or the customer is"
        " unknown, another's, or (secret key) not named: see Query.billing.",
    )
    customers: CustomerConnection = strawberry.field(
        resolver=queries.customers_page,
        description="Dashboards (secret key only): customers in creation order, page by page"
        " (Relay cursor connection: first/after forward, last/before backward, at most 100"
        " a page).",
    )
    webhook_endpoints: list[WebhookEndpoint] = strawberry.field(
        resolver=alerts.webhook_endpoints,
        description="Secret key only: the webhook endpoints, each with its recent deliveries.",
    )


@strawberry.type(
    description="Writes. Expected failures are data: every result is a union of the success"
    " type and UserError types. Usage mutations accept a customer session token or a secret"
    " key; everything else needs a secret key."
)
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
    update_pricing_model: UpdatePricingModelResult = strawberry.field(
        resolver=admin.update_pricing_model,
        description="Apply a definition to an existing pricing model, by slug: add what is new,"
        " update names and flags, archive what is gone; never rewrite the price of usage"
        " already recorded.",
    )
    create_customer: CreateCustomerResult = strawberry.field(
        resolver=admin.create_customer,
        description="Create a customer on the default pricing model (secret key only). It has"
        " no subscription yet: follow with createSubscription.",
    )
    create_subscription: CreateSubscriptionResult = strawberry.field(
        resolver=admin.create_subscription,
        description="Subscribe a customer to a subscription price (secret key only): starts"
        " its billing periods and grants the product's usage credits.",
    )
    cancel_subscription: CancelSubscriptionResult = strawberry.field(
        resolver=admin.cancel_subscription,
        description="Cancel a subscription at once (secret key only): it stops being current,"
        " so usage can no longer be charged to it.",
    )
    grant_usage_credits: GrantUsageCreditsResult = strawberry.field(
        resolver=admin.grant_usage_credits,
        description="Grant extra credits on one meter of a subscription (secret key only),"
        " optionally expiring (usage consumes the soonest-expiring credits first).",
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
    create_usage_alert: CreateUsageAlertResult = strawberry.field(
        resolver=alerts.create_usage_alert,
        description="Secret key only: a threshold on one meter's balance, for one customer or"
        " every customer of the meter's pricing model.",
    )
    delete_usage_alert: DeleteUsageAlertResult = strawberry.field(
        resolver=alerts.delete_usage_alert,
        description="Secret key only: stop an alert; the events it already wrote are still"
        " delivered.",
    )
    create_webhook_endpoint: CreateWebhookEndpointResult = strawberry.field(
        resolver=alerts.create_webhook_endpoint,
        description="Deliveries follow the Standard Webhooks specification (webhook-id,"
        " webhook-timestamp, webhook-signature headers; HMAC-SHA256 with the returned whsec_"
        " secret).",
    )
    delete_webhook_endpoint: DeleteWebhookEndpointResult = strawberry.field(
        resolver=alerts.delete_webhook_endpoint,
        description="Secret key only: stop an endpoint and cancel its pending deliveries.",
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
