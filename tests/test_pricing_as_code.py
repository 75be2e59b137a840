"""Pricing models as code: every shape of pricing file Flowglad ships sets up, Flowglad's
setup rules, export and round trip, and applying an edited definition while usage exists.

The fixtures in tests/fixtures/pricing reproduce the shape (every field, nesting, null and
default) of Flowglad's six pricing-model templates and of its seat-based playground file,
with names, slugs and descriptions of this project's own.
"""

from __future__ import annotations

import asyncio
import copy
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.billing.catalog import NOTIFY_CHANNEL, load_catalogs
from gateway.billing.pricing_export import definition_of, export_definition
from gateway.billing.pricing_setup import SetUp, parse_plan, setup_pricing_model
from gateway.billing.pricing_update import update_pricing_model
from gateway.billing.reconcile import reconcile
from gateway.billing.records import Catalog
from gateway.errors import ErrorCode, UserError
from gateway.settings import Settings
from gateway.storage.db import Database
from tests.conftest import FIXTURES, GraphQLClient
from tests.factories import customer_on_plan, ok, record, session_token

PRICING = FIXTURES / "pricing"
FIXTURE_FILES = sorted(p.name for p in PRICING.glob("*.yaml"))


def text_of(name: str) -> str:
    return (PRICING / name).read_text()


async def set_up(db: Database, text: str) -> uuid.UUID:
    result = await setup_pricing_model(db, text)
    assert isinstance(result, SetUp), result
    return result.pricing_model_id


async def catalog_of(db: Database, pm_id: uuid.UUID) -> Catalog:
    return (await load_catalogs(db, [pm_id]))[pm_id]


def comparable(c: Catalog) -> dict[str, Any]:
    """Every stored field of a model, keyed by slug instead of id."""
    meter = {m.id: m.slug for m in c.meters}
    feature = {f.id: f.slug for f in c.features}
    product = {p.id: p.slug for p in c.products}
    return {
        "name": c.name,
        "meters": {m.slug: (m.name, m.aggregation_type) for m in c.meters},
        "prices": {
            p.slug: (
                p.name,
                p.type,
                p.unit_price,
                p.currency,
                p.interval_unit,
                p.interval_count,
                p.usage_events_per_unit,
                p.is_default,
                p.is_no_charge,
                p.active,
                p.archived,
                meter.get(p.usage_meter_id) if p.usage_meter_id else None,
                product.get(p.product_id) if p.product_id else None,
            )
            for p in c.prices
        },
        "features": {
            f.slug: (
                f.name,
                f.description,
                f.type,
                f.amount,
                meter.get(f.usage_meter_id) if f.usage_meter_id else None,
                f.renewal_frequency,
                f.active,
                f.archived,
            )
            for f in c.features
        },
        "products": {
            p.slug: (
                p.name,
                p.description,
                p.is_default,
                p.active,
                p.archived,
                sorted(feature[x] for x in p.feature_ids),
            )
            for p in c.products
        },
    }


# --- Every shape Flowglad ships ---------------------------------------------------------------

# fixture -> (meters, user usage prices, features stored, products incl. an added free one,
#             number of warnings)
SHAPES = {
    "credit_limited_plans.yaml": (1, 1, 5, 3, 3),
    "generation_top_ups.yaml": (2, 2, 4, 4, 7),
    "metered_tokens.yaml": (1, 1, 3, 2, 3),
    "per_member_workspace.yaml": (0, 0, 2, 4, 18),
    "recorded_calls.yaml": (0, 0, 3, 2, 7),
    "seat_playground.yaml": (0, 0, 0, 2, 5),
    "tracked_messages.yaml": (3, 3, 3, 2, 2),
}


def test_every_fixture_is_covered() -> None:
    assert sorted(SHAPES) == FIXTURE_FILES


@pytest.mark.parametrize("name", sorted(SHAPES))
async def test_every_flowglad_shape_sets_up(db: Database, name: str) -> None:
    meters, usage_prices, features, products, warnings = SHAPES[name]
    result = await setup_pricing_model(db, text_of(name))
    assert isinstance(result, SetUp), result
    assert len(result.warnings) == warnings
    c = await catalog_of(db, result.pricing_model_id)
    assert len(c.meters) == meters
    # every meter also gets its no-charge price
    assert sum(1 for p in c.prices if p.type == "usage") == usage_prices + meters
    assert len(c.features) == features
    assert len(c.products) == products
    assert sum(1 for p in c.prices if p.type != "usage") == products
    assert sum(1 for p in c.products if p.is_default) == 1


async def test_usage_limit_shape_values(db: Database) -> None:
    c = await catalog_of(db, await set_up(db, text_of("credit_limited_plans.yaml")))
    overage = c.price_by_slug["render_job_overage"]
    assert (overage.unit_price, overage.usage_events_per_unit, overage.is_default) == (12, 1, True)
    # what the gateway models, it stores: the usage price's interval
    assert (overage.interval_unit, overage.interval_count) == ("month", 1)
    no_charge = c.price_by_slug["render_jobs_no_charge"]
    assert (no_charge.name, no_charge.is_default) == ("Render Jobs - No Charge", False)
    starter = c.feature_by_slug["starter_render_jobs"]
    assert (starter.amount, starter.renewal_frequency, starter.active) == (100, "once", True)
    studio = c.price_by_slug["studio_monthly"]
    assert (studio.unit_price, studio.interval_unit, studio.type) == (2500, "month", "subscription")
    result = await setup_pricing_model(db, text_of("credit_limited_plans.yaml"))
    assert isinstance(result, SetUp)
    assert result.warnings == (
        "products[1].price.trialPeriodDays: a trial period is not modelled by the gateway;"
        " accepted and ignored",
        "products[1].displayGroup: a display group is not modelled by the gateway; accepted"
        " and ignored",
        "products[1].displayOrder: a display order is not modelled by the gateway; accepted"
        " and ignored",
    )


async def test_seat_shape_warns_of_resources(db: Database) -> None:
    result = await setup_pricing_model(db, text_of("seat_playground.yaml"))
    assert isinstance(result, SetUp)
    assert result.warnings == (
        "resources: 1 resource(s) is not modelled by the gateway; accepted and ignored",
        "features[0]: a resource feature is not modelled by the gateway; accepted and ignored",
        "products[1].product.singularQuantityLabel: a quantity label is not modelled by the"
        " gateway; accepted and ignored",
        "products[1].product.pluralQuantityLabel: a quantity label is not modelled by the"
        " gateway; accepted and ignored",
        "products[1].features[0]: a resource feature is not modelled by the gateway; accepted"
        " and ignored",
    )
    c = await catalog_of(db, result.pricing_model_id)
    assert [(p.slug, p.is_default, p.feature_ids) for p in c.products] == [
        ("starter", True, ()),
        ("office", False, ()),
    ]


async def test_single_payment_shape_and_added_free_product(db: Database) -> None:
    c = await catalog_of(db, await set_up(db, text_of("generation_top_ups.yaml")))
    pack = c.price_by_slug["quick_render_pack"]
    assert (pack.type, pack.unit_price, pack.interval_unit, pack.interval_count) == (
        "single_payment",
        500,
        None,
        None,
    )
    free = next(p for p in c.products if p.is_default)
    assert (free.slug, free.name) == ("free", "Free Plan")
    price = c.price_by_slug["free"]
    assert (price.name, price.type, price.unit_price, price.interval_unit) == (
        "Free Plan",
        "subscription",
        0,
        "month",
    )


# --- Flowglad's setup rules -------------------------------------------------------------------

BASE: dict[str, Any] = {
    "name": "Rules",
    "usageMeters": [
        {
            "usageMeter": {"slug": "calls", "name": "Calls"},
            "prices": [{"type": "usage", "slug": "calls_std", "unitPrice": 1}],
        }
    ],
    "features": [],
    "products": [
        {
            "product": {"slug": "basic", "name": "Basic", "default": True},
            "price": {
                "type": "subscription",
                "slug": "basic_monthly",
                "unitPrice": 0,
                "intervalUnit": "month",
            },
            "features": [],
        }
    ],
}


def base() -> dict[str, Any]:
    return copy.deepcopy(BASE)


def problems(data: dict[str, Any]) -> list[str]:
    plan, found = parse_plan(json.dumps(data))
    assert plan is None
    return found


def test_names_are_trimmed() -> None:
    """Flowglad's safeZodSanitizedString: ``z.string().trim().min(1)``."""
    data = base()
    data["name"] = "  Rules  "
    data["usageMeters"][0]["usageMeter"]["name"] = "\tCalls \n"
    data["products"][0]["product"]["name"] = " Basic"
    plan, found = parse_plan(json.dumps(data))
    assert found == []
    assert plan is not None
    assert (plan.name, plan.meters[0].name, plan.products[0].name) == ("Rules", "Calls", "Basic")
    data["products"][0]["product"]["name"] = "   "
    assert problems(data) == ["products[0].product.name: must not be empty"]


def test_names_are_at_most_255_characters() -> None:
    """Flowglad: ``.max(255, 'Field must be less than 255 characters')``."""
    data = base()
    data["name"] = "n" * 255
    assert parse_plan(json.dumps(data))[1] == []
    data["name"] = "n" * 256
    data["usageMeters"][0]["prices"][0]["name"] = "p" * 256
    assert problems(data) == [
        "name: must be at most 255 characters",
        "usageMeters[0].prices[0].name: must be at most 255 characters",
    ]


def test_default_product_must_have_zero_price() -> None:
    """Flowglad: 'Default products must have zero price'."""
    data = base()
    data["products"][0]["price"]["unitPrice"] = 500
    assert problems(data) == ["products[0].price.unitPrice: default products must have zero price"]


def test_default_product_cannot_have_a_trial() -> None:
    """Flowglad: 'Default products cannot have trials'."""
    data = base()
    data["products"][0]["price"]["trialPeriodDays"] = 7
    assert problems(data) == [
        "products[0].price.trialPeriodDays: default products cannot have trials"
    ]


def test_free_default_product_is_added_when_none_is_default() -> None:
    """Flowglad: 'Auto-generate default plan if none provided' (Free Plan, slug free)."""
    data = base()
    data["products"][0]["product"]["default"] = False
    plan, found = parse_plan(json.dumps(data))
    assert found == []
    assert plan is not None
    assert [(p.slug, p.name, p.is_default) for p in plan.products] == [
        ("basic", "Basic", False),
        ("free", "Free Plan", True),
    ]
    assert plan.products[1].price.slug == "free"
    assert plan.warnings[-1] == (
        'products: no product is the default; the free default product "free" is added'
    )
    # "Slug 'free' is reserved for default products only"
    data["products"][0]["product"]["slug"] = "free"
    assert problems(data) == [
        'products[0].product.slug: slug "free" is reserved for default products only'
    ]


def test_usage_price_slugs_are_optional() -> None:
    """Flowglad: 'Only validate if slug is provided - undefined/null slugs are allowed'."""
    data = base()
    data["usageMeters"][0]["prices"] = [
        {"type": "usage", "unitPrice": 1, "isDefault": True},
        {"type": "usage", "slug": "calls_price_2", "unitPrice": 2},
        {"type": "usage", "slug": None, "unitPrice": 3},
    ]
    plan, found = parse_plan(json.dumps(data))
    assert found == []
    assert plan is not None
    assert [p.slug for p in plan.meters[0].prices] == [
        "calls_price_1",
        "calls_price_2",
        "calls_price_3",
    ]
    assert plan.warnings == (
        'usageMeters[0].prices[0].slug: absent; the gateway names the price "calls_price_1"',
        'usageMeters[0].prices[2].slug: absent; the gateway names the price "calls_price_3"',
    )


async def test_no_charge_price_is_named_after_the_meter(db: Database) -> None:
    """Flowglad's createNoChargePriceInsert: ``name: `${usageMeter.name} - No Charge```."""
    c = await catalog_of(db, await set_up(db, json.dumps(base())))
    price = c.price_by_slug["calls_no_charge"]
    assert (price.name, price.unit_price, price.usage_events_per_unit, price.is_default) == (
        "Calls - No Charge",
        0,
        1,
        True,
    )


def test_fields_flowglad_accepts_are_never_errors() -> None:
    data = base()
    data["usageMeters"][0]["prices"][0].update(
        trialPeriodDays=None, intervalUnit="month", intervalCount=1, active=True
    )
    data["products"][0]["product"].update(
        active=True, imageURL="https://example.test/basic.png", singularQuantityLabel="seat"
    )
    data["products"][0]["price"].update(usageMeterId=None, usageEventsPerUnit=None)
    data["products"][0]["displayGroup"] = "basic"
    data["resources"] = [{"slug": "seats", "name": "Seats", "active": True}]
    data["features"] = [
        {"type": "resource", "slug": "seat", "name": "Seat", "resourceSlug": "seats", "amount": 1}
    ]
    plan, found = parse_plan(json.dumps(data))
    assert found == []
    assert plan is not None
    assert plan.features == ()
    # a key Flowglad does not know is still refused
    data["products"][0]["colour"] = "blue"
    assert problems(data) == ["products[0].colour: unknown field"]


# --- Export and round trip --------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SHAPES))
async def test_round_trip(db: Database, name: str) -> None:
    first = await catalog_of(db, await set_up(db, text_of(name)))
    exported = export_definition(first)
    again = await catalog_of(db, await set_up(db, exported))
    assert comparable(again) == comparable(first)
    assert export_definition(again) == exported


def _env(settings: Settings) -> dict[str, str]:
    return {"DATABASE_URL": str(settings.database_url), "PATH": "/usr/bin:/bin"}


CLI = str(Path(sys.executable).parent / "billing-gateway")


async def run_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """The command line in its own process (off the event loop: the test server runs on it)."""
    return await asyncio.to_thread(
        subprocess.run,
        [CLI, *args],
        capture_output=True,
        text=True,
        env=_env(settings),
        check=False,
    )


async def test_definition_field_and_export_command(
    db: Database, gql: GraphQLClient, settings: Settings, tmp_path: Path
) -> None:
    response = await gql(
        """mutation($d: String!) { setupPricingModel(input: {definition: $d}) {
             __typename ... on PricingModelSetUp { warnings pricingModel { id definition } } } }""",
        {"d": text_of("metered_tokens.yaml")},
    )
    result = ok(response, "setupPricingModel")
    assert result["__typename"] == "PricingModelSetUp"
    assert len(result["warnings"]) == 3
    pm_id = uuid.UUID(result["pricingModel"]["id"])
    c = await catalog_of(db, pm_id)
    assert result["pricingModel"]["definition"] == export_definition(c)
    out = tmp_path / "model.yaml"
    done = await run_cli(settings, "pricing", "export", str(pm_id), "--output", str(out))
    assert done.returncode == 0, done.stderr
    assert out.read_text() == export_definition(c)
    assert yaml.safe_load(out.read_text()) == definition_of(c)


# --- Updating in place while usage exists -----------------------------------------------------

UPDATE_FIELDS = """
  __typename
  ... on PricingModelUpdated { changes warnings pricingModel { id name definition
      usageMeters { slug defaultPrice { slug unitPrice } } } }
  ... on UserError { code message field }
"""
UPDATE = (
    "mutation($id: ID!, $d: String!) { updatePricingModel(input: {pricingModelId: $id,"
    f" definition: $d}}) {{ {UPDATE_FIELDS} }} }}"
)


def edited(text: str) -> str:
    """The usage-limit fixture, edited: rename, add a meter, change a usage price, drop a
    product."""
    data = yaml.safe_load(text)
    data["name"] = "Credit-Limited Plans 2"
    data["products"][1]["product"]["name"] = "Studio Plus"
    data["usageMeters"][0]["prices"][0]["unitPrice"] = 15
    data["usageMeters"].append(
        {
            "usageMeter": {"slug": "exports", "name": "Exports"},
            "prices": [{"type": "usage", "slug": "export_std", "unitPrice": 3, "isDefault": True}],
        }
    )
    del data["products"][2]  # agency
    data["features"] = [f for f in data["features"] if f["slug"] != "agency_render_jobs"]
    return yaml.safe_dump(data, sort_keys=False)


async def test_update_while_usage_exists(db: Database, gql: GraphQLClient) -> None:
    text = text_of("credit_limited_plans.yaml")
    pm_id = await set_up(db, text)
    before = await catalog_of(db, pm_id)
    old_price = before.price_by_slug["render_job_overage"]
    sub_id = await customer_on_plan(gql, "user-1", "studio_monthly")
    for n in range(3):
        result = await record(
            gql,
            target={"usageMeterSlug": "render_jobs"},
            amount=5,
            subscriptionId=sub_id,
            transactionId=f"t{n}",
        )
        assert result["__typename"] == "UsageEventRecorded", result
    totals_before = await db.fetch(
        "SELECT price_id, used, covered, uncovered FROM usage_totals ORDER BY price_id"
    )

    # A dry run lists the changes and writes nothing.
    dry = await update_pricing_model(db, str(pm_id), edited(text), dry_run=True)
    assert not isinstance(dry, UserError)
    assert comparable(await catalog_of(db, pm_id)) == comparable(before)

    response = await gql(UPDATE, {"id": str(pm_id), "d": edited(text)})
    result = ok(response, "updatePricingModel")
    assert result["__typename"] == "PricingModelUpdated", result
    changes = result["changes"]
    assert changes == list(dry.changes)
    assert changes == [
        'pricing model: name "Credit-Limited Plans" -> "Credit-Limited Plans 2"',
        'price "render_job_overage": unitPrice 12 -> 15: a new price replaces it; the old one'
        f' is archived as "render_job_overage@{old_price.id}" and keeps the usage recorded at it',
        'usage meter "exports": added with 1 price(s)',
        'feature "agency_render_jobs": archived',
        'product "agency": archived with its price(s)',
        'product "studio": updated',
    ]
    assert result["pricingModel"]["name"] == "Credit-Limited Plans 2"
    assert {m["slug"]: m["defaultPrice"] for m in result["pricingModel"]["usageMeters"]} == {
        "render_jobs": {"slug": "render_job_overage", "unitPrice": 15},
        "exports": {"slug": "export_std", "unitPrice": 3},
    }

    after = await catalog_of(db, pm_id)
    # The recorded events keep their price and what they were charged at.
    assert [r["price_id"] for r in await db.fetch("SELECT price_id FROM usage_events")] == [
        old_price.id
    ] * 3
    assert await db.fetch(
        "SELECT price_id, used, covered, uncovered FROM usage_totals ORDER BY price_id"
    ) == (totals_before)
    kept = after.price_by_id[old_price.id]
    assert (kept.slug, kept.unit_price, kept.active, kept.is_default, kept.archived) == (
        f"render_job_overage@{old_price.id}",
        12,
        False,
        False,
        True,
    )
    new_price = after.price_by_slug["render_job_overage"]
    assert new_price.id != old_price.id
    assert (new_price.unit_price, new_price.is_default, new_price.active) == (15, True, True)
    agency = next(p for p in after.products if p.slug == "agency")
    assert (agency.active, agency.archived, agency.feature_ids) == (False, True, ())
    assert [(p.active, p.archived, p.is_default) for p in after.product_prices(agency.id)] == [
        (False, True, False)
    ]
    assert await reconcile(db) == []

    # New usage is charged at the new price.
    result = await record(
        gql,
        target={"usageMeterSlug": "render_jobs"},
        amount=2,
        subscriptionId=sub_id,
        transactionId="t-after",
    )
    assert result["usageEvent"]["priceId"] == str(new_price.id)
    assert await reconcile(db) == []

    # The export is the edited definition: applying it again changes nothing.
    again = await update_pricing_model(db, str(pm_id), export_definition(after))
    assert not isinstance(again, UserError)
    assert again.changes == ()
    assert yaml.safe_load(result_definition := export_definition(after))["name"] == (
        "Credit-Limited Plans 2"
    )
    assert "agency" not in result_definition


async def test_update_refusals_write_nothing(db: Database) -> None:
    text = text_of("credit_limited_plans.yaml")
    pm_id = await set_up(db, text)
    before = comparable(await catalog_of(db, pm_id))
    data = yaml.safe_load(text)
    data["usageMeters"][0]["usageMeter"]["aggregationType"] = "count_distinct_properties"
    toggle = next(f for f in data["features"] if f["slug"] == "queue_priority")
    toggle.update(
        type="usage_credit_grant", usageMeterSlug="render_jobs", amount=1, renewalFrequency="once"
    )
    result = await update_pricing_model(db, str(pm_id), yaml.safe_dump(data))
    assert isinstance(result, UserError)
    assert result.code is ErrorCode.INVALID_INPUT
    assert result.extra["problems"] == [
        'usageMeters["render_jobs"].aggregationType: cannot change from "sum" to'
        ' "count_distinct_properties"',
        'features["queue_priority"].type: cannot change from "toggle" to "usage_credit_grant";'
        " give the feature a new slug",
    ]
    # Flowglad: "Usage meters cannot be removed".
    data = yaml.safe_load(text)
    data["usageMeters"] = []
    grants = {f["slug"] for f in data["features"] if f["type"] == "usage_credit_grant"}
    data["features"] = [f for f in data["features"] if f["slug"] not in grants]
    for entry in data["products"]:
        entry["features"] = [f for f in entry["features"] if f not in grants]
    result = await update_pricing_model(db, str(pm_id), yaml.safe_dump(data))
    assert isinstance(result, UserError)
    assert result.extra["problems"] == [
        'usageMeters: usage meter "render_jobs" cannot be removed (usage refers to it)'
    ]
    # A price slug may not move to another owner.
    data = yaml.safe_load(text)
    data["products"][1]["price"]["slug"] = "agency_monthly"
    data["products"][2]["price"]["slug"] = "studio_monthly"
    result = await update_pricing_model(db, str(pm_id), yaml.safe_dump(data))
    assert isinstance(result, UserError)
    assert result.extra["problems"] == [
        'price "agency_monthly": cannot move from product "agency" to product "studio";'
        " give the price a new slug",
        'price "studio_monthly": cannot move from product "studio" to product "agency";'
        " give the price a new slug",
    ]
    assert comparable(await catalog_of(db, pm_id)) == before
    missing = await update_pricing_model(db, str(uuid.uuid4()), text)
    assert isinstance(missing, UserError)
    assert missing.code is ErrorCode.NOT_FOUND
    assert comparable(await catalog_of(db, pm_id)) == before


async def test_update_needs_a_secret_key(db: Database, gql: GraphQLClient) -> None:
    text = text_of("metered_tokens.yaml")
    pm_id = await set_up(db, text)
    await customer_on_plan(gql, "user-1", "builder_monthly")
    token = await session_token(gql, "user-1")
    response = await gql(UPDATE, {"id": str(pm_id), "d": text.replace("Hobby", "H")}, token=token)
    assert response.status == 403
    assert (await catalog_of(db, pm_id)).product_by_id  # still there
    names = [p.name for p in (await catalog_of(db, pm_id)).products]
    assert names == ["Hobby", "Builder"]


async def test_apply_command_dry_run_and_apply(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    text = text_of("tracked_messages.yaml")
    pm_id = await set_up(db, text)
    before = comparable(await catalog_of(db, pm_id))
    path = tmp_path / "edited.yaml"
    path.write_text(text.replace("name: Tracked Messages", "name: Tracked Messages 2"))
    dry = await run_cli(settings, "pricing", "apply", str(path), "--model", str(pm_id), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout == 'pricing model: name "Tracked Messages" -> "Tracked Messages 2"\n'
    assert comparable(await catalog_of(db, pm_id)) == before
    done = await run_cli(settings, "pricing", "apply", str(path), "--model", str(pm_id))
    assert done.returncode == 0, done.stderr
    assert done.stdout == dry.stdout
    assert (await catalog_of(db, pm_id)).name == "Tracked Messages 2"


async def test_update_notifies_every_process_and_a_dry_run_does_not(db: Database) -> None:
    text = text_of("metered_tokens.yaml")
    pm_id = await set_up(db, text)
    received: asyncio.Queue[str] = asyncio.Queue()

    def on_notify(_conn: object, _pid: int, _channel: str, payload: str) -> None:
        received.put_nowait(payload)

    conn = await db.pool.acquire()
    try:
        await conn.add_listener(NOTIFY_CHANNEL, on_notify)
        renamed = text.replace("name: Metered Tokens", "name: Metered Tokens 2")
        dry = await update_pricing_model(db, str(pm_id), renamed, dry_run=True)
        assert not isinstance(dry, UserError)
        assert dry.changes == ('pricing model: name "Metered Tokens" -> "Metered Tokens 2"',)
        unchanged = await update_pricing_model(db, str(pm_id), text)
        assert not isinstance(unchanged, UserError)
        assert unchanged.changes == ()
        done = await update_pricing_model(db, str(pm_id), renamed)
        assert not isinstance(done, UserError)
        assert done.changes == dry.changes
        assert await asyncio.wait_for(received.get(), timeout=5) == str(pm_id)
        assert received.empty()  # neither the dry run nor the no-op notified
    finally:
        await conn.remove_listener(NOTIFY_CHANNEL, on_notify)
        await db.pool.release(conn)


async def test_inactive_products_and_archived_prices_cannot_be_subscribed(
    db: Database, gql: GraphQLClient
) -> None:
    data = yaml.safe_load(text_of("metered_tokens.yaml"))
    data["isDefault"] = True
    data["products"][1]["product"]["active"] = False
    pm_id = await set_up(db, yaml.safe_dump(data))
    await customer_on_plan(gql, "user-1", "hobby_monthly")
    response = await gql(
        """mutation { createSubscription(input: {customerExternalId: "user-1",
             priceSlug: "builder_monthly"}) { __typename ... on UserError { code message } } }"""
    )
    assert ok(response, "createSubscription") == {
        "__typename": "InvalidInput",
        "code": "INVALID_INPUT",
        "message": "price 'builder_monthly' belongs to an inactive product",
    }
    assert await db.fetchval("SELECT count(*) FROM subscriptions") == 1
    # Dropped from the definition: archived with its price.
    del data["products"][1]
    data["features"] = [f for f in data["features"] if f["slug"] == "hobby_tokens"]
    result = await update_pricing_model(db, str(pm_id), yaml.safe_dump(data))
    assert not isinstance(result, UserError)
    assert result.changes == (
        'feature "builder_tokens": archived',
        'feature "email_support": archived',
        'product "builder_monthly": archived with its price(s)',
    )
    price = (await catalog_of(db, pm_id)).price_by_slug["builder_monthly"]
    assert (price.active, price.archived) == (False, True)
    assert await db.fetchval("SELECT count(*) FROM subscriptions") == 1


async def test_update_of_a_missing_model_is_not_found(db: Database, gql: GraphQLClient) -> None:
    missing = str(uuid.uuid4())
    response = await gql(
        "mutation($id: ID!, $d: String!) { updatePricingModel(input: {pricingModelId: $id,"
        " definition: $d}) { __typename ... on UserError { code message field } } }",
        {"id": missing, "d": text_of("metered_tokens.yaml")},
    )
    assert ok(response, "updatePricingModel") == {
        "__typename": "NotFound",
        "code": "NOT_FOUND",
        "message": f"no pricing model {missing}",
        "field": ["input", "pricingModelId"],
    }
    assert await db.fetchval("SELECT count(*) FROM pricing_models") == 0
