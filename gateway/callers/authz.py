"""Authorization: who may select which root field, and the few checks resolvers call.

A secret key acts for the merchant. A customer session acts for its own customer only: any
other customer, or another customer's object, is answered exactly like a missing one, so a
session cannot learn whether it exists. Anonymous callers may only introspect.

Two layers, both here:

- ``OperationGate``, a schema extension, refuses a whole operation BEFORE it executes when the
  caller may not select one of its root fields (``ROOT_FIELD_ACCESS``): anonymous -> HTTP 401
  ``UNAUTHENTICATED``, customer session -> HTTP 403 ``FORBIDDEN``. Nothing of a refused
  operation runs, so a mutation document that mixes an allowed and a forbidden field writes
  nothing.
- The resolvers call ``require_caller`` / ``require_secret_key`` / ``customer_for`` /
  ``subscription_for`` for the per-object decisions (and as a second line of defence). Usage
  events are scoped in the database function ``record_usage_event()``, which receives the
  session's customer id (``gateway.billing.usage``) and answers another customer's subscription, price
  or meter exactly like a missing one. Reservations likewise (``gateway.reservations``): a
  session reserves, finalizes and releases only its own customer's holds, another's reads as
  missing; only secret keys void events.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from functools import lru_cache
from typing import Literal

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSchema,
    InlineFragmentNode,
    SelectionSetNode,
)
from graphql.utilities import get_operation_ast
from strawberry.extensions import SchemaExtension

from gateway.billing.loaders import Loaders
from gateway.billing.records import CustomerRow, SubscriptionRow
from gateway.callers.auth import Caller


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
        subs = await loaders.subscriptions_by_customer.load(customer.id) or []
        return next((s for s in subs if s.current), None)
    try:
        sub_id = uuid.UUID(subscription_id)
    except ValueError:
        return None
    sub: SubscriptionRow | None = await loaders.subscription_by_id.load(sub_id)
    if sub is None or sub.customer_id != customer.id:
        return None
    return sub


# ------------------------------------------------------------------ root fields, per caller

CallerKind = Literal["anonymous", "secret_key", "customer"]
INTROSPECTION_FIELDS = frozenset({"__schema", "__type"})
ROOT_FIELD_ACCESS: dict[tuple[str, str], frozenset[CallerKind]] = {
    ("query", "billing"): frozenset({"secret_key", "customer"}),
    ("query", "usageBalance"): frozenset({"secret_key", "customer"}),
    ("query", "customers"): frozenset({"secret_key"}),
    ("mutation", "createUsageEvent"): frozenset({"secret_key", "customer"}),
    ("mutation", "createUsageEvents"): frozenset({"secret_key", "customer"}),
    # A customer's own holds (the database answers another customer's like a missing one).
    ("mutation", "reserveUsage"): frozenset({"secret_key", "customer"}),
    ("mutation", "finalizeUsageReservation"): frozenset({"secret_key", "customer"}),
    ("mutation", "releaseUsageReservation"): frozenset({"secret_key", "customer"}),
    ("mutation", "voidUsageEvent"): frozenset({"secret_key"}),
    ("mutation", "setupPricingModel"): frozenset({"secret_key"}),
    ("mutation", "updatePricingModel"): frozenset({"secret_key"}),
    ("mutation", "createCustomer"): frozenset({"secret_key"}),
    ("mutation", "createSubscription"): frozenset({"secret_key"}),
    ("mutation", "cancelSubscription"): frozenset({"secret_key"}),
    ("mutation", "grantUsageCredits"): frozenset({"secret_key"}),
    ("mutation", "createCustomerSession"): frozenset({"secret_key"}),
    ("mutation", "revokeCustomerSessions"): frozenset({"secret_key"}),
    ("query", "webhookEndpoints"): frozenset({"secret_key"}),
    ("mutation", "createUsageAlert"): frozenset({"secret_key"}),
    ("mutation", "deleteUsageAlert"): frozenset({"secret_key"}),
    ("mutation", "createWebhookEndpoint"): frozenset({"secret_key"}),
    ("mutation", "deleteWebhookEndpoint"): frozenset({"secret_key"}),
    ("subscription", "usageBalance"): frozenset({"secret_key", "customer"}),
    ("subscription", "usageAlerts"): frozenset({"secret_key", "customer"}),
}
"""Who may select each root field. A root field missing here needs a secret key."""


def _root_fields(
    selection_set: SelectionSetNode,
    fragments: dict[str, FragmentDefinitionNode],
    seen: set[str],
) -> Iterator[str]:
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            yield selection.name.value
        elif isinstance(selection, InlineFragmentNode):
            yield from _root_fields(selection.selection_set, fragments, seen)
        elif isinstance(selection, FragmentSpreadNode) and selection.name.value not in seen:
            seen.add(selection.name.value)
            fragment = fragments.get(selection.name.value)
            if fragment is not None:
                yield from _root_fields(fragment.selection_set, fragments, seen)


def root_fields(document: DocumentNode, operation_name: str | None) -> tuple[str, set[str]] | None:
    """(operation type, names of its root fields), fragments expanded; None if ambiguous.

    Directives (@skip/@include) are ignored: a conditionally selected field counts as selected.
    """
    operation = get_operation_ast(document, operation_name)
    if operation is None:
        return None
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    return operation.operation.value, set(_root_fields(operation.selection_set, fragments, set()))


def operation_refusal(
    caller: Caller,
    operation: tuple[str, set[str]] | None,
    *,
    introspection: bool,
    known_fields: frozenset[tuple[str, str]],
) -> NotAuthenticated | NotAllowed | None:
    """Why the caller may not run this operation at all, or None.

    Anonymous callers may select only ``__typename`` and (when enabled) introspection.
    Customer sessions may select the root fields ``ROOT_FIELD_ACCESS`` grants them; fields the
    schema does not have are left to validation. Secret keys may select everything.
    """
    if caller.is_secret_key:
        return None
    if caller.kind == "anonymous":
        allowed = {"__typename"} | (set(INTROSPECTION_FIELDS) if introspection else set())
        if operation is None or not operation[1] <= allowed:
            return NotAuthenticated(
                "authentication required: send Authorization: Bearer <secret key or session token>"
            )
        return None
    if operation is None:
        return None  # validation names the problem
    kind, fields = operation
    for name in sorted(fields):
        if (kind, name) in known_fields and caller.kind not in ROOT_FIELD_ACCESS.get(
            (kind, name), frozenset({"secret_key"})
        ):
            return NotAllowed(f"{name} needs a secret API key")
    return None


class OperationGate(SchemaExtension):
    """Refuses an operation before execution when the caller may not select its root fields.

    Runs in ``on_validate`` before validation and sets the refusal as the operation's errors,
    so strawberry does not validate the document (nor does ``BoundedValidationCache``, which
    must come after this extension; strawberry's own ``ValidationCache`` would overwrite the
    refusal). The request context must carry ``caller`` (a context without one is treated as
    anonymous).
    """

    def __init__(self, *, introspection: bool = True) -> None:
        self.introspection = introspection

    def on_validate(self) -> Iterator[None]:
        ctx = self.execution_context
        caller: Caller = getattr(ctx.context, "caller", None) or Caller(kind="anonymous")
        if (
            ctx.graphql_document is not None
            and ctx.pre_execution_errors is None
            and not caller.is_secret_key
        ):
            refusal = operation_refusal(
                caller,
                root_fields(ctx.graphql_document, ctx.operation_name),
                introspection=self.introspection,
                known_fields=_known_root_fields(ctx.schema._schema),
            )
            if refusal is not None:
                ctx.pre_execution_errors = [GraphQLError(str(refusal), original_error=refusal)]
        yield


@lru_cache(maxsize=8)
def _known_root_fields(schema: GraphQLSchema) -> frozenset[tuple[str, str]]:
    known: set[tuple[str, str]] = set()
    for kind, root in (
        ("query", schema.query_type),
        ("mutation", schema.mutation_type),
        ("subscription", schema.subscription_type),
    ):
        if root is not None:
            known.update((kind, name) for name in root.fields)
    return frozenset(known)
