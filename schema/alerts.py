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


@strawberry.input
class CreateUsageAlertInput:
    usage_meter_slug: str
    threshold: UsageAlertThreshold
    customer_external_id: str | None = strawberry.field(
        default=strawberry.UNSET,
        description="Omitted: every customer on the meter's pricing model.",
    )


@strawberry.type
class UsageAlert:
    id: strawberry.ID
    customer_external_id: str | None
    percent_used: float | None
    used_above: Long | None
    available_below: Long | None
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

    @strawberry.field
    async def usage_meter(self, info: strawberry.Info) -> UsageMeter:
        catalog = await info.context.loaders.catalog.load(self.row.pricing_model_id)
        return UsageMeter.of(catalog.meter_by_id[self.row.usage_meter_id], catalog)


@strawberry.type
class UsageAlertCreated:
    alert: UsageAlert


CreateUsageAlertResult = Annotated[
    UsageAlertCreated | InvalidInput | NotFound, strawberry.union("CreateUsageAlertResult")
]


@strawberry.input
class DeleteUsageAlertInput:
    alert_id: strawberry.ID


@strawberry.type
class UsageAlertDeleted:
    alert_id: strawberry.ID


DeleteUsageAlertResult = Annotated[
    UsageAlertDeleted | NotFound | InvalidInput, strawberry.union("DeleteUsageAlertResult")
]


@strawberry.enum
class UsageAlertEventType(Enum):
    TRIGGERED = "TRIGGERED"
    RESOLVED = "RESOLVED"


@strawberry.type(
    description="Fired at most once per alert, subscription and billing period when the"
    " threshold is crossed (TRIGGERED), and once when it is no longer met (RESOLVED)."
    " Webhook deliveries carry it as `data`."
)
class UsageAlertEvent:
    id: strawberry.ID = strawberry.field(description="Also the webhook-id of its deliveries.")
    type: UsageAlertEventType
    alert: UsageAlert
    customer_external_id: str
    subscription_id: strawberry.ID
    balance: UsageBalance = strawberry.field(description="As it was when the event fired.")
    occurred_at: datetime

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
