"""Usage alerts and webhook endpoints (secret key only): parse, authorize, call one gateway
function, map the result."""

from __future__ import annotations

from typing import Annotated, Any

import strawberry

from gateway.alerts import manage
from gateway.alerts.records import Threshold
from gateway.callers import authz
from gateway.webhooks import endpoints
from gateway.webhooks.addresses import AddressPolicy
from resolvers._args import checked_arguments, checked_input, opt
from schema.alerts import (
    CreateUsageAlertInput,
    DeleteUsageAlertInput,
    UsageAlert,
    UsageAlertCreated,
    UsageAlertDeleted,
)
from schema.errors import respond
from schema.webhooks import (
    CreateWebhookEndpointInput,
    DeleteWebhookEndpointInput,
    WebhookEndpoint,
    WebhookEndpointCreated,
    WebhookEndpointDeleted,
)

INPUT = strawberry.argument(description="What to do: see the input type's fields.")


@checked_input
async def create_usage_alert(
    info: strawberry.Info, input: Annotated[CreateUsageAlertInput, INPUT]
) -> Any:
    ctx = info.context
    authz.require_secret_key(ctx.caller)
    t = input.threshold
    used_above, available_below = opt(t.used_above), opt(t.available_below)
    threshold = Threshold(
        percent_used=opt(t.percent_used),
        used_above=None if used_above is None else int(used_above),
        available_below=None if available_below is None else int(available_below),
    )
    result = await manage.create_usage_alert(
        ctx.db, input.usage_meter_slug, threshold, opt(input.customer_external_id)
    )
    return respond(result, lambda row: UsageAlertCreated(alert=UsageAlert.of(row)))


@checked_input
async def delete_usage_alert(
    info: strawberry.Info, input: Annotated[DeleteUsageAlertInput, INPUT]
) -> Any:
    ctx = info.context
    authz.require_secret_key(ctx.caller)
    result = await manage.delete_usage_alert(ctx.db, str(input.alert_id))
    return respond(result, lambda alert_id: UsageAlertDeleted(alert_id=strawberry.ID(alert_id)))


@checked_input
async def create_webhook_endpoint(
    info: strawberry.Info, input: Annotated[CreateWebhookEndpointInput, INPUT]
) -> Any:
    ctx = info.context
    authz.require_secret_key(ctx.caller)
    result = await endpoints.create_endpoint(
        ctx.db, AddressPolicy.of(ctx.settings), input.url, opt(input.event_types)
    )
    return respond(
        result,
        lambda made: WebhookEndpointCreated(endpoint=WebhookEndpoint.of(made[0]), secret=made[1]),
    )


@checked_input
async def delete_webhook_endpoint(
    info: strawberry.Info, input: Annotated[DeleteWebhookEndpointInput, INPUT]
) -> Any:
    ctx = info.context
    authz.require_secret_key(ctx.caller)
    result = await endpoints.delete_endpoint(ctx.db, str(input.endpoint_id))
    return respond(
        result, lambda endpoint_id: WebhookEndpointDeleted(endpoint_id=strawberry.ID(endpoint_id))
    )


@checked_arguments
async def webhook_endpoints(info: strawberry.Info) -> list[WebhookEndpoint]:
    ctx = info.context
    authz.require_secret_key(ctx.caller)
    return [WebhookEndpoint.of(row) for row in await endpoints.list_endpoints(ctx.db)]
