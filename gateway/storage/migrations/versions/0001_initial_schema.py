"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# One CREATE FUNCTION per statement: each ends with "$$;" on its own line's end.
FUNCTIONS = [
    statement + "$$"
    for statement in Path(__file__).with_name("0001_functions.sql").read_text().split("$$;\n")
    if statement.strip().replace("\n", "").strip("- ") and "CREATE" in statement
]


def upgrade() -> None:
    op.execute(FUNCTIONS[0])  # uuid_v7(), used by the tables' defaults
    op.create_table(
        "api_keys",
        sa.Column("id", sa.UUID(), server_default=sa.text("uuid_v7()"), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("prefix", sa.Text(), nullable=False),
        sa.Column("key_hash", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key_hash"),
    )
    op.create_table(
        "pricing_models",
        sa.Column("id", sa.UUID(), server_default=sa.text("uuid_v7()"), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("is_default", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "pricing_models_one_default",
        "pricing_models",
        ["is_default"],
        unique=True,
        postgresql_where=sa.text("is_default"),
    )
    op.create_table(
        "customers",
        sa.Column("id", sa.UUID(), server_default=sa.text("uuid_v7()"), nullable=False),
        sa.Column("pricing_model_id", sa.UUID(), nullable=False),
        sa.Column("external_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("email", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["pricing_model_id"],
            ["pricing_models.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("external_id"),
    )
    op.create_table(
        "products",
        sa.Column("id", sa.UUID(), server_default=sa.text("uuid_v7()"), nullable=False),
        sa.Column("pricing_model_id", sa.UUID(), nullable=False),
        sa.Column("slug", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("is_default", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["pricing_model_id"],
            ["pricing_models.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("pricing_model_id", "slug", name="products_slug_key"),
    )
    op.create_table(
        "usage_meters",
        sa.Column("id", sa.UUID(), server_default=sa.text("uuid_v7()"), nullable=False),
        sa.Column("pricing_model_id", sa.UUID(), nullable=False),
        sa.Column("slug", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("aggregation_type", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "aggregation_type IN ('sum', 'count_distinct_properties')",
            name="usage_meters_aggregation_type_check",
        ),
        sa.ForeignKeyConstraint(
            ["pricing_model_id"],
            ["pricing_models.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("pricing_model_id", "slug", name="usage_meters_slug_key"),
    )
    op.create_table(
        "features",
        sa.Column("id", sa.UUID(), server_default=sa.text("uuid_v7()"), nullable=False),
        sa.Column("pricing_model_id", sa.UUID(), nullable=False),
        sa.Column("slug", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=True),
        sa.Column("usage_meter_id", sa.UUID(), nullable=True),
        sa.Column("renewal_frequency", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "(type = 'usage_credit_grant') = (amount IS NOT NULL AND usage_meter_id IS NOT NULL AND renewal_frequency IS NOT NULL)",
            name="features_grant_shape_check",
        ),
        sa.CheckConstraint(
            "renewal_frequency IS NULL OR renewal_frequency IN ('once', 'every_billing_period')",
            name="features_renewal_frequency_check",
        ),
        sa.CheckConstraint("type IN ('toggle', 'usage_credit_grant')", name="features_type_check"),
        sa.CheckConstraint("amount IS NULL OR amount > 0", name="features_amount_check"),
        sa.ForeignKeyConstraint(
            ["pricing_model_id"],
            ["pricing_models.id"],
        ),
        sa.ForeignKeyConstraint(
            ["usage_meter_id"],
            ["usage_meters.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("pricing_model_id", "slug", name="features_slug_key"),
    )
    op.create_table(
        "prices",
        sa.Column("id", sa.UUID(), server_default=sa.text("uuid_v7()"), nullable=False),
        sa.Column("pricing_model_id", sa.UUID(), nullable=False),
        sa.Column("product_id", sa.UUID(), nullable=True),
        sa.Column("usage_meter_id", sa.UUID(), nullable=True),
        sa.Column("slug", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("unit_price", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("interval_unit", sa.Text(), nullable=True),
        sa.Column("interval_count", sa.Integer(), nullable=True),
        sa.Column("usage_events_per_unit", sa.Integer(), nullable=True),
        sa.Column("is_default", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("is_no_charge", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "(slug LIKE '%\\_no\\_charge') = is_no_charge", name="prices_no_charge_slug_check"
        ),
        sa.CheckConstraint(
            "(type = 'subscription') = (interval_unit IS NOT NULL AND interval_count IS NOT NULL)",
            name="prices_interval_check",
        ),
        sa.CheckConstraint(
            "(type = 'usage') = (usage_meter_id IS NOT NULL AND product_id IS NULL AND usage_events_per_unit IS NOT NULL)",
            name="prices_usage_owner_check",
        ),
        sa.CheckConstraint(
            "NOT is_no_charge OR (type = 'usage' AND unit_price = 0 AND usage_events_per_unit = 1 AND active)",
            name="prices_no_charge_shape_check",
        ),
        sa.CheckConstraint("currency ~ '^[A-Z]{3}$'", name="prices_currency_check"),
        sa.CheckConstraint(
            "interval_unit IS NULL OR interval_unit IN ('day', 'week', 'month', 'year')",
            name="prices_interval_unit_check",
        ),
        sa.CheckConstraint(
            "type = 'usage' OR (product_id IS NOT NULL AND usage_meter_id IS NULL)",
            name="prices_product_owner_check",
        ),
        sa.CheckConstraint(
            "type IN ('subscription', 'single_payment', 'usage')", name="prices_type_check"
        ),
        sa.CheckConstraint("NOT is_default OR active", name="prices_default_active_check"),
        sa.CheckConstraint(
            "interval_count IS NULL OR interval_count > 0", name="prices_interval_count_check"
        ),
        sa.CheckConstraint("unit_price >= 0", name="prices_unit_price_check"),
        sa.CheckConstraint(
            "usage_events_per_unit IS NULL OR usage_events_per_unit > 0",
            name="prices_usage_events_per_unit_check",
        ),
        sa.ForeignKeyConstraint(
            ["pricing_model_id"],
            ["pricing_models.id"],
        ),
        sa.ForeignKeyConstraint(
            ["product_id"],
            ["products.id"],
        ),
        sa.ForeignKeyConstraint(
            ["usage_meter_id"],
            ["usage_meters.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("pricing_model_id", "slug", name="prices_slug_key"),
    )
    op.create_index(
        "prices_one_default_per_meter",
        "prices",
        ["usage_meter_id"],
        unique=True,
        postgresql_where=sa.text("is_default AND type = 'usage'"),
    )
    op.create_index(
        "prices_one_default_per_product",
        "prices",
        ["product_id"],
        unique=True,
        postgresql_where=sa.text("is_default AND type <> 'usage'"),
    )
    op.create_index(
        "prices_one_no_charge_per_meter",
        "prices",
        ["usage_meter_id"],
        unique=True,
        postgresql_where=sa.text("is_no_charge"),
    )
    op.create_table(
        "product_features",
        sa.Column("product_id", sa.UUID(), nullable=False),
        sa.Column("feature_id", sa.UUID(), nullable=False),
        sa.ForeignKeyConstraint(
            ["feature_id"],
            ["features.id"],
        ),
        sa.ForeignKeyConstraint(
            ["product_id"],
            ["products.id"],
        ),
        sa.PrimaryKeyConstraint("product_id", "feature_id"),
    )
    op.create_table(
        "subscriptions",
        sa.Column("id", sa.UUID(), server_default=sa.text("uuid_v7()"), nullable=False),
        sa.Column("customer_id", sa.UUID(), nullable=False),
        sa.Column("price_id", sa.UUID(), nullable=False),
        sa.Column("product_id", sa.UUID(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("start_date", sa.DateTime(timezone=True), nullable=False),
        sa.Column("interval_unit", sa.Text(), nullable=False),
        sa.Column("interval_count", sa.Integer(), nullable=False),
        sa.Column("canceled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "status IN ('trialing', 'active', 'past_due', 'unpaid', 'cancellation_scheduled', 'incomplete', 'incomplete_expired', 'canceled', 'paused')",
            name="subscriptions_status_check",
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
        ),
        sa.ForeignKeyConstraint(
            ["price_id"],
            ["prices.id"],
        ),
        sa.ForeignKeyConstraint(
            ["product_id"],
            ["products.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "subscriptions_customer_idx", "subscriptions", ["customer_id", "created_at"], unique=False
    )
    op.create_table(
        "credit_grants",
        sa.Column("id", sa.UUID(), server_default=sa.text("uuid_v7()"), nullable=False),
        sa.Column("customer_id", sa.UUID(), nullable=False),
        sa.Column("subscription_id", sa.UUID(), nullable=False),
        sa.Column("usage_meter_id", sa.UUID(), nullable=False),
        sa.Column("feature_id", sa.UUID(), nullable=True),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("consumed", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "source IN ('once', 'every_billing_period', 'manual')",
            name="credit_grants_source_check",
        ),
        sa.CheckConstraint("amount > 0", name="credit_grants_amount_check"),
        sa.CheckConstraint(
            "consumed >= 0 AND consumed <= amount", name="credit_grants_consumed_check"
        ),
        sa.CheckConstraint(
            "expires_at IS NULL OR expires_at > granted_at", name="credit_grants_expiry_check"
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
        ),
        sa.ForeignKeyConstraint(
            ["feature_id"],
            ["features.id"],
        ),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscriptions.id"],
        ),
        sa.ForeignKeyConstraint(
            ["usage_meter_id"],
            ["usage_meters.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "subscription_id", "feature_id", "granted_at", name="credit_grants_issue_key"
        ),
    )
    op.create_index(
        "credit_grants_balance_idx",
        "credit_grants",
        ["subscription_id", "usage_meter_id", "expires_at"],
        unique=False,
    )
    op.create_table(
        "meter_balances",
        sa.Column("subscription_id", sa.UUID(), nullable=False),
        sa.Column("usage_meter_id", sa.UUID(), nullable=False),
        sa.Column("customer_id", sa.UUID(), nullable=False),
        sa.Column("event_seq", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
        ),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscriptions.id"],
        ),
        sa.ForeignKeyConstraint(
            ["usage_meter_id"],
            ["usage_meters.id"],
        ),
        sa.PrimaryKeyConstraint("subscription_id", "usage_meter_id"),
    )
    op.create_table(
        "usage_distinct_keys",
        sa.Column("subscription_id", sa.UUID(), nullable=False),
        sa.Column("usage_meter_id", sa.UUID(), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("properties_hash", sa.Text(), nullable=False),
        sa.Column("customer_id", sa.UUID(), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
        ),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscriptions.id"],
        ),
        sa.ForeignKeyConstraint(
            ["usage_meter_id"],
            ["usage_meters.id"],
        ),
        sa.PrimaryKeyConstraint(
            "subscription_id", "usage_meter_id", "period_start", "properties_hash"
        ),
    )
    op.create_table(
        "usage_events",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("customer_id", sa.UUID(), nullable=False),
        sa.Column("subscription_id", sa.UUID(), nullable=False),
        sa.Column("usage_meter_id", sa.UUID(), nullable=False),
        sa.Column("price_id", sa.UUID(), nullable=False),
        sa.Column("billing_period_id", sa.UUID(), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("consumed", sa.BigInteger(), nullable=False),
        sa.Column("covered", sa.BigInteger(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("transaction_id", sa.Text(), nullable=False),
        sa.Column("usage_date", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "properties",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "properties_given", sa.Boolean(), server_default=sa.text("false"), nullable=False
        ),
        sa.Column(
            "usage_date_given", sa.Boolean(), server_default=sa.text("false"), nullable=False
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("amount > 0", name="usage_events_amount_check"),
        sa.CheckConstraint(
            "consumed >= 0 AND covered >= 0 AND covered <= consumed",
            name="usage_events_allocation_check",
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
        ),
        sa.ForeignKeyConstraint(
            ["price_id"],
            ["prices.id"],
        ),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscriptions.id"],
        ),
        sa.ForeignKeyConstraint(
            ["usage_meter_id"],
            ["usage_meters.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "customer_id", "usage_meter_id", "transaction_id", name="usage_events_idempotency_key"
        ),
    )
    op.create_index(
        "usage_events_sequence_idx",
        "usage_events",
        ["subscription_id", "usage_meter_id", "seq"],
        unique=False,
    )
    op.create_table(
        "usage_totals",
        sa.Column("subscription_id", sa.UUID(), nullable=False),
        sa.Column("usage_meter_id", sa.UUID(), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("price_id", sa.UUID(), nullable=False),
        sa.Column("customer_id", sa.UUID(), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("covered", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("uncovered", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.CheckConstraint(
            "used >= 0 AND covered >= 0 AND uncovered >= 0 AND used = covered + uncovered",
            name="usage_totals_sum_check",
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
        ),
        sa.ForeignKeyConstraint(
            ["price_id"],
            ["prices.id"],
        ),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscriptions.id"],
        ),
        sa.ForeignKeyConstraint(
            ["usage_meter_id"],
            ["usage_meters.id"],
        ),
        sa.PrimaryKeyConstraint("subscription_id", "usage_meter_id", "period_start", "price_id"),
    )
    for statement in FUNCTIONS[1:]:
        op.execute(statement)


def downgrade() -> None:
    for function in (
        "record_usage_events(jsonb, uuid, interval, interval)",
        "record_usage_event(uuid, uuid, uuid, text, text, bigint, text, timestamptz,"
        " jsonb, boolean, interval, interval)",
        "_usage_replay(usage_events, uuid, uuid, bigint, timestamptz, jsonb)",
        "_usage_error(text, text, text[])",
        "_usage_event_json(usage_events)",
        "usage_balance(uuid, uuid, timestamptz)",
        "billing_period_id(uuid, timestamptz)",
        "billing_period(timestamptz, text, integer, timestamptz)",
    ):
        op.execute(f"DROP FUNCTION IF EXISTS {function}")
    op.drop_table("usage_totals")
    op.drop_index("usage_events_sequence_idx", table_name="usage_events")
    op.drop_table("usage_events")
    op.drop_table("usage_distinct_keys")
    op.drop_table("meter_balances")
    op.drop_index("credit_grants_balance_idx", table_name="credit_grants")
    op.drop_table("credit_grants")
    op.drop_index("subscriptions_customer_idx", table_name="subscriptions")
    op.drop_table("subscriptions")
    op.drop_table("product_features")
    op.drop_index(
        "prices_one_no_charge_per_meter",
        table_name="prices",
        postgresql_where=sa.text("is_no_charge"),
    )
    op.drop_index(
        "prices_one_default_per_product",
        table_name="prices",
        postgresql_where=sa.text("is_default AND type <> 'usage'"),
    )
    op.drop_index(
        "prices_one_default_per_meter",
        table_name="prices",
        postgresql_where=sa.text("is_default AND type = 'usage'"),
    )
    op.drop_table("prices")
    op.drop_table("features")
    op.drop_table("usage_meters")
    op.drop_table("products")
    op.drop_table("customers")
    op.drop_index(
        "pricing_models_one_default",
        table_name="pricing_models",
        postgresql_where=sa.text("is_default"),
    )
    op.drop_table("pricing_models")
    op.drop_table("api_keys")
    op.execute("DROP FUNCTION IF EXISTS uuid_v7()")
