"""Migrations match the models, go down and up again, and run once when raced."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg
import pytest
from alembic import command

from gateway.storage.db import asyncpg_dsn
from gateway.storage.migrate import alembic_config, current_head, upgrade
from tests.conftest import _with_database


async def _fetchval(url: str, sql: str) -> object:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


@contextmanager
def scratch_database(server_url: str, name: str) -> Iterator[str]:
    """An empty database beside the test database, dropped afterwards."""
    asyncio.run(_fetchval(server_url, f'DROP DATABASE IF EXISTS "{name}"'))
    asyncio.run(_fetchval(server_url, f'CREATE DATABASE "{name}"'))
    try:
        yield _with_database(server_url, name)
    finally:
        asyncio.run(_fetchval(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _tables(url: str) -> object:
    return asyncio.run(
        _fetchval(
            url,
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
            " AND tablename <> 'alembic_version'",
        )
    )


def test_alembic_check_is_clean(database_url: str) -> None:
    # Raises when the models and the migrated database differ.
    command.check(alembic_config(database_url))


def test_downgrade_and_upgrade_again(database_url: str) -> None:
    with scratch_database(database_url, "gateway_migrations_roundtrip") as url:
        upgrade(url)
        assert _tables(url) == 21  # 16 of billing, 5 of alerts and webhooks
        command.downgrade(alembic_config(url), "base")
        assert _tables(url) == 0
        upgrade(url)
        assert _tables(url) == 21  # 16 of billing, 5 of alerts and webhooks
        assert current_head() == "0028"


def test_processes_starting_together_migrate_once(database_url: str) -> None:
    with scratch_database(database_url, "gateway_migrations_race") as url:
        # Separate processes, as on a real deployment (alembic's context is per process).
        code = f"from gateway.storage.migrate import upgrade; upgrade({url!r})"
        procs = [
            subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE) for _ in range(3)
        ]
        for proc in procs:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err.decode()  # no "relation already exists"
        command.check(alembic_config(url))


# Rows of every customer-scoped table as written before the keys by customer (by the
# functions of then).
_DATA_BEFORE = """
INSERT INTO pricing_models (id, name, is_default) VALUES ('00000000-0000-7000-8000-000000000001', 'm', true);
INSERT INTO usage_meters (id, pricing_model_id, slug, name, aggregation_type)
VALUES ('00000000-0000-7000-8000-000000000002', '00000000-0000-7000-8000-000000000001', 'gen', 'Gen', 'sum');
INSERT INTO prices (pricing_model_id, usage_meter_id, slug, type, unit_price, currency,
                    usage_events_per_unit, is_default)
VALUES ('00000000-0000-7000-8000-000000000001', '00000000-0000-7000-8000-000000000002',
        'gen_overage', 'usage', 5, 'USD', 1, true);
INSERT INTO products (id, pricing_model_id, slug, name)
VALUES ('00000000-0000-7000-8000-000000000003', '00000000-0000-7000-8000-000000000001', 'pro', 'Pro');
INSERT INTO prices (id, pricing_model_id, product_id, slug, type, unit_price, currency,
                    interval_unit, interval_count, is_default)
VALUES ('00000000-0000-7000-8000-000000000004', '00000000-0000-7000-8000-000000000001',
        '00000000-0000-7000-8000-000000000003', 'pro_monthly', 'subscription', 100, 'USD',
        'month', 1, true);
INSERT INTO features (id, pricing_model_id, slug, name, type, amount, usage_meter_id,
                      renewal_frequency)
VALUES ('00000000-0000-7000-8000-000000000005', '00000000-0000-7000-8000-000000000001',
        'monthly', 'Monthly', 'usage_credit_grant', 100, '00000000-0000-7000-8000-000000000002',
        'every_billing_period');
INSERT INTO product_features VALUES ('00000000-0000-7000-8000-000000000003',
                                     '00000000-0000-7000-8000-000000000005');
INSERT INTO customers (id, pricing_model_id, external_id)
VALUES ('00000000-0000-7000-8000-000000000006', '00000000-0000-7000-8000-000000000001', 'user-1');
INSERT INTO subscriptions (id, customer_id, price_id, product_id, status, start_date,
                           interval_unit, interval_count)
VALUES ('00000000-0000-7000-8000-000000000007', '00000000-0000-7000-8000-000000000006',
        '00000000-0000-7000-8000-000000000004', '00000000-0000-7000-8000-000000000003',
        'active', now() - interval '1 day', 'month', 1);
INSERT INTO usage_alerts (pricing_model_id, usage_meter_id, used_above)
VALUES ('00000000-0000-7000-8000-000000000001', '00000000-0000-7000-8000-000000000002', 1);
INSERT INTO webhook_endpoints (url, secret) VALUES ('http://127.0.0.1:9/', 'whsec_x');
SELECT record_usage_event(gen_random_uuid(), NULL, '00000000-0000-7000-8000-000000000007',
                          'usageMeterSlug', 'gen', 30, 'tx-1', NULL, NULL, false,
                          interval '35 days', interval '5 minutes');
SELECT reserve_usage(gen_random_uuid(), NULL, '00000000-0000-7000-8000-000000000007',
                     'usageMeterSlug', 'gen', 20, 'hold-1', interval '1 hour');
INSERT INTO webhook_attempts (delivery_id, status_code, latency_ms)
SELECT id, 500, 1.5 FROM webhook_deliveries;
"""

_CUSTOMER = "00000000-0000-7000-8000-000000000006"
_SUBSCRIPTION = "00000000-0000-7000-8000-000000000007"
_METER = "00000000-0000-7000-8000-000000000002"


def _run_sql(url: str, script: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            await conn.execute(script)
        finally:
            await conn.close()

    asyncio.run(run())


def test_upgrade_keys_existing_rows_by_customer(database_url: str) -> None:
    """0015 transforms data in place: rows written before it keep working after it."""
    with scratch_database(database_url, "gateway_migrations_data") as url:
        upgrade(url, "0014")
        _run_sql(url, _DATA_BEFORE)
        upgrade(url)
        command.check(alembic_config(url))
        assert (
            _fetchval_at(
                url,
                "SELECT customer_id::text FROM customer_external_ids WHERE external_id = 'user-1'",
            )
            == _CUSTOMER
        )
        for table in ("usage_alert_events", "webhook_deliveries", "webhook_attempts"):
            assert _fetchval_at(
                url, f"SELECT array_agg(DISTINCT customer_id)::text FROM {table}"
            ) == ("{" + _CUSTOMER + "}"), table
        # 100 granted, 30 used, 20 held; the functions read the migrated rows.
        balance = _fetchval_at(
            url,
            f"SELECT available_balance || '/' || used_balance || '/' || reserved_balance"
            f"  FROM usage_balance('{_CUSTOMER}', '{_SUBSCRIPTION}', '{_METER}')",
        )
        assert balance == "50/30/20"
        replay = _fetchval_at(
            url,
            f"SELECT record_usage_event('{_CUSTOMER}', gen_random_uuid(), NULL,"
            f" '{_SUBSCRIPTION}', 'usageMeterSlug', 'gen', 30, 'tx-1', NULL, NULL, false,"
            " interval '35 days', interval '5 minutes') ->> 'status'",
        )
        assert replay == "replayed"
        # The external id stays unique (now through customer_external_ids).
        with pytest.raises(asyncpg.UniqueViolationError):
            _run_sql(url, f"INSERT INTO customer_external_ids VALUES ('user-1', '{_SUBSCRIPTION}')")


def _fetchval_at(url: str, sql: str) -> object:
    return asyncio.run(_fetchval(url, sql))
