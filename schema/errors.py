"""Errors as data: the UserError interface, its types, and the mapping from gateway errors."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import strawberry

from gateway import errors
from schema.scalars import Long
from schema.usage_event import UsageEvent

T = TypeVar("T")

if TYPE_CHECKING:
    from schema.catalog import Product


# The gateway's own codes are the GraphQL enum ErrorCode: one list of codes, not two. Their
# descriptions are the client's documentation, so they live here with the other GraphQL text.
ERROR_CODE_DOCS = {
    "INVALID_INPUT": "An input value is out of line; `field` names it.",
    "NOT_FOUND": "Something named in the input (a customer, price, meter...) does not exist.",
    "FORBIDDEN": "The caller may not do this to this object (e.g. another customer's).",
    "NO_CURRENT_SUBSCRIPTION": "The customer has no current subscription to charge the usage to.",
    "INSUFFICIENT_BALANCE": "requireBalance was set and the balance does not cover the amount:"
    " nothing was recorded.",
    "IDEMPOTENCY_CONFLICT": "The transactionId was already used for an event with different"
    " values; the existing event is returned.",
}
strawberry.enum(
    errors.ErrorCode,
    description="Stable codes of expected failures: branch on these, not on messages.",
)
for _value in errors.ErrorCode.__strawberry_definition__.values:  # type: ignore[attr-defined]
    _value.description = ERROR_CODE_DOCS.get(_value.name)


@strawberry.interface(
    description="An expected failure, returned as data in a mutation's result union: nothing"
    " was changed. Select `... on UserError { code message field }` in every mutation."
)
class UserError:
    code: errors.ErrorCode = strawberry.field(description="What went wrong, as a stable code.")
    message: str = strawberry.field(
        description="A sentence for the developer (English; may change: do not parse it)."
    )
    field: list[str] | None = strawberry.field(
        description='Path of the input field at fault, e.g. ["input", "amount"].'
    )


@strawberry.type(description="An input value is out of line (code INVALID_INPUT).")
class InvalidInput(UserError):
    pass


@strawberry.type(description="Something the input names does not exist (code NOT_FOUND).")
class NotFound(UserError):
    pass


@strawberry.type(description="The caller may not act on this object (code FORBIDDEN).")
class Forbidden(UserError):
    pass


@strawberry.type(
    description="The customer has no current subscription (code NO_CURRENT_SUBSCRIPTION)."
)
class NoCurrentSubscription(UserError):
    pass


@strawberry.type(
    description="The transactionId was used before with other values (code"
    " IDEMPOTENCY_CONFLICT); a retry with the same values is not a conflict but a replay."
)
class IdempotencyConflict(UserError):
    existing_event: UsageEvent = strawberry.field(
        description="The event already recorded under this transactionId."
    )


@strawberry.type(
    description="requireBalance was set and the balance does not cover the event (code"
    " INSUFFICIENT_BALANCE): nothing was recorded. Show the upgrade options."
)
class InsufficientBalance(UserError):
    meter_slug: str = strawberry.field(description="The meter whose balance is short.")
    available_balance: Long = strawberry.field(
        description="The meter's available balance now, in events (may be <= 0)."
    )
    required: Long = strawberry.field(description="The event's amount, in events.")
    pricing_model_id: strawberry.Private[uuid.UUID]
    meter_id: strawberry.Private[uuid.UUID]
    product_id: strawberry.Private[uuid.UUID | None]

    @strawberry.field(
        description="Products whose features grant more credits on this meter than the"
        " subscription's product, the smallest step first."
    )
    async def upgrade_options(
        self, info: strawberry.Info
    ) -> list[Annotated[Product, strawberry.lazy("schema.catalog")]]:
        from schema.catalog import Product

        catalog = await info.context.loaders.catalog.load(self.pricing_model_id)
        options = catalog.upgrade_options(self.meter_id, self.product_id)
        return [Product.of(p, catalog) for p in options]


_SIMPLE: dict[errors.ErrorCode, Any] = {
    errors.ErrorCode.INVALID_INPUT: InvalidInput,
    errors.ErrorCode.NOT_FOUND: NotFound,
    errors.ErrorCode.FORBIDDEN: Forbidden,
    errors.ErrorCode.NO_CURRENT_SUBSCRIPTION: NoCurrentSubscription,
}


def to_graphql(error: errors.UserError) -> Any:
    """The GraphQL error type of a gateway error."""
    code = error.code
    if error.code is errors.ErrorCode.IDEMPOTENCY_CONFLICT:
        return IdempotencyConflict(
            code=code,
            message=error.message,
            field=error.field,
            existing_event=UsageEvent.from_json(error.extra["existing_event"]),
        )
    if error.code is errors.ErrorCode.INSUFFICIENT_BALANCE:
        return InsufficientBalance(
            code=code,
            message=error.message,
            field=error.field,
            meter_slug=error.extra["meter_slug"],
            available_balance=Long(error.extra["available"]),
            required=Long(error.extra["required"]),
            pricing_model_id=error.extra["pricing_model_id"],
            meter_id=error.extra["meter_id"],
            product_id=error.extra.get("product_id"),
        )
    return _SIMPLE[error.code](code=code, message=error.message, field=error.field)


def respond(result: T | errors.UserError, success: Callable[[T], Any]) -> Any:
    """A mutation's answer: the GraphQL error type of a failure, else ``success(result)``."""
    if isinstance(result, errors.UserError):
        return to_graphql(result)
    return success(result)
