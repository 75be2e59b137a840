"""How the tables distribute by customer (Citus), and the rules that make it possible.

One PostgreSQL carries the gateway until its writes do not fit; then the tables are spread
over a Citus cluster, distributed by customer. The schema is kept in the form that
distributes on plain PostgreSQL already (tests/test_distribution_keys.py reads the catalog,
tests/test_partitioned_hot_path.py runs the hot path on a copy partitioned by customer):

- ``CUSTOMER_SCOPED``: a customer's rows, distributed (and co-located) by ``customer_id``.
  Every primary key, unique constraint and foreign key between them includes
  ``customer_id``, in the first position on both sides of a foreign key; a subscription is
  referenced as (customer_id, subscription_id). ``customers`` itself is distributed by its
  primary key ``id``.
- ``LOOKUPS``: distributed by their own key, not co-located with the customers. Only
  ``customer_external_ids`` (external id -> customer), which carries the global uniqueness of
  ``customers.external_id``.
- ``REFERENCE``: the merchant's tables, copied to every node: the catalog, secret keys,
  usage alerts (an alert may cover every customer of a pricing model) and webhook endpoints.
  They reference only each other; customer-scoped tables may reference them.

Ids are UUIDv7 made by ``uuid_v7()`` or by the gateway: no global sequence.

Every hot statement names its customer (``customer_id = $1``, and every join carries it), so
it runs on one shard; every database function of the hot path takes the customer as its
first argument, never NULL (the routing argument of a delegated function: a NULL one is
refused by the gateway before the call). The gateway knows the customer before it calls:
from the caller's session token, or from ``gateway.billing.owners`` (subscription ->
customer, cached per process: a subscription's customer never changes).

``customer_external_ids`` is distributed by the external id rather than copied to every node
as a reference table: it grows with the customers (a reference table would hold every
customer's row on every node and write each new one on all of them), and its one hot read,
external id -> customer, names the external id, so it runs on one shard. Creating a customer
then writes two shards, possibly on two nodes, in one (two-phase) transaction; that is not on
the hot path.

``HOT_FUNCTIONS`` are the database functions that take the customer as their first argument
(``ROUTING_ARGUMENT``): ``billing-gateway distribute`` delegates each to the node of that
customer (gateway.storage.distribute). A test checks that every function of the SQL sources
whose first argument is ``p_customer_id`` is listed, and nothing else.

Tried on a Citus 13.2 cluster (docs/operations.md "Scaling out"; the tables placed as below, the hot functions delegated by
``p_customer_id``): single events, replays, distinct-property meters, balance reads, manual
grants, reserve/finalize/release, voids and batches of several customers run. A batch is
one call for all its customers on one PostgreSQL, and one call per customer on Citus
(``Database.distributed``, read at connect): the batch's set-based statement filters by
``customer_id = ANY(customers)``, which only a plan with that array bound prunes to one shard,
so ``_record_usage_steady`` plans custom when Citus is loaded (generic elsewhere, where
planning it would cost more than running it).
"""

from __future__ import annotations

CUSTOMER_COLUMN = "customer_id"

CUSTOMER_SCOPED: dict[str, str] = {
    "customers": "id",
    "subscriptions": CUSTOMER_COLUMN,
    "credit_grants": CUSTOMER_COLUMN,
    "meter_balances": CUSTOMER_COLUMN,
    "usage_totals": CUSTOMER_COLUMN,
    "usage_distinct_keys": CUSTOMER_COLUMN,
    "usage_events": CUSTOMER_COLUMN,
    "usage_reservations": CUSTOMER_COLUMN,
    "usage_alert_events": CUSTOMER_COLUMN,
    "webhook_deliveries": CUSTOMER_COLUMN,
    "webhook_attempts": CUSTOMER_COLUMN,
}

LOOKUPS: dict[str, str] = {"customer_external_ids": "external_id"}

REFERENCE: tuple[str, ...] = (
    "pricing_models",
    "usage_meters",
    "products",
    "prices",
    "features",
    "product_features",
    "api_keys",
    "usage_alerts",
    "webhook_endpoints",
)

ROUTING_ARGUMENT = "p_customer_id"

HOT_FUNCTIONS: tuple[str, ...] = (
    "record_usage_event",
    "record_usage_events",
    "reserve_usage",
    "finalize_usage_reservation",
    "release_usage_reservation",
    "void_usage_event",
    "usage_balance",
    "usage_reserved",
    "evaluate_usage_alerts",
    "fire_usage_alerts",
    # Not a request's, but one customer's too: the periodic tidy-up of expired holds.
    "sweep_usage_reservations",
)
