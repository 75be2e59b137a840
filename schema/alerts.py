"""Usage alerts and their events (secret key only)."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import Enum
from typing import Annotated, Any

import strawberry

from gateway.alerts.records import UsageAlertRow
from gateway.billing.records import BalanceRow
from schema.billing import UsageBalance
from schema.catalog import UsageMeter
from schema.errors import InvalidInput, NotFound
from schema.scalars import Long


@strawberry.input(one_of=True, description="Exactly one threshold.")
class UsageAlertThreshold:
    percent_used: float | None = strawberry.field(
        default=strawberry.UNSET, description="Fires when percentUsed reaches it."
    )
    used_above: Long | None = strawberry.field(
        default=strawberry.UNSET, description="Fires when usedBalance reaches it."
    )
    available_below: Long | None = strawberry.field(
        default=strawberry.UNSET, description="Fires when availableBalance falls to it or below."
    )


@strawberry.input(description="A new usage alert on one meter (secret key only).")
class CreateUsageAlertInput:
    usage_meter_slug: str = strawberry.field(
        description="The meter watched, by slug: in the customer's pricing model, or (no"
        " customer) in the default pricing model, else the one model that has the slug."
    )
    threshold: UsageAlertThreshold = strawberry.field(
        description="When the alert fires: exactly one of percentUsed, usedAbove, availableBelow."
    )
    customer_external_id: str | None = strawberry.field(
        default=strawberry.UNSET,
        description="Omitted: every customer on the meter's pricing model.",
    )


@strawberry.type(
    description="A threshold on one meter's balance; its events go to the webhook endpoints."
)
class UsageAlert:
    id: strawberry.ID = strawberry.field(description="The alert's id (deleteUsageAlert takes it).")
    customer_external_id: str | None = strawberry.field(
        description="The one customer watched; null: every customer on the meter's pricing model."
    )
    percent_used: float | None = strawberry.field(
        description="Fires when 100 * usedBalance / balanceLimit reaches it (never on a meter"
        " without a limit); null when another threshold is set."
    )
    used_above: Long | None = strawberry.field(
        description="Fires when usedBalance (events) reaches it; null when another threshold is set."
    )
    available_below: Long | None = strawberry.field(
        description="Fires when availableBalance (events) falls to it or below; null when another"
        " threshold is set."
    )
    row: strawberry.Private[UsageAlertRow]

    @classmethod
    def of(cls, row: UsageAlertRow) -> UsageAlert:
        return cls(
            id=strawberry.ID(str(row.id)),
            customer_external_id=row.customer_external_id,
            percent_used=row.percent_used,
            used_above=None if row.used_above is None else Long(row.used_above),
            available_below=None if row.available_below is None else Long(row.available_below),
            row=row,
        )

    @strawberry.field(description="The meter whose balance is watched.")
    async def usage_meter(self, info: strawberry.Info) -> UsageMeter:
        catalog = await info.context.loaders.catalog.load(self.row.pricing_model_id)
        return UsageMeter.of(catalog.meter_by_id[self.row.usage_meter_id], catalog)


@strawberry.type(description="The alert is created and watches from the next balance change.")
class UsageAlertCreated:
    alert: UsageAlert = strawberry.field(description="The new alert.")


CreateUsageAlertResult = Annotated[
    UsageAlertCreated | InvalidInput | NotFound,
    strawberry.union(
        "CreateUsageAlertResult",
        description="The new alert, or why nothing was created (an unknown meter or customer is"
        " NotFound naming the field).",
    ),
]


@strawberry.input(description="The alert to delete (secret key only).")
class DeleteUsageAlertInput:
    alert_id: strawberry.ID = strawberry.field(description="UsageAlert.id.")


@strawberry.type(
    description="The alert fires no more; events it already wrote are still delivered."
)
class UsageAlertDeleted:
    alert_id: strawberry.ID = strawberry.field(description="The id of the deleted alert.")


DeleteUsageAlertResult = Annotated[
    UsageAlertDeleted | NotFound | InvalidInput,
    strawberry.union(
        "DeleteUsageAlertResult",
        description="The deleted alert's id, or why nothing was deleted (no such alert:"
        " NotFound; a malformed id: InvalidInput).",
    ),
]


@strawberry.enum(description="What an alert event says about its threshold.")
class UsageAlertEventType(Enum):
    TRIGGERED = strawberry.enum_value(
        "TRIGGERED",
        description="The threshold holds after a balance change; at most once per alert,"
        " subscription and billing period (webhook type usage_alert.triggered).",
    )
    RESOLVED = strawberry.enum_value(
        "RESOLVED",
        description="The threshold no longer holds after a TRIGGERED of the period (a grant, a"
        " void, a released hold, a new period; webhook type usage_alert.resolved).",
    )


@strawberry.type(
    description="Fired at most once per alert, subscription and billing period when the"
    " threshold is crossed (TRIGGERED), and once when it is no longer met (RESOLVED)."
    " Webhook deliveries carry it as `data`."
)
class UsageAlertEvent:
    id: strawberry.ID = strawberry.field(description="Also the webhook-id of its deliveries.")
    type: UsageAlertEventType = strawberry.field(description="TRIGGERED or RESOLVED.")
    alert: UsageAlert = strawberry.field(description="The alert that fired, as it was then.")
    customer_external_id: str = strawberry.field(description="The customer whose balance moved.")
    subscription_id: strawberry.ID = strawberry.field(
        description="The subscription whose balance moved."
    )
    balance: UsageBalance = strawberry.field(description="As it was when the event fired.")
    occurred_at: datetime = strawberry.field(
        description="When the balance change that fired it happened (its transaction's time)."
    )

    @classmethod
    def from_payload(cls, data: dict[str, Any], pricing_model_id: uuid.UUID) -> UsageAlertEvent:
        """From the ``data`` of an outbox row's payload (gateway/storage/sql/alerts.sql)."""
        alert, balance = data["alert"], data["balance"]
        meter_id = uuid.UUID(alert["usageMeter"]["id"])
        return cls(
            id=strawberry.ID(data["id"]),
            type=UsageAlertEventType(data["type"]),
            alert=UsageAlert.of(
                UsageAlertRow(
                    id=uuid.UUID(alert["id"]),
                    pricing_model_id=pricing_model_id,
                    usage_meter_id=meter_id,
                    customer_external_id=alert["customerExternalId"],
                    percent_used=alert["percentUsed"],
                    used_above=alert["usedAbove"],
                    available_below=alert["availableBelow"],
                )
            ),
            customer_external_id=data["customerExternalId"],
            subscription_id=strawberry.ID(data["subscriptionId"]),
            balance=UsageBalance(
                row=BalanceRow(
                    subscription_id=uuid.UUID(data["subscriptionId"]),
                    usage_meter_id=meter_id,
                    pricing_model_id=pricing_model_id,
                    available_balance=int(balance["availableBalance"]),
                    used_balance=int(balance["usedBalance"]),
                    balance_limit=None
                    if balance["balanceLimit"] is None
                    else int(balance["balanceLimit"]),
                    period_start=datetime.fromisoformat(balance["billingPeriodStart"]),
                    period_end=datetime.fromisoformat(balance["billingPeriodEnd"]),
                )
            ),
            occurred_at=datetime.fromisoformat(data["occurredAt"]),
        )
