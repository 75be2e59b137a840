"""`billing-gateway demo`: the gateway on an embedded database with a demo pricing model.

The demo keeps its own embedded PostgreSQL in ``GATEWAY_DATA_DIR/demo`` (or ``--data-dir``),
so it never touches the data of ``billing-gateway serve``. On every start it makes sure of:

- the pricing model of ``pricing.yaml`` (free and pro plans, the meters ``api_calls`` with a
  paid default price and ``ai_generations``, a monthly and a one-time credit grant, a toggle);
- the customer ``demo-user`` with a current subscription on the pro plan (credits included);
- some usage in the current billing period, recorded with transaction ids derived from the
  subscription and the period, so restarts replay them instead of charging again;

then it creates a new secret key, issues a customer session token, prints both with the
GraphiQL URL and a query to paste, and serves. Everything goes through the gateway's own
functions (catalog setup, customers, subscriptions, usage, auth); nothing here writes SQL.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from gateway.billing.catalog import CatalogCache
from gateway.billing.customers import create_customer, customers_by_external_id
from gateway.billing.pricing_setup import setup_pricing_model
from gateway.billing.subscriptions import create_subscription, subscriptions_by_customer
from gateway.billing.usage import UsageInput, record_usage_event
from gateway.callers.auth import Caller, create_api_key, issue_customer_token
from gateway.errors import UserError
from gateway.settings import Settings
from gateway.storage.db import Database

DEMO_CUSTOMER = "demo-user"
DEMO_PLAN_PRICE = "pro_monthly"
PRICING_PATH = Path(__file__).parent / "pricing.yaml"
TOKEN_LIFETIME = timedelta(hours=12)
# (name, meter, amount): usage seeded in each billing period.
SEED_USAGE = (("api", "api_calls", 1250), ("ai", "ai_generations", 3))

DEMO_QUERY = """\
query DemoBilling {
  billing {
    customer { externalId name }
    currentSubscription { status price { slug } currentBillingPeriodEnd }
    usageBalances {
      usageMeter { slug }
      availableBalance
      usedBalance
      balanceLimit
      percentUsed
    }
    prioritySupport: featureAccess(featureSlug: "priority_support")
  }
}"""


class DemoError(Exception):
    """The demo data could not be set up (for example a foreign customer named demo-user)."""


@dataclass(frozen=True)
class DemoSetup:
    pricing_model_id: uuid.UUID
    customer_id: uuid.UUID
    subscription_id: uuid.UUID
    secret_key: str
    customer_token: str
    token_expires_at: datetime
    created: bool
    """True when this run created the demo customer (first start)."""


async def prepare_demo(db: Database, settings: Settings, token_secret: str) -> DemoSetup:
    """Set up (or reuse) the demo data, and make a new key and customer token."""
    created = False
    customer = (await customers_by_external_id(db, [DEMO_CUSTOMER])).get(DEMO_CUSTOMER)
    if customer is None:
        made = await create_customer(db, DEMO_CUSTOMER, "Demo User", "demo@example.com")
        if isinstance(made, UserError):  # no pricing model yet: this is the first start
            model = await setup_pricing_model(db, PRICING_PATH.read_text())
            if isinstance(model, UserError):
                raise DemoError(f"the demo pricing model was refused: {model.message}")
            made = await create_customer(db, DEMO_CUSTOMER, "Demo User", "demo@example.com")
            if isinstance(made, UserError):
                raise DemoError(f"the demo customer could not be created: {made.message}")
        customer, created = made, True

    subscriptions = (await subscriptions_by_customer(db, [customer.id])).get(customer.id, [])
    subscription = next((s for s in subscriptions if s.current), None)
    if subscription is None:
        catalogs = CatalogCache(db, settings.gateway_catalog_cache_seconds)
        started = await create_subscription(db, catalogs, DEMO_CUSTOMER, DEMO_PLAN_PRICE, None)
        if isinstance(started, UserError):
            raise DemoError(f"the demo subscription could not be started: {started.message}")
        subscription = started

    key_info, secret_key = await create_api_key(db, "demo")
    caller = Caller(kind="secret_key", key_id=key_info.id)
    period = subscription.period_start.strftime("%Y%m%dT%H%M%S")
    for name, meter, amount in SEED_USAGE:
        result = await record_usage_event(
            db,
            settings,
            caller,
            UsageInput(
                target_kind="usageMeterSlug",
                target=meter,
                amount=amount,
                subscription_id=str(subscription.id),
                transaction_id=f"demo-seed-{name}-{subscription.id}-{period}",
            ),
        )
        if isinstance(result, UserError):
            raise DemoError(f"the demo usage on {meter} was refused: {result.message}")

    token, expires_at = issue_customer_token(token_secret, customer.id, TOKEN_LIFETIME)
    return DemoSetup(
        pricing_model_id=customer.pricing_model_id,
        customer_id=customer.id,
        subscription_id=subscription.id,
        secret_key=secret_key,
        customer_token=token,
        token_expires_at=expires_at,
        created=created,
    )


def banner(setup: DemoSetup, url: str) -> str:
    state = "created" if setup.created else "reused"
    expires = setup.token_expires_at.isoformat()
    indented_query = "\n".join("  " + line for line in DEMO_QUERY.splitlines())
    return f"""
Billing gateway demo ({state} customer {DEMO_CUSTOMER}, subscription {setup.subscription_id})

  GraphiQL:        {url}
  Secret key:      {setup.secret_key}
                   (the merchant's backend: administration, any customer; new each start)
  Customer token:  {setup.customer_token}
                   (a frontend or mobile client of {DEMO_CUSTOMER}; expires {expires})

Open GraphiQL, paste into the Headers tab:

  {{"Authorization": "Bearer {setup.customer_token}"}}

and run this query:

{indented_query}

Stop with Ctrl-C; data is kept for the next start.
"""


def run_demo(settings: Settings, args: argparse.Namespace) -> int:
    from gateway.api.app import create_app
    from gateway.api.server import run_server
    from gateway.logs import resolve_format
    from gateway.startup import check_port
    from gateway.storage.embedded import resolve_database_url
    from gateway.storage.migrate import upgrade

    data_dir = Path(args.data_dir) if args.data_dir else settings.gateway_data_dir / "demo"
    demo_settings = settings.model_copy(
        update={
            "database_url": None,
            "gateway_data_dir": data_dir,
            "gateway_env": "development",
            "gateway_graphiql": True,
            "gateway_introspection": True,
        }
    )
    host = args.host or settings.gateway_host
    port = args.port or settings.gateway_port
    check_port(host, port)
    url, server = resolve_database_url(None, data_dir)
    try:
        upgrade(url)
        token_secret = demo_settings.token_secret()

        async def prepare() -> DemoSetup:
            db = Database(url, min_size=1, max_size=2)
            await db.connect()
            try:
                return await prepare_demo(db, demo_settings, token_secret)
            finally:
                await db.close()

        try:
            setup = asyncio.run(prepare())
        except DemoError as exc:
            print(f"error: {exc}", flush=True)
            return 1
        shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        text = banner(setup, f"http://{shown_host}:{port}/graphql")
        run_server(
            create_app(demo_settings, url),
            host,
            port,
            log_format=resolve_format(settings.gateway_log_format),
            on_ready=lambda: print(text, flush=True),  # once it answers, not before
        )
    finally:
        if server is not None:
            server.stop()
    return 0
