"""The data model as SQLModel tables. Alembic migrations are generated from this metadata.

Invariants live in the database (checks, unique and partial unique indexes), not only in
Python. Every table that holds a customer's rows carries ``customer_id`` first in every key
and foreign key, so the data distributes by customer (``distribution``); ids are UUIDv7
(time-ordered, no global sequence).

The tables live in one module per domain, all on the one SQLModel metadata: ``catalog_tables``
(pricing models, meters, products, prices, features), ``customer_tables`` (customers,
subscriptions, credit grants, API keys), ``usage_tables`` (balances, totals, distinct keys,
events), ``reservation_tables`` (holds) and ``alert_tables`` (alerts and webhooks, imported by
``migrations/env.py``). This module gathers the billing core and names the metadata.
"""

from __future__ import annotations

from sqlmodel import SQLModel

from gateway.storage.catalog_tables import (
    Feature,
    Price,
    PricingModel,
    Product,
    ProductFeature,
    UsageMeter,
)
from gateway.storage.customer_tables import (
    CURRENT_STATUSES,
    SUBSCRIPTION_STATUSES,
    ApiKey,
    CreditGrant,
    Customer,
    CustomerExternalId,
    Subscription,
)
from gateway.storage.reservation_tables import RESERVATION_STATUSES, UsageReservation
from gateway.storage.usage_tables import MeterBalance, UsageDistinctKey, UsageEvent, UsageTotal

__all__ = [
    "CURRENT_STATUSES",
    "RESERVATION_STATUSES",
    "SUBSCRIPTION_STATUSES",
    "ApiKey",
    "CreditGrant",
    "Customer",
    "CustomerExternalId",
    "Feature",
    "MeterBalance",
    "Price",
    "PricingModel",
    "Product",
    "ProductFeature",
    "Subscription",
    "UsageDistinctKey",
    "UsageEvent",
    "UsageMeter",
    "UsageReservation",
    "UsageTotal",
    "metadata",
]

metadata = SQLModel.metadata
