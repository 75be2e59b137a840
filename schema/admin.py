"""Administration inputs and payloads (secret key only)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry

from schema.billing import Customer, Subscription, UsageBalance
from schema.catalog import PricingModel
from schema.errors import InvalidInput, NotFound


@strawberry.input(description="A new pricing model (secret key only).")
class SetupPricingModelInput:
    definition: str = strawberry.field(
        description="The pricing model in Flowglad's setup format, as YAML or JSON text."
    )


@strawberry.type(description="The pricing model was created.")
class PricingModelSetUp:
    pricing_model: PricingModel = strawberry.field(description="The new pricing model.")
    warnings: list[str] = strawberry.field(
        description="What the definition holds that the gateway does not model (accepted,"
        " not stored), and the names the gateway gave (unslugged usage prices, the free"
        " default product)."
    )


SetupPricingModelResult = Annotated[
    PricingModelSetUp | InvalidInput,
    strawberry.union(
        "SetupPricingModelResult",
        description="The new model, or why the definition was refused (nothing created).",
    ),
]


@strawberry.input(description="A new definition for an existing pricing model (secret key only).")
class UpdatePricingModelInput:
    pricing_model_id: strawberry.ID = strawberry.field(description="The model to update.")
    definition: str = strawberry.field(
        description="The whole pricing model in Flowglad's setup format (YAML or JSON text)."
    )


@strawberry.type(description="The pricing model was updated.")
class PricingModelUpdated:
    pricing_model: PricingModel = strawberry.field(description="The model as it is now.")
    changes: list[str] = strawberry.field(description="What was done, one line per change.")
    warnings: list[str] = strawberry.field(
        description="What the definition holds that the gateway does not model."
    )


UpdatePricingModelResult = Annotated[
    PricingModelUpdated | InvalidInput | NotFound,
    strawberry.union(
        "UpdatePricingModelResult",
        description="The updated model, or why nothing was changed.",
    ),
]


@strawberry.input(description="A new customer, on the default pricing model.")
class CreateCustomerInput:
    external_id: str = strawberry.field(
        description="Your own id for the customer (1 to 255 characters, unique): every other"
        " call names the customer by it."
    )
    name: str | None = strawberry.field(
        default=strawberry.UNSET, description="Display name; optional."
    )
    email: str | None = strawberry.field(
        default=strawberry.UNSET, description="E-mail address; optional, checked for shape."
    )


@strawberry.type(description="The customer was created.")
class CustomerCreated:
    customer: Customer = strawberry.field(description="The new customer.")


CreateCustomerResult = Annotated[
    CustomerCreated | InvalidInput,
    strawberry.union(
        "CreateCustomerResult",
        description="The new customer, or InvalidInput (e.g. the externalId exists).",
    ),
]


@strawberry.input(description="Subscribe a customer to a subscription price.")
class CreateSubscriptionInput:
    customer_external_id: str = strawberry.field(description="The customer's externalId.")
    price_slug: str = strawberry.field(description="A SUBSCRIPTION price of the pricing model.")
    start_date: datetime | None = strawberry.field(
        default=strawberry.UNSET, description="Default now; may be in the past."
    )


@strawberry.type(description="The subscription was created; its credits are granted.")
class SubscriptionCreated:
    subscription: Subscription = strawberry.field(description="The new subscription.")


CreateSubscriptionResult = Annotated[
    SubscriptionCreated | InvalidInput | NotFound,
    strawberry.union(
        "CreateSubscriptionResult",
        description="The new subscription, or why none was created.",
    ),
]


@strawberry.input(description="End a subscription now.")
class CancelSubscriptionInput:
    subscription_id: strawberry.ID = strawberry.field(description="The subscription to cancel.")


@strawberry.type(description="The subscription is canceled; usage can no longer be charged to it.")
class SubscriptionCanceled:
    subscription: Subscription = strawberry.field(description="The canceled subscription.")


CancelSubscriptionResult = Annotated[
    SubscriptionCanceled | NotFound | InvalidInput,
    strawberry.union(
        "CancelSubscriptionResult",
        description="The canceled subscription, or why it was not canceled.",
    ),
]


@strawberry.input(description="Extra credits on one meter of a subscription (goodwill, top-ups).")
class GrantUsageCreditsInput:
    subscription_id: strawberry.ID = strawberry.field(
        description="The subscription that gets the credits."
    )
    usage_meter_slug: str = strawberry.field(description="The meter the credits are on.")
    amount: int = strawberry.field(description="Credits, in events of the meter; > 0.")
    expires_at: datetime | None = strawberry.field(
        default=strawberry.UNSET,
        description="When unused credits lapse (in the future); omitted: never.",
    )


@strawberry.type(description="The credits were granted.")
class UsageCreditsGranted:
    balance: UsageBalance = strawberry.field(description="The meter's balance with the credits.")


GrantUsageCreditsResult = Annotated[
    UsageCreditsGranted | InvalidInput | NotFound,
    strawberry.union(
        "GrantUsageCreditsResult",
        description="The new balance, or why nothing was granted.",
    ),
]


@strawberry.input(description="A session token for one customer's frontend or mobile app.")
class CreateCustomerSessionInput:
    customer_external_id: str = strawberry.field(description="The customer's externalId.")
    expires_in_seconds: int | None = strawberry.field(
        default=3600, description="Lifetime of the token in seconds (default one hour)."
    )


@strawberry.type(description="A session token was issued.")
class CustomerSessionCreated:
    token: str = strawberry.field(
        description="The bearer token (cst_...): hand it to the customer's client, which sends"
        " it as `Authorization: Bearer <token>`; it reads and records only that customer."
    )
    expires_at: datetime = strawberry.field(description="When the token stops working.")


CreateCustomerSessionResult = Annotated[
    CustomerSessionCreated | NotFound | InvalidInput,
    strawberry.union(
        "CreateCustomerSessionResult", description="The token, or why none was issued."
    ),
]


@strawberry.input(description="Revoke every session token of one customer.")
class RevokeCustomerSessionsInput:
    customer_external_id: str = strawberry.field(description="The customer's externalId.")


@strawberry.type(description="The customer's session tokens were revoked.")
class CustomerSessionsRevoked:
    revoked_before: datetime = strawberry.field(
        description="Session tokens of the customer issued before this instant are refused."
    )


RevokeCustomerSessionsResult = Annotated[
    CustomerSessionsRevoked | NotFound | InvalidInput,
    strawberry.union(
        "RevokeCustomerSessionsResult",
        description="The revocation instant, or why nothing was revoked.",
    ),
]
