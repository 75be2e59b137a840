"""Webhook endpoints and their deliveries (secret key only)."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Annotated

import strawberry

from gateway.webhooks.endpoints import MAX_DELIVERIES, DeliveryRow, EndpointRow
from resolvers._args import checked_arguments
from schema.errors import InvalidInput, NotFound


@strawberry.input(description="A new webhook endpoint (secret key only).")
class CreateWebhookEndpointInput:
    url: str = strawberry.field(
        description="https in production; never a loopback, link-local or private address"
        " there unless GATEWAY_WEBHOOK_ALLOW_PRIVATE_NETWORKS is set."
    )
    event_types: list[str] | None = strawberry.field(
        default=strawberry.UNSET,
        description="usage_alert.triggered, usage_alert.resolved; default: every type.",
    )


@strawberry.enum(description="Where a delivery stands.")
class WebhookDeliveryStatus(Enum):
    PENDING = strawberry.enum_value(
        "pending", description="Not acknowledged yet: the next try is at nextAttemptAt."
    )
    DELIVERED = strawberry.enum_value(
        "delivered", description="The receiver answered 2xx; it is not sent again."
    )
    FAILED = strawberry.enum_value(
        "failed",
        description="Gave up after the retry window (GATEWAY_WEBHOOK_RETRY_HOURS); an operator"
        " can replay the event.",
    )
    CANCELED = strawberry.enum_value(
        "canceled", description="Its endpoint was deleted before it was delivered."
    )


@strawberry.type(description="One try: the receiver's HTTP status or the error.")
class WebhookAttempt:
    attempted_at: datetime = strawberry.field(description="When the try started.")
    status_code: int | None = strawberry.field(
        description="The receiver's HTTP status; null when no answer came (see error)."
    )
    latency_ms: float = strawberry.field(
        description="Milliseconds from sending to the answer or the error."
    )
    error: str | None = strawberry.field(
        description="Why the try failed without an answer (timeout, network, refused address);"
        " null when the receiver answered."
    )


@strawberry.type(description="One event to one endpoint, retried until acknowledged (2xx).")
class WebhookDelivery:
    id: strawberry.ID = strawberry.field(description="The delivery's id.")
    event_id: strawberry.ID = strawberry.field(
        description="The webhook-id header: the event's id (UsageAlertEvent.id), the same on"
        " every retry and replay."
    )
    event_type: str = strawberry.field(description="usage_alert.triggered or usage_alert.resolved.")
    status: WebhookDeliveryStatus = strawberry.field(description="Where the delivery stands.")
    next_attempt_at: datetime | None = strawberry.field(
        description="When the next try is due, while PENDING; null otherwise."
    )
    delivered_at: datetime | None = strawberry.field(
        description="When the receiver acknowledged it (2xx); null until DELIVERED."
    )
    created_at: datetime = strawberry.field(description="When the event was queued for it.")
    attempts: list[WebhookAttempt] = strawberry.field(
        description="Every try so far, oldest first; empty before the first."
    )

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


@strawberry.type(description="A URL that receives signed alert events (secret key only).")
class WebhookEndpoint:
    id: strawberry.ID = strawberry.field(description="The endpoint's id.")
    url: str = strawberry.field(description="Where deliveries are POSTed.")
    event_types: list[str] = strawberry.field(
        description="The event types it receives: usage_alert.triggered, usage_alert.resolved."
    )
    row: strawberry.Private[EndpointRow]

    @classmethod
    def of(cls, row: EndpointRow) -> WebhookEndpoint:
        return cls(
            id=strawberry.ID(str(row.id)), url=row.url, event_types=list(row.event_types), row=row
        )

    @strawberry.field(description=f"The newest deliveries first; first <= {MAX_DELIVERIES}.")
    @checked_arguments
    async def deliveries(
        self,
        info: strawberry.Info,
        first: Annotated[
            int,
            strawberry.argument(
                description=f"How many deliveries, newest first; at most {MAX_DELIVERIES}."
            ),
        ] = 20,
    ) -> list[WebhookDelivery]:
        rows = await info.context.loaders.webhook_deliveries.load(
            (self.row.id, max(0, min(first, MAX_DELIVERIES)))
        )
        return [WebhookDelivery.of(r) for r in rows]


@strawberry.type(description="The endpoint is created; keep the secret, it is not shown again.")
class WebhookEndpointCreated:
    endpoint: WebhookEndpoint = strawberry.field(description="The new endpoint.")
    secret: str = strawberry.field(description="whsec_...: shown once, sign-checks deliveries.")


CreateWebhookEndpointResult = Annotated[
    WebhookEndpointCreated | InvalidInput,
    strawberry.union(
        "CreateWebhookEndpointResult",
        description="The new endpoint and its secret, or why nothing was created (a refused url"
        " or an unknown event type: InvalidInput naming the field).",
    ),
]


@strawberry.input(description="The endpoint to delete (secret key only).")
class DeleteWebhookEndpointInput:
    endpoint_id: strawberry.ID = strawberry.field(description="WebhookEndpoint.id.")


@strawberry.type(
    description="The endpoint receives nothing more; its pending deliveries are canceled."
)
class WebhookEndpointDeleted:
    endpoint_id: strawberry.ID = strawberry.field(description="The id of the deleted endpoint.")


DeleteWebhookEndpointResult = Annotated[
    WebhookEndpointDeleted | NotFound | InvalidInput,
    strawberry.union(
        "DeleteWebhookEndpointResult",
        description="The deleted endpoint's id, or why nothing was deleted (no such endpoint:"
        " NotFound; a malformed id: InvalidInput).",
    ),
]
