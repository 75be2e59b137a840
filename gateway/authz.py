"""Authorization: the few checks every resolver calls, in one place.

A secret key acts for the merchant. A customer session acts for its own customer only: any
other customer, or another customer's object, is answered exactly like a missing one, so a
session cannot learn whether it exists.
"""

from __future__ import annotations

import uuid

from gateway.auth import Caller
from gateway.loaders import Loaders
from gateway.records import CustomerRow, SubscriptionRow


class NotAuthenticated(Exception):
    """The operation needs credentials (HTTP 401, code UNAUTHENTICATED)."""


class NotAllowed(Exception):
    """The caller may never do this (a customer session calling an administration mutation)."""


def require_caller(caller: Caller) -> None:
    if caller.kind == "anonymous":
        raise NotAuthenticated("authentication required: Authorization: Bearer <key or token>")


def require_secret_key(caller: Caller) -> None:
    require_caller(caller)
    if not caller.is_secret_key:
        raise NotAllowed("this operation needs a secret API key")


async def customer_for(
    caller: Caller, loaders: Loaders, external_id: str | None
) -> CustomerRow | None:
    """The customer a query is about, or None.

    A customer session reads its own customer (externalId omitted or equal to its own); any
    other externalId gives None, exactly as an unknown one does. A secret key must name the
    customer; without a name there is no customer to answer for (None).
    """
    require_caller(caller)
    if caller.is_customer:
        assert caller.customer_id is not None
        own: CustomerRow | None = await loaders.customer_by_id.load(caller.customer_id)
        if own is None:
            raise NotAuthenticated("the session's customer no longer exists")
        if external_id is not None and external_id != own.external_id:
            return None
        return own
    if external_id is None:
        return None
    customer: CustomerRow | None = await loaders.customer_by_external_id.load(external_id)
    return customer


async def subscription_for(
    loaders: Loaders, customer: CustomerRow, subscription_id: str | None
) -> SubscriptionRow | None:
    """The named subscription (only if it is the customer's) or the customer's current one."""
    if subscription_id is None:
        subs: list[SubscriptionRow] = await loaders.subscriptions_by_customer.load(customer.id)
        return next((s for s in subs if s.current), None)
    try:
        sub_id = uuid.UUID(subscription_id)
    except ValueError:
        return None
    sub: SubscriptionRow | None = await loaders.subscription_by_id.load(sub_id)
    if sub is None or sub.customer_id != customer.id:
        return None
    return sub
