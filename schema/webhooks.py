"""Webhook endpoints and their deliveries (secret key only)."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Annotated

import strawberry

from gateway.webhooks.endpoints import MAX_DELIVERIES, DeliveryRow, EndpointRow
from resolvers._args import checked_arguments
from schema.errors import InvalidInput, NotFound


@strawberry.input
class CreateWebhookEndpointInput:
    url: str = strawberry.field(
        description="https in production; never a loopback, link-local or private address"
        " there unless GATEWAY_WEBHOOK_ALLOW_PRIVATE_NETWORKS is set."
    )
    event_types: list[str] | None = strawberry.field(
        default=strawberry.UNSET,
        description="usage_alert.triggered, usage_alert.resolved; default: every type.",
    )


@strawberry.enum
class WebhookDeliveryStatus(Enum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    CANCELED = "canceled"


@strawberry.type(description="One try: the receiver's HTTP status or the error.")
class WebhookAttempt:
    attempted_at: datetime
    status_code: int | None
    latency_ms: float
    error: str | None


@strawberry.type(description="One event to one endpoint, retried until acknowledged (2xx).")
class WebhookDelivery:
    id: strawberry.ID
    event_id: strawberry.ID = strawberry.field(description="The webhook-id header.")
    event_type: str
    status: WebhookDeliveryStatus
    next_attempt_at: datetime | None = strawberry.field(description="While PENDING.")
    delivered_at: datetime | None
    created_at: datetime
    attempts: list[WebhookAttempt]

    @classmethod
    def of(cls, row: DeliveryRow) -> WebhookDelivery:
        return cls(
            id=strawberry.ID(str(row.id)),
            event_id=strawberry.ID(str(row.event_id)),
            event_type=row.event_type,
            status=WebhookDeliveryStatus(row.status),
            next_attempt_at=row.next_attempt_at if row.status == "pending" else None,
            delivered_at=row.delivered_at,
            created_at=row.created_at,
            attempts=[
                WebhookAttempt(
                    attempted_at=a.attempted_at,
                    status_code=a.status_code,
                    latency_ms=a.latency_ms,
                    error=a.error,
                )
                for a in row.attempts
            ],
        )


@strawberry.type
class WebhookEndpoint:
    id: strawberry.ID
    url: str
    event_types: list[str]
    row: strawberry.Private[EndpointRow]

    @classmethod
    def of(cls, row: EndpointRow) -> WebhookEndpoint:
        return cls(
            id=strawberry.ID(str(row.id)), url=row.url, event_types=list(row.event_types), row=row
        )

    @strawberry.field(description=f"The newest deliveries first; first <= {MAX_DELIVERIES}.")
    @checked_arguments
    async def deliveries(self, info: strawberry.Info, first: int = 20) -> list[WebhookDelivery]:
        rows = await info.context.loaders.webhook_deliveries.load(
            (self.row.id, max(0, min(first, MAX_DELIVERIES)))
        )
        return [WebhookDelivery.of(r) for r in rows]


@strawberry.type
class WebhookEndpointCreated:
    endpoint: WebhookEndpoint
    secret: str = strawberry.field(description="whsec_...: shown once, sign-checks deliveries.")


CreateWebhookEndpointResult = Annotated[
    WebhookEndpointCreated | InvalidInput, strawberry.union("CreateWebhookEndpointResult")
]


@strawberry.input
class DeleteWebhookEndpointInput:
    endpoint_id: strawberry.ID


@strawberry.type
class WebhookEndpointDeleted:
    endpoint_id: strawberry.ID


DeleteWebhookEndpointResult = Annotated[
    WebhookEndpointDeleted | NotFound | InvalidInput,
    strawberry.union("DeleteWebhookEndpointResult"),
]
