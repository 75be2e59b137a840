"""The GraphQL schema of the billing gateway."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import strawberry
from strawberry.schema.config import StrawberryConfig

from gateway.api.graphql_errors import GatewaySchema
from schema.alerts import UsageAlertEvent
from schema.errors import (
    Forbidden,
    IdempotencyConflict,
    InsufficientBalance,
    InvalidInput,
    NoCurrentSubscription,
    NotFound,
)
from schema.live import SubscriptionRoot
from schema.root import Mutation, Query
from schema.scalars import LONG_SCALAR, Long

SDL_PATH = Path(__file__).with_name("schema.graphql")
_ERROR_TYPES = [
    InvalidInput,
    NotFound,
    Forbidden,
    NoCurrentSubscription,
    IdempotencyConflict,
    InsufficientBalance,
    UsageAlertEvent,  # also the payload of webhook deliveries
]


# The hot mutations, executed compiled when their document allows (gateway.api.graphql_fast).
FAST_FIELDS = ("createUsageEvent", "createUsageEvents")


def build_schema(
    extensions: Sequence[Any] = (), *, fast: bool = True, hide_suggestions: bool = False
) -> strawberry.Schema:
    return GatewaySchema(
        query=Query,
        mutation=Mutation,
        subscription=SubscriptionRoot,
        types=_ERROR_TYPES,
        extensions=list(extensions),
        config=StrawberryConfig(scalar_map={Long: LONG_SCALAR}),
        fast_fields=FAST_FIELDS if fast else (),
        hide_suggestions=hide_suggestions,
    )


def export_sdl() -> str:
    return build_schema().as_str() + "\n"
