"""Customer-facing billing types. Database-backed fields go through the request's loaders."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import Enum
from typing import Annotated, Any

import strawberry

from gateway.billing.records import BalanceRow, ChargeRow, CustomerRow, SubscriptionRow
from resolvers import history
from resolvers._args import checked_arguments, opt
from schema.catalog import Price, PricingModel, UsageMeter
from schema.history import UsageEventConnection
from schema.paging import AfterArg, BeforeArg, FirstArg, LastArg, PageInfo
from schema.scalars import Long


def _status(value: str, description: str) -> Any:
    return strawberry.enum_value(value, description=description)


@strawberry.enum(
    description="Where a subscription stands (Flowglad's statuses). The first five are"
    " current: usage can be charged to them."
)
class SubscriptionStatus(Enum):
    TRIALING = _status("trialing", "In a trial period (current).")
    ACTIVE = _status("active", "Running and paid up (current).")
    PAST_DUE = _status("past_due", "A payment failed; still current while it is retried.")
    UNPAID = _status("unpaid", "Payments failed for good; still current until canceled.")
    CANCELLATION_SCHEDULED = _status(
        "cancellation_scheduled", "Ends at the end of the billing period (current until then)."
    )
    INCOMPLETE = _status("incomplete", "The first payment is pending (not current).")
    INCOMPLETE_EXPIRED = _status(
        "incomplete_expired", "The first payment never came (not current)."
    )
    CANCELED = _status("canceled", "Ended (not current).")
    PAUSED = _status("paused", "Paused: no billing and no usage (not current).")


@strawberry.type(
    description="A customer's standing on one usage meter of one subscription, in the current"
    " billing period. All quantities are in events of the meter."
)
class UsageBalance:
    row: strawberry.Private[BalanceRow]

    @strawberry.field(description="The meter this balance is on.")
    async def usage_meter(self, info: strawberry.Info) -> UsageMeter:
        catalog = await info.context.loaders.catalog.load(self.row.pricing_model_id)
        return UsageMeter.of(catalog.meter_by_id[self.row.usage_meter_id], catalog)

    @strawberry.field(description="The subscription this balance belongs to.")
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

    @strawberry.field(description="Start of the current billing period (inclusive).")
    def billing_period_start(self) -> datetime:
        return self.row.period_start

    @strawberry.field(description="End of the current billing period (exclusive).")
    def billing_period_end(self) -> datetime:
        return self.row.period_end


async def subscription_balances(info: strawberry.Info, sub: SubscriptionRow) -> list[UsageBalance]:
    """Every meter of the pricing model that has a balance on the subscription."""
    loaders = info.context.loaders
    catalog = await loaders.catalog.load(sub.pricing_model_id)
    found = await loaders.balance.load_many([(sub.id, m.id) for m in catalog.meters])
    return [UsageBalance(row=b) for b in found if b is not None]


@strawberry.type(description="A customer's subscription to one subscription price.")
class Subscription:
    row: strawberry.Private[SubscriptionRow]

    @strawberry.field(description="The subscription's id.")
    def id(self) -> strawberry.ID:
        return strawberry.ID(str(self.row.id))

    @strawberry.field(description="Where the subscription stands.")
    def status(self) -> SubscriptionStatus:
        return SubscriptionStatus(self.row.status)

    @strawberry.field(description="TRIALING, ACTIVE, PAST_DUE, UNPAID or CANCELLATION_SCHEDULED.")
    def current(self) -> bool:
        return self.row.current

    @strawberry.field(description="When the subscription started (its periods count from it).")
    def start_date(self) -> datetime:
        return self.row.start_date

    @strawberry.field(description="When it was canceled; null while it is not.")
    def canceled_at(self) -> datetime | None:
        return self.row.canceled_at

    @strawberry.field(description="The subscription price it was started on.")
    async def price(self, info: strawberry.Info) -> Price:
        catalog = await info.context.loaders.catalog.load(self.row.pricing_model_id)
        return Price.of(catalog.price_by_id[self.row.price_id], catalog)

    @strawberry.field(description="Start of the billing period now running (inclusive).")
    def current_billing_period_start(self) -> datetime:
        return self.row.period_start

    @strawberry.field(description="End of the billing period now running (exclusive).")
    def current_billing_period_end(self) -> datetime:
        return self.row.period_end

    @strawberry.field(description="A balance for every meter of the pricing model.")
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

    @strawberry.field(description="The subscription charged.")
    def subscription_id(self) -> strawberry.ID:
        return strawberry.ID(str(self.row.subscription_id))

    @strawberry.field(description="The usage price the overage is charged at.")
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

    @strawberry.field(description="ISO 4217 code of amount, e.g. USD.")
    def currency(self) -> str:
        return self.row.currency


@strawberry.type(description="A sum of money in minor units of one currency.")
class MoneyTotal:
    amount: Long = strawberry.field(description="Minor currency units (cents).")
    currency: str = strawberry.field(description="ISO 4217 code, e.g. USD.")


@strawberry.type(
    description="One customer's billing: subscriptions, balances, charges, usage history and"
    " feature access. Reached through Query.billing or Customer.billing."
)
class Billing:
    customer_row: strawberry.Private[CustomerRow]

    @strawberry.field(description="The customer this billing is of.")
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

    @strawberry.field(
        description="The current subscriptions (see Subscription.current), newest first."
    )
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
        self,
        info: strawberry.Info,
        subscription_id: Annotated[
            strawberry.ID | None,
            strawberry.argument(
                description="One of the customer's subscriptions (another's gives []);"
                " default: the newest current one."
            ),
        ] = strawberry.UNSET,
    ) -> list[UsageBalance]:
        subs = await self._subscriptions(info)
        if subscription_id is None or subscription_id is strawberry.UNSET:
            sub = next((s for s in subs if s.current), None)
        else:
            sub = next((s for s in subs if str(s.id) == subscription_id), None)
        return [] if sub is None else await subscription_balances(info, sub)

    @strawberry.field(
        description="The customer's usage history, newest first, a page at a time (Relay"
        " cursor connection). Filters: one meter (an unknown slug matches nothing) and one"
        " subscription (one that is not the customer's matches nothing)."
    )
    @checked_arguments
    async def usage_events(
        self,
        info: strawberry.Info,
        meter_slug: Annotated[
            str | None, strawberry.argument(description="Only events of this usage meter.")
        ] = strawberry.UNSET,
        subscription_id: Annotated[
            strawberry.ID | None,
            strawberry.argument(description="Only events charged to this subscription."),
        ] = strawberry.UNSET,
        first: FirstArg = 50,
        after: AfterArg = strawberry.UNSET,
        last: LastArg = strawberry.UNSET,
        before: BeforeArg = strawberry.UNSET,
    ) -> UsageEventConnection:
        request = history.page_request(
            first, opt(after), opt(last), opt(before), history.DEFAULT_PAGE
        )
        return await history.usage_events(
            info, self.customer_row, opt(meter_slug), opt(subscription_id), request
        )

    @strawberry.field(description="checkFeatureAccess: a toggle feature on a current subscription.")
    @checked_arguments
    async def feature_access(
        self,
        info: strawberry.Info,
        feature_slug: Annotated[
            str, strawberry.argument(description="A TOGGLE feature's slug (others: false).")
        ],
    ) -> bool:
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


@strawberry.type(description="A customer of your product, billed by the gateway.")
class Customer:
    row: strawberry.Private[CustomerRow]

    @strawberry.field(description="The gateway's id of the customer.")
    def id(self) -> strawberry.ID:
        return strawberry.ID(str(self.row.id))

    @strawberry.field(description="Your own id of the customer, given at createCustomer.")
    def external_id(self) -> str:
        return self.row.external_id

    @strawberry.field(description="Display name; null when none was given.")
    def name(self) -> str | None:
        return self.row.name

    @strawberry.field(description="E-mail address; null when none was given.")
    def email(self) -> str | None:
        return self.row.email

    @strawberry.field(description="The customer's billing.")
    def billing(self) -> Billing:
        return Billing(customer_row=self.row)


@strawberry.type(description="One customer in a page, with its cursor.")
class CustomerEdge:
    cursor: str = strawberry.field(
        description="Opaque; pass as `after` or `before` to page from this customer."
    )
    node: Customer = strawberry.field(description="The customer.")


@strawberry.type(description="A page of customers in creation order (Relay cursor connection).")
class CustomerConnection:
    edges: list[CustomerEdge] = strawberry.field(description="The page's customers.")
    page_info: PageInfo = strawberry.field(description="Cursors and whether more pages exist.")

    @strawberry.field(description="How many customers there are, in all pages.")
    async def total_count(self, info: strawberry.Info) -> int:
        count: int = await info.context.loaders.customer_count.load("all")
        return count
