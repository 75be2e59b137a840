"""Customer-facing billing types. Database-backed fields go through the request's loaders."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import Enum

import strawberry

from gateway.billing.records import BalanceRow, ChargeRow, CustomerRow, SubscriptionRow
from resolvers._args import checked_arguments
from schema.catalog import Price, PricingModel, UsageMeter
from schema.scalars import Long


@strawberry.enum
class SubscriptionStatus(Enum):
    TRIALING = "trialing"
    ACTIVE = "active"
    PAST_DUE = "past_due"
    UNPAID = "unpaid"
    CANCELLATION_SCHEDULED = "cancellation_scheduled"
    INCOMPLETE = "incomplete"
    INCOMPLETE_EXPIRED = "incomplete_expired"
    CANCELED = "canceled"
    PAUSED = "paused"


@strawberry.type
class UsageBalance:
    row: strawberry.Private[BalanceRow]

    @strawberry.field
    async def usage_meter(self, info: strawberry.Info) -> UsageMeter:
        catalog = await info.context.loaders.catalog.load(self.row.pricing_model_id)
        return UsageMeter.of(catalog.meter_by_id[self.row.usage_meter_id], catalog)

    @strawberry.field
    def subscription_id(self) -> strawberry.ID:
        return strawberry.ID(str(self.row.subscription_id))

    @strawberry.field(
        description="Credits remaining minus uncovered usage, minus open reservations;"
        " <= 0 means exhausted."
    )
    def available_balance(self) -> Long:
        return Long(self.row.available_balance)

    @strawberry.field(description="Usage recorded in the current billing period.")
    def used_balance(self) -> Long:
        return Long(self.row.used_balance)

    @strawberry.field(
        description="Credits available to this period (consumed this period plus remaining);"
        " null when the meter grants none."
    )
    def balance_limit(self) -> Long | None:
        return None if self.row.balance_limit is None else Long(self.row.balance_limit)

    @strawberry.field(description="Held by open reservations (reserveUsage); 0 when none.")
    def reserved_balance(self) -> Long:
        return Long(self.row.reserved_balance)

    @strawberry.field(description="100 * usedBalance / balanceLimit; null when no limit.")
    def percent_used(self) -> float | None:
        return self.row.percent_used

    @strawberry.field
    def billing_period_start(self) -> datetime:
        return self.row.period_start

    @strawberry.field
    def billing_period_end(self) -> datetime:
        return self.row.period_end


async def subscription_balances(info: strawberry.Info, sub: SubscriptionRow) -> list[UsageBalance]:
    """Every meter of the pricing model that has a balance on the subscription."""
    loaders = info.context.loaders
    catalog = await loaders.catalog.load(sub.pricing_model_id)
    found = await loaders.balance.load_many([(sub.id, m.id) for m in catalog.meters])
    return [UsageBalance(row=b) for b in found if b is not None]


@strawberry.type
class Subscription:
    row: strawberry.Private[SubscriptionRow]

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(str(self.row.id))

    @strawberry.field
    def status(self) -> SubscriptionStatus:
        return SubscriptionStatus(self.row.status)

    @strawberry.field(description="TRIALING, ACTIVE, PAST_DUE, UNPAID or CANCELLATION_SCHEDULED.")
    def current(self) -> bool:
        return self.row.current

    @strawberry.field
    def start_date(self) -> datetime:
        return self.row.start_date

    @strawberry.field
    def canceled_at(self) -> datetime | None:
        return self.row.canceled_at

    @strawberry.field(description="The subscription price it was started on.")
    async def price(self, info: strawberry.Info) -> Price:
        catalog = await info.context.loaders.catalog.load(self.row.pricing_model_id)
        return Price.of(catalog.price_by_id[self.row.price_id], catalog)

    @strawberry.field
    def current_billing_period_start(self) -> datetime:
        return self.row.period_start

    @strawberry.field
    def current_billing_period_end(self) -> datetime:
        return self.row.period_end

    @strawberry.field
    async def usage_balances(self, info: strawberry.Info) -> list[UsageBalance]:
        return await subscription_balances(info, self.row)

    @strawberry.field(description="Overage charges of the current billing period, per usage price.")
    async def current_charges(self, info: strawberry.Info) -> list[UsageCharge]:
        rows = await info.context.loaders.charges.load(self.row.id)
        return [UsageCharge(row=r, pricing_model_id=self.row.pricing_model_id) for r in rows]


@strawberry.type(description="Usage no credit covered in the current period, at one usage price.")
class UsageCharge:
    row: strawberry.Private[ChargeRow]
    pricing_model_id: strawberry.Private[uuid.UUID]

    @strawberry.field
    def subscription_id(self) -> strawberry.ID:
        return strawberry.ID(str(self.row.subscription_id))

    @strawberry.field
    async def price(self, info: strawberry.Info) -> Price:
        catalog = await info.context.loaders.catalog.load(self.pricing_model_id)
        return Price.of(catalog.price_by_id[self.row.price_id], catalog)

    @strawberry.field(description="Events not covered by credits.")
    def overage_events(self) -> Long:
        return Long(self.row.uncovered_events)

    @strawberry.field(description="ceil(overageEvents / usageEventsPerUnit).")
    def units(self) -> Long:
        return Long(self.row.units)

    @strawberry.field(description="units x unitPrice, in minor currency units.")
    def amount(self) -> Long:
        return Long(self.row.amount)

    @strawberry.field
    def currency(self) -> str:
        return self.row.currency


@strawberry.type(description="A sum of money in minor units of one currency.")
class MoneyTotal:
    amount: Long
    currency: str


@strawberry.type
class Billing:
    customer_row: strawberry.Private[CustomerRow]

    @strawberry.field
    def customer(self) -> Customer:
        return Customer(row=self.customer_row)

    async def _subscriptions(self, info: strawberry.Info) -> list[SubscriptionRow]:
        rows: list[SubscriptionRow] = await info.context.loaders.subscriptions_by_customer.load(
            self.customer_row.id
        )
        return rows

    @strawberry.field(description="All subscriptions, newest first.")
    async def subscriptions(self, info: strawberry.Info) -> list[Subscription]:
        return [Subscription(row=s) for s in await self._subscriptions(info)]

    @strawberry.field
    async def current_subscriptions(self, info: strawberry.Info) -> list[Subscription]:
        return [Subscription(row=s) for s in await self._subscriptions(info) if s.current]

    @strawberry.field(description="The newest current subscription.")
    async def current_subscription(self, info: strawberry.Info) -> Subscription | None:
        sub = next((s for s in await self._subscriptions(info) if s.current), None)
        return None if sub is None else Subscription(row=sub)

    @strawberry.field(description="The customer's pricing model.")
    async def catalog(self, info: strawberry.Info) -> PricingModel:
        return PricingModel(
            catalog=await info.context.loaders.catalog.load(self.customer_row.pricing_model_id)
        )

    @strawberry.field(description="Default: the current subscription's balances.")
    @checked_arguments
    async def usage_balances(
        self, info: strawberry.Info, subscription_id: strawberry.ID | None = strawberry.UNSET
    ) -> list[UsageBalance]:
        subs = await self._subscriptions(info)
        if subscription_id is None or subscription_id is strawberry.UNSET:
            sub = next((s for s in subs if s.current), None)
        else:
            sub = next((s for s in subs if str(s.id) == subscription_id), None)
        return [] if sub is None else await subscription_balances(info, sub)

    @strawberry.field(description="checkFeatureAccess: a toggle feature on a current subscription.")
    @checked_arguments
    async def feature_access(self, info: strawberry.Info, feature_slug: str) -> bool:
        catalog = await info.context.loaders.catalog.load(self.customer_row.pricing_model_id)
        feature = catalog.feature_by_slug.get(feature_slug)
        if feature is None or feature.type != "toggle":
            return False
        return any(
            s.current and feature.id in catalog.product_by_id[s.product_id].feature_ids
            for s in await self._subscriptions(info)
        )

    @strawberry.field(description="Current-period overage charges of the current subscriptions.")
    async def current_charges(self, info: strawberry.Info) -> list[UsageCharge]:
        subs = [s for s in await self._subscriptions(info) if s.current]
        rows = await info.context.loaders.charges.load_many([s.id for s in subs])
        return [
            UsageCharge(row=r, pricing_model_id=self.customer_row.pricing_model_id)
            for charges in rows
            for r in charges
        ]

    @strawberry.field(description="What the customer owes for usage so far, per currency.")
    async def current_charge_totals(self, info: strawberry.Info) -> list[MoneyTotal]:
        totals: dict[str, int] = {}
        for charge in await self.current_charges(info):
            totals[charge.row.currency] = totals.get(charge.row.currency, 0) + charge.row.amount
        return [MoneyTotal(amount=Long(a), currency=c) for c, a in sorted(totals.items())]


@strawberry.type
class Customer:
    row: strawberry.Private[CustomerRow]

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(str(self.row.id))

    @strawberry.field
    def external_id(self) -> str:
        return self.row.external_id

    @strawberry.field
    def name(self) -> str | None:
        return self.row.name

    @strawberry.field
    def email(self) -> str | None:
        return self.row.email

    @strawberry.field
    def billing(self) -> Billing:
        return Billing(customer_row=self.row)


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type
class CustomerEdge:
    cursor: str
    node: Customer


@strawberry.type
class CustomerConnection:
    edges: list[CustomerEdge]
    page_info: PageInfo
