"""Administration inputs and payloads (secret key only)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry

from schema.billing import Customer, Subscription, UsageBalance
from schema.catalog import PricingModel
from schema.errors import InvalidInput, NotFound


@strawberry.input
class SetupPricingModelInput:
    definition: str = strawberry.field(
        description="The pricing model in Flowglad's setup format, as YAML or JSON text."
    )


@strawberry.type
class PricingModelSetUp:
    pricing_model: PricingModel
    warnings: list[str] = strawberry.field(
        description="What the definition holds that the gateway does not model (accepted,"
        " not stored), and the names the gateway gave (unslugged usage prices, the free"
        " default product)."
    )


SetupPricingModelResult = Annotated[
    PricingModelSetUp | InvalidInput, strawberry.union("SetupPricingModelResult")
]


@strawberry.input
class UpdatePricingModelInput:
    pricing_model_id: strawberry.ID
    definition: str = strawberry.field(
        description="The whole pricing model in Flowglad's setup format (YAML or JSON text)."
    )


@strawberry.type
class PricingModelUpdated:
    pricing_model: PricingModel
    changes: list[str] = strawberry.field(description="What was done, one line per change.")
    warnings: list[str] = strawberry.field(
        description="What the definition holds that the gateway does not model."
    )


UpdatePricingModelResult = Annotated[
    PricingModelUpdated | InvalidInput | NotFound, strawberry.union("UpdatePricingModelResult")
]


@strawberry.input
class CreateCustomerInput:
    external_id: str
    name: str | None = strawberry.UNSET
    email: str | None = strawberry.UNSET


@strawberry.type
class CustomerCreated:
    customer: Customer


CreateCustomerResult = Annotated[
    CustomerCreated | InvalidInput, strawberry.union("CreateCustomerResult")
]


@strawberry.input
class CreateSubscriptionInput:
    customer_external_id: str
    price_slug: str = strawberry.field(description="A SUBSCRIPTION price of the pricing model.")
    start_date: datetime | None = strawberry.field(
        default=strawberry.UNSET, description="Default now; may be in the past."
    )


@strawberry.type
class SubscriptionCreated:
    subscription: Subscription


CreateSubscriptionResult = Annotated[
    SubscriptionCreated | InvalidInput | NotFound, strawberry.union("CreateSubscriptionResult")
]


@strawberry.input
class CancelSubscriptionInput:
    subscription_id: strawberry.ID


@strawberry.type
class SubscriptionCanceled:
    subscription: Subscription


CancelSubscriptionResult = Annotated[
    SubscriptionCanceled | NotFound | InvalidInput, strawberry.union("CancelSubscriptionResult")
]


@strawberry.input
class GrantUsageCreditsInput:
    subscription_id: strawberry.ID
    usage_meter_slug: str
    amount: int
    expires_at: datetime | None = strawberry.UNSET


@strawberry.type
class UsageCreditsGranted:
    balance: UsageBalance


GrantUsageCreditsResult = Annotated[
    UsageCreditsGranted | InvalidInput | NotFound, strawberry.union("GrantUsageCreditsResult")
]


@strawberry.input
class CreateCustomerSessionInput:
    customer_external_id: str
    expires_in_seconds: int | None = 3600


@strawberry.type
class CustomerSessionCreated:
    token: str
    expires_at: datetime


CreateCustomerSessionResult = Annotated[
    CustomerSessionCreated | NotFound | InvalidInput,
    strawberry.union("CreateCustomerSessionResult"),
]


@strawberry.input
class RevokeCustomerSessionsInput:
    customer_external_id: str


@strawberry.type
class CustomerSessionsRevoked:
    revoked_before: datetime = strawberry.field(
        description="Session tokens of the customer issued before this instant are refused."
    )


RevokeCustomerSessionsResult = Annotated[
    CustomerSessionsRevoked | NotFound | InvalidInput,
    strawberry.union("RevokeCustomerSessionsResult"),
]
