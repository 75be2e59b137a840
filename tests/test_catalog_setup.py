"""Setting up pricing models: validation of the setup format, and what is written."""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from typing import Any

import pytest

from gateway.billing import pricing_setup as catalog_setup
from gateway.billing.catalog import NOTIFY_CHANNEL, load_catalogs
from gateway.billing.pricing_plan import (
    FeaturePlan,
    MeterPlan,
    Plan,
    ProductPlan,
    ProductPricePlan,
    UsagePricePlan,
)
from gateway.billing.pricing_setup import parse_plan as parse_definition
from gateway.billing.pricing_setup import setup_pricing_model
from gateway.errors import ErrorCode, UserError
from gateway.storage.db import Database, start_counting

# --- Helpers ---------------------------------------------------------------------------------

MINIMAL: dict[str, Any] = {
    "name": "Minimal",
    "usageMeters": [
        {
            "usageMeter": {"slug": "api_calls", "name": "API calls"},
            "prices": [{"slug": "api_calls_standard", "unitPrice": 2, "usageEventsPerUnit": 100}],
        }
    ],
    "features": [{"type": "toggle", "slug": "support", "name": "Support"}],
    "products": [
        {
            "product": {"slug": "pro", "name": "Pro"},
            "price": {
                "type": "subscription",
                "slug": "pro_monthly",
                "unitPrice": 2000,
                "intervalUnit": "month",
            },
            "features": ["support"],
        }
    ],
}


def minimal() -> dict[str, Any]:
    return copy.deepcopy(MINIMAL)


def problems_of(data: Any) -> list[str]:
    definition, problems = parse_definition(json.dumps(data))
    assert definition is None
    return problems


def problems_of_text(text: str) -> list[str]:
    definition, problems = parse_definition(text)
    assert definition is None
    return problems


REALISTIC = """
name: AI App
usageMeters:
  - usageMeter:
      slug: api_calls
      name: API calls
    prices:
      - slug: api_calls_standard
        name: Standard
        unitPrice: 2
        currency: USD
        usageEventsPerUnit: 100
        isDefault: true
      - slug: api_calls_legacy
        unitPrice: 3
        usageEventsPerUnit: 100
        active: false
  - usageMeter:
      slug: unique_users
      name: Unique users
      aggregationType: count_distinct_properties
    prices:
      - slug: unique_users_eur
        unitPrice: 5
        currency: EUR
features:
  - type: usage_credit_grant
    slug: monthly_api_credits
    name: 1,000 API calls a month
    usageMeterSlug: api_calls
    amount: 1000
    renewalFrequency: every_billing_period
  - type: usage_credit_grant
    slug: welcome_api_credits
    name: 100 API calls to start
    description: Once, when the subscription starts
    usageMeterSlug: api_calls
    amount: 100
    renewalFrequency: once
  - type: toggle
    slug: priority_support
    name: Priority support
products:
  - product:
      slug: free
      name: Free
      default: true
    price:
      type: subscription
      slug: free_monthly
      unitPrice: 0
      intervalUnit: month
    features: [welcome_api_credits]
  - product:
      slug: pro
      name: Pro
      description: For teams
    price:
      type: subscription
      slug: pro_monthly
      name: Pro monthly
      unitPrice: 2000
      currency: USD
      intervalUnit: month
      intervalCount: 1
      isDefault: true
    features: [monthly_api_credits, welcome_api_credits, priority_support]
"""


# --- Parsing: valid definitions ------------------------------------------------------------


def test_realistic_definition_parses_with_defaults_applied() -> None:
    definition, problems = parse_definition(REALISTIC)
    assert problems == []
    assert definition == Plan(
        name="AI App",
        is_default=False,
        meters=(
            MeterPlan(
                slug="api_calls",
                name="API calls",
                aggregation_type="sum",
                prices=(
                    UsagePricePlan(
                        slug="api_calls_standard",
                        name="Standard",
                        unit_price=2,
                        currency="USD",
                        usage_events_per_unit=100,
                        is_default=True,
                        active=True,
                        interval_unit=None,
                        interval_count=None,
                    ),
                    UsagePricePlan(
                        slug="api_calls_legacy",
                        name=None,
                        unit_price=3,
                        currency="USD",
                        usage_events_per_unit=100,
                        is_default=False,
                        active=False,
                        interval_unit=None,
                        interval_count=None,
                    ),
                ),
            ),
            MeterPlan(
                slug="unique_users",
                name="Unique users",
                aggregation_type="count_distinct_properties",
                prices=(
                    UsagePricePlan(
                        slug="unique_users_eur",
                        name=None,
                        unit_price=5,
                        currency="EUR",
                        usage_events_per_unit=1,
                        is_default=False,
                        active=True,
                        interval_unit=None,
                        interval_count=None,
                    ),
                ),
            ),
        ),
        features=(
            FeaturePlan(
                type="usage_credit_grant",
                slug="monthly_api_credits",
                name="1,000 API calls a month",
                description=None,
                usage_meter_slug="api_calls",
                amount=1000,
                renewal_frequency="every_billing_period",
                active=True,
            ),
            FeaturePlan(
                type="usage_credit_grant",
                slug="welcome_api_credits",
                name="100 API calls to start",
                description="Once, when the subscription starts",
                usage_meter_slug="api_calls",
                amount=100,
                renewal_frequency="once",
                active=True,
            ),
            FeaturePlan(
                type="toggle",
                slug="priority_support",
                name="Priority support",
                description=None,
                usage_meter_slug=None,
                amount=None,
                renewal_frequency=None,
                active=True,
            ),
        ),
        products=(
            ProductPlan(
                slug="free",
                name="Free",
                description=None,
                is_default=True,
                price=ProductPricePlan(
                    type="subscription",
                    slug="free_monthly",
                    name=None,
                    unit_price=0,
                    currency="USD",
                    interval_unit="month",
                    interval_count=1,
                ),
                feature_slugs=("welcome_api_credits",),
                active=True,
            ),
            ProductPlan(
                slug="pro",
                name="Pro",
                description="For teams",
                is_default=False,
                price=ProductPricePlan(
                    type="subscription",
                    slug="pro_monthly",
                    name="Pro monthly",
                    unit_price=2000,
                    currency="USD",
                    interval_unit="month",
                    interval_count=1,
                ),
                feature_slugs=("monthly_api_credits", "welcome_api_credits", "priority_support"),
                active=True,
            ),
        ),
    )
    assert definition.meters[0].no_charge_slug == "api_calls_no_charge"
    assert definition.meters[1].no_charge_currency == "EUR"


def test_json_is_accepted_including_tab_indentation() -> None:
    text = json.dumps(minimal(), indent="\t")
    definition, problems = parse_definition(text)
    assert problems == []
    assert definition is not None
    assert [m.slug for m in definition.meters] == ["api_calls"]
    yaml_definition, _ = parse_definition(json.dumps(minimal()))
    assert yaml_definition == definition


def test_single_payment_price_and_meter_price_with_type_usage() -> None:
    data = minimal()
    data["usageMeters"][0]["prices"][0]["type"] = "usage"
    data["products"][0]["price"] = {"type": "single_payment", "slug": "pack", "unitPrice": 500}
    definition, problems = parse_definition(json.dumps(data))
    assert problems == []
    assert definition is not None
    assert definition.products[0].price == ProductPricePlan(
        type="single_payment",
        slug="pack",
        name=None,
        unit_price=500,
        currency="USD",
        interval_unit=None,
        interval_count=None,
    )


def test_nulls_count_as_absent() -> None:
    definition, problems = parse_definition(
        "name: N\nusageMeters:\nfeatures:\nproducts:\n"
        "  - product: {slug: p, name: P, description:}\n"
        "    price: {type: single_payment, slug: p1, unitPrice: 1, currency: null}\n"
    )
    assert problems == []
    assert definition is not None
    assert definition.meters == ()
    assert definition.products[0].price.currency == "USD"


# --- Parsing: problems ---------------------------------------------------------------------


def test_duplicate_meter_slug() -> None:
    data = minimal()
    data["usageMeters"].append({"usageMeter": {"slug": "api_calls", "name": "Again"}})
    assert problems_of(data) == ['usageMeters[1].usageMeter.slug: duplicate slug "api_calls"']


def test_duplicate_product_slug() -> None:
    data = minimal()
    second = copy.deepcopy(data["products"][0])
    second["price"]["slug"] = "pro_yearly"
    data["products"].append(second)
    assert problems_of(data) == ['products[1].product.slug: duplicate slug "pro"']


def test_duplicate_price_slug_across_meter_and_product_prices() -> None:
    data = minimal()
    data["products"][0]["price"]["slug"] = "api_calls_standard"
    data["usageMeters"][0]["prices"].append({"slug": "api_calls_standard", "unitPrice": 1})
    assert problems_of(data) == [
        'usageMeters[0].prices[1].slug: duplicate slug "api_calls_standard"',
        'products[0].price.slug: duplicate slug "api_calls_standard"',
    ]


def test_duplicate_feature_slug_and_feature_listed_twice() -> None:
    data = minimal()
    data["features"].append({"type": "toggle", "slug": "support", "name": "Support 2"})
    data["products"][0]["features"] = ["support", "support"]
    assert problems_of(data) == [
        'features[1].slug: duplicate slug "support"',
        'products[0].features[1]: duplicate feature "support"',
    ]


def test_slug_ending_in_no_charge_is_reserved() -> None:
    reserved = (
        ' must not end in "_no_charge": the suffix is reserved for the no-charge price the'
        " gateway creates for every usage meter"
    )
    data = minimal()
    data["usageMeters"].append({"usageMeter": {"slug": "tokens", "name": "Tokens"}})
    # The no-charge price of this meter, of another meter, and any other _no_charge slug.
    data["usageMeters"][0]["prices"].append({"slug": "api_calls_no_charge", "unitPrice": 0})
    data["usageMeters"][0]["prices"].append({"slug": "tokens_no_charge", "unitPrice": 0})
    data["products"][0]["price"]["slug"] = "pro_no_charge"
    assert problems_of(data) == [
        'usageMeters[0].prices[1].slug: "api_calls_no_charge"' + reserved,
        'usageMeters[0].prices[2].slug: "tokens_no_charge"' + reserved,
        'products[0].price.slug: "pro_no_charge"' + reserved,
    ]


def test_two_default_prices_on_one_meter() -> None:
    data = minimal()
    prices = data["usageMeters"][0]["prices"]
    prices[0]["isDefault"] = True
    prices.append({"slug": "api_calls_cheap", "unitPrice": 1, "isDefault": True})
    prices.append({"slug": "api_calls_cheaper", "unitPrice": 0, "isDefault": True})
    assert problems_of(data) == [
        "usageMeters[0].prices[1].isDefault: a usage meter has at most one default price;"
        " usageMeters[0].prices[0] is already the default",
        "usageMeters[0].prices[2].isDefault: a usage meter has at most one default price;"
        " usageMeters[0].prices[0] is already the default",
    ]


def test_default_price_must_be_active() -> None:
    data = minimal()
    data["usageMeters"][0]["prices"][0].update(isDefault=True, active=False)
    # Flowglad: "An inactive price cannot be set as default. Set active=true or isDefault=false."
    assert problems_of(data) == [
        "usageMeters[0].prices[0].isDefault: an inactive price cannot be the default;"
        " set active: true or isDefault: false"
    ]


def test_usage_price_under_a_product() -> None:
    data = minimal()
    data["products"][0]["price"] = {
        "type": "usage",
        "slug": "pro_usage",
        "unitPrice": 1,
        "usageEventsPerUnit": 10,
    }
    assert problems_of(data) == [
        "products[0].price.type: usage prices belong to a usage meter, not a product"
    ]


def test_meter_price_of_another_type() -> None:
    data = minimal()
    data["usageMeters"][0]["prices"][0]["type"] = "subscription"
    assert problems_of(data) == [
        'usageMeters[0].prices[0].type: must be "usage": the prices of a usage meter are usage'
        ' prices, got "subscription"'
    ]


def test_unknown_feature_in_a_product_and_unknown_meter_in_a_grant() -> None:
    data = minimal()
    data["products"][0]["features"] = ["support", "priority_support"]
    data["features"].append(
        {
            "type": "usage_credit_grant",
            "slug": "credits",
            "name": "Credits",
            "usageMeterSlug": "tokens",
            "amount": 10,
            "renewalFrequency": "once",
        }
    )
    assert problems_of(data) == [
        'features[1].usageMeterSlug: unknown usage meter "tokens"',
        'products[0].features[1]: unknown feature "priority_support"',
    ]


def test_features_are_resolved_whatever_the_key_order() -> None:
    text = """
products:
  - product: {slug: pro, name: Pro}
    price: {type: single_payment, slug: pro_once, unitPrice: 100}
    features: [credits]
features:
  - {type: usage_credit_grant, slug: credits, name: C, usageMeterSlug: m, amount: 5,
     renewalFrequency: once}
usageMeters:
  - usageMeter: {slug: m, name: M}
name: Order
"""
    definition, problems = parse_definition(text)
    assert problems == []
    assert definition is not None
    assert definition.products[0].feature_slugs == ("credits",)


def test_negative_unit_price() -> None:
    data = minimal()
    data["products"][0]["price"]["unitPrice"] = -1
    data["usageMeters"][0]["prices"][0]["unitPrice"] = -5
    assert problems_of(data) == [
        "usageMeters[0].prices[0].unitPrice: must be >= 0",
        "products[0].price.unitPrice: must be >= 0",
    ]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('"abc"', 'must be an integer, got "abc"'),
        ("1.5", "must be an integer, got number 1.5"),
        ("2.0", "must be an integer, got number 2.0"),
        ("true", "must be an integer, got boolean true"),
        ("[1]", "must be an integer, got a list"),
        ("9223372036854775808", "must be <= 9223372036854775807"),
    ],
)
def test_unit_price_must_be_an_integer(value: str, message: str) -> None:
    text = json.dumps(minimal()).replace('"unitPrice": 2000', f'"unitPrice": {value}')
    assert problems_of_text(text) == [f"products[0].price.unitPrice: {message}"]


def test_wrong_types_and_ranges_elsewhere() -> None:
    data = minimal()
    data["isDefault"] = "yes"
    data["usageMeters"][0]["prices"][0]["usageEventsPerUnit"] = 0
    data["usageMeters"][0]["prices"][0]["currency"] = "usd"
    data["features"][0]["name"] = 5
    data["products"][0]["price"]["intervalCount"] = 2**31
    data["products"][0]["price"]["intervalUnit"] = "fortnight"
    data["products"][0]["product"]["default"] = 1
    assert problems_of(data) == [
        'isDefault: must be a boolean, got "yes"',
        'usageMeters[0].prices[0].currency: must be upper-case: "USD", not "usd"',
        "usageMeters[0].prices[0].usageEventsPerUnit: must be > 0",
        "features[0].name: must be a string, got integer 5",
        "products[0].product.default: must be a boolean, got integer 1",
        'products[0].price.intervalUnit: must be one of "day", "week", "month", "year", got'
        ' "fortnight"',
        "products[0].price.intervalCount: must be <= 2147483647",
    ]


def test_slug_format() -> None:
    # Flowglad's safeZodSanitizedString: slugs and names are trimmed, 1 to 255 characters.
    data = minimal()
    data["usageMeters"][0]["usageMeter"]["slug"] = "API calls"
    data["products"][0]["product"]["slug"] = "p" * 256
    data["features"][0]["slug"] = "  support  "
    assert problems_of(data) == [
        "usageMeters[0].usageMeter.slug: must start with a lower-case letter or digit and"
        ' contain only lower-case letters, digits, "_" and "-", got "API calls"',
        "products[0].product.slug: must be at most 255 characters",
    ]


def test_feature_shapes() -> None:
    data = minimal()
    data["features"] = [
        {"type": "toggle", "slug": "t", "name": "T", "amount": 5},
        {"type": "usage_credit_grant", "slug": "g", "name": "G"},
        {
            "type": "usage_credit_grant",
            "slug": "h",
            "name": "H",
            "usageMeterSlug": "api_calls",
            "amount": 0,
            "renewalFrequency": "monthly",
        },
        {"type": "boolean", "slug": "b", "name": "B"},
    ]
    data["products"][0]["features"] = []
    assert problems_of(data) == [
        "features[0].amount: unknown field",
        "features[1].usageMeterSlug: is required",
        "features[1].amount: is required",
        "features[1].renewalFrequency: is required",
        "features[2].amount: must be > 0",
        'features[2].renewalFrequency: must be one of "once", "every_billing_period", got'
        ' "monthly"',
        'features[3].type: must be one of "toggle", "usage_credit_grant", "resource", got'
        ' "boolean"',
    ]


def test_product_price_rules() -> None:
    data = minimal()
    second = {
        "product": {"slug": "pack", "name": "Pack", "default": True},
        "price": {
            "type": "single_payment",
            "slug": "pack_once",
            "unitPrice": 100,
            "intervalUnit": "month",
        },
    }
    third = {
        "product": {"slug": "team", "name": "Team", "default": True},
        "price": {"slug": "team_monthly", "unitPrice": 100},
    }
    data["products"] += [second, third]
    assert problems_of(data) == [
        'products[1].price.intervalUnit: must be null or absent, got "month"',
        "products[2].price.type: is required",
    ]
    # Flowglad: "Price must have active=true and isDefault=true"; at most one default
    # product, and "Default products must have zero price".
    second["price"] = {
        "type": "single_payment",
        "slug": "pack_once",
        "unitPrice": 100,
        "isDefault": False,
        "active": False,
    }
    third["price"] = {"type": "single_payment", "slug": "team_once", "unitPrice": 0}
    assert problems_of(data) == [
        "products[1].price: price must have active=true and isDefault=true",
        "products[1].price.unitPrice: default products must have zero price",
        "products[2].product.default: at most one product may be the default;"
        " products[1].product is already the default",
    ]


def test_required_fields() -> None:
    # Without its type a feature's other fields cannot be checked (the type decides them).
    assert problems_of({"usageMeters": [{"prices": []}], "features": [{}], "products": [{}]}) == [
        "name: is required",
        "usageMeters[0].usageMeter: is required",
        "features[0].type: is required",
        "products[0].product: is required",
        "products[0].price: is required",
    ]


def test_products_may_be_empty() -> None:
    # Flowglad adds a free default product when none is marked default, so no products at
    # all (or products: []) is a valid definition.
    for data in ({"name": "N"}, {"name": "N", "products": []}):
        definition, problems = parse_definition(json.dumps(data))
        assert problems == []
        assert definition is not None
        assert [
            (p.slug, p.name, p.is_default, p.price.slug, p.price.unit_price)
            for p in definition.products
        ] == [("free", "Free Plan", True, "free", 0)]
    assert problems_of({"name": " ", "products": {"product": {}}}) == [
        "name: must not be empty",
        "products: must be a list, got a mapping",
    ]


def test_malformed_yaml_names_line_and_column() -> None:
    text = "name: AI App\nproducts:\n  - product: {slug: pro\n    price: 3\n"
    problems = problems_of_text(text)
    assert len(problems) == 1
    assert problems[0].startswith("definition: malformed YAML at line 4, column 10: ")


def test_malformed_yaml_mapping_values() -> None:
    assert problems_of_text("name: x\n  bad: [\n") == [
        "definition: malformed YAML at line 2, column 6: mapping values are not allowed here"
    ]


def test_malformed_json_is_reported_by_position() -> None:
    problems = problems_of_text('{"name": "x",\n "products": [}')
    assert len(problems) == 1
    assert problems[0].startswith("definition: malformed YAML at line 2, column ")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("name: 2024-13-45", "definition: malformed YAML: month must be in 1..12"),
        ("name: 1" + "0" * 5000, "definition: malformed YAML: a number has too many digits"),
        (
            '{"name": 1' + "0" * 5000 + "}",
            "definition: malformed YAML: a number has too many digits",
        ),
        ("[" * 5000, "definition: malformed YAML: nested too deeply"),
        (
            "name: !!python/object/apply:os.system [ls]",
            "definition: malformed YAML at line 1, column 7: could not determine a constructor for"
            " the tag 'tag:yaml.org,2002:python/object/apply:os.system'",
        ),
    ],
)
def test_unreadable_values(text: str, problem: str) -> None:
    assert problems_of_text(text) == [problem]


def test_duplicate_keys_are_malformed() -> None:
    assert problems_of_text("name: a\nproducts: []\nname: b\n") == [
        'definition: malformed YAML at line 3, column 1: found duplicate key "name"'
    ]
    assert problems_of_text('{"name": "a",\n "name": "b"}') == [
        'definition: malformed YAML at line 2, column 2: found duplicate key "name"'
    ]


def test_unknown_fields_at_every_level() -> None:
    data = minimal()
    data["description"] = "top"
    data["usageMeters"][0]["usageMeter"]["unit"] = "call"
    data["usageMeters"][0]["prices"][0]["unitprice"] = 3
    data["features"][0]["active"] = True  # a Flowglad field: accepted
    data["products"][0]["prices"] = []
    data["products"][0]["product"]["imageURL"] = "x"  # a Flowglad field: accepted, warned
    data["products"][0]["price"]["unitprice"] = 2000
    assert problems_of(data) == [
        "description: unknown field",
        "usageMeters[0].usageMeter.unit: unknown field",
        "usageMeters[0].prices[0].unitprice: unknown field",
        "products[0].price.unitprice: unknown field",
        "products[0].prices: unknown field",
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "- name: x\n",
            "definition: the top level must be a mapping (name, usageMeters,"
            " features, products), got a list",
        ),
        (
            "just words",
            "definition: the top level must be a mapping (name, usageMeters,"
            ' features, products), got "just words"',
        ),
        (
            "42",
            "definition: the top level must be a mapping (name, usageMeters, features,"
            " products), got integer 42",
        ),
        ("", "definition: is empty"),
        ("# only a comment\n", "definition: is empty"),
    ],
)
def test_top_level_must_be_a_mapping(text: str, problem: str) -> None:
    assert problems_of_text(text) == [problem]


def test_entries_must_be_mappings() -> None:
    data = minimal()
    data["usageMeters"].append("tokens")
    data["usageMeters"][0]["prices"].append(7)
    data["features"].append(None)
    data["products"][0]["price"] = "pro_monthly"
    assert problems_of(data) == [
        "usageMeters[0].prices[1]: must be a mapping, got integer 7",
        'usageMeters[1]: must be a mapping, got "tokens"',
        "features[1]: must be a mapping, got null",
        'products[0].price: must be a mapping, got "pro_monthly"',
    ]


def test_several_problems_are_all_listed_in_order() -> None:
    text = """
name: ""
colour: blue
usageMeters:
  - usageMeter: {slug: api_calls, name: API calls}
    prices:
      - {slug: api_calls_no_charge, unitPrice: 1}
      - {slug: standard, unitPrice: "2", isDefault: true}
      - {slug: premium, unitPrice: 5, isDefault: true}
  - usageMeter: {slug: api_calls, name: Duplicate, aggregationType: max}
features:
  - {type: usage_credit_grant, slug: credits, name: Credits, usageMeterSlug: tokens,
     amount: 1.5, renewalFrequency: once}
products:
  - product: {slug: pro, name: Pro}
    price: {type: usage, slug: standard, unitPrice: -3}
    features: [credits, support]
"""
    problems = problems_of_text(text)
    # Field problems of every entry, then the rules spanning entries, checked over the
    # entries that are well-formed: every entry here has a field problem, so the reserved
    # slug, the second default price and the duplicate meter slug are reported once those
    # entries are fixed.
    assert problems == [
        "name: must not be empty",
        "colour: unknown field",
        'usageMeters[0].prices[1].unitPrice: must be an integer, got "2"',
        'usageMeters[1].usageMeter.aggregationType: must be one of "sum",'
        ' "count_distinct_properties", got "max"',
        "features[0].amount: must be an integer, got number 1.5",
        "products[0].price.type: usage prices belong to a usage meter, not a product",
    ]


# --- Writing -------------------------------------------------------------------------------


async def set_up(db: Database, text: str) -> uuid.UUID | UserError:
    result = await setup_pricing_model(db, text)
    return result if isinstance(result, UserError) else result.pricing_model_id


async def _count_rows(db: Database) -> dict[str, int]:
    tables = (
        "pricing_models",
        "usage_meters",
        "prices",
        "features",
        "products",
        "product_features",
    )
    return {t: await db.fetchval(f"SELECT count(*) FROM {t}") for t in tables}


async def test_realistic_model_writes_every_row(db: Database) -> None:
    pm_id = await set_up(db, REALISTIC)
    assert isinstance(pm_id, uuid.UUID)
    assert pm_id.version == 7

    models = await db.fetch("SELECT id, name, is_default FROM pricing_models")
    assert [tuple(r) for r in models] == [(pm_id, "AI App", True)]

    meters = await db.fetch(
        "SELECT id, pricing_model_id, slug, name, aggregation_type FROM usage_meters ORDER BY slug"
    )
    assert [tuple(r)[1:] for r in meters] == [
        (pm_id, "api_calls", "API calls", "sum"),
        (pm_id, "unique_users", "Unique users", "count_distinct_properties"),
    ]
    meter_id = {r["slug"]: r["id"] for r in meters}
    assert all(i.version == 7 for i in meter_id.values())

    products = await db.fetch(
        "SELECT id, pricing_model_id, slug, name, description, is_default FROM products"
        " ORDER BY slug"
    )
    assert [tuple(r)[1:] for r in products] == [
        (pm_id, "free", "Free", None, True),
        (pm_id, "pro", "Pro", "For teams", False),
    ]
    product_id = {r["slug"]: r["id"] for r in products}

    prices = await db.fetch(
        "SELECT pricing_model_id, product_id, usage_meter_id, slug, name, type, unit_price,"
        " currency, interval_unit, interval_count, usage_events_per_unit, is_default,"
        " is_no_charge, active FROM prices ORDER BY slug"
    )
    api, users = meter_id["api_calls"], meter_id["unique_users"]
    assert [tuple(r) for r in prices] == [
        (
            pm_id,
            None,
            api,
            "api_calls_legacy",
            None,
            "usage",
            3,
            "USD",
            None,
            None,
            100,
            False,
            False,
            False,
        ),
        (
            pm_id,
            None,
            api,
            "api_calls_no_charge",
            "API calls - No Charge",  # Flowglad: the no-charge price is "<meter name> - No Charge"
            "usage",
            0,
            "USD",
            None,
            None,
            1,
            False,
            True,
            True,
        ),
        (
            pm_id,
            None,
            api,
            "api_calls_standard",
            "Standard",
            "usage",
            2,
            "USD",
            None,
            None,
            100,
            True,
            False,
            True,
        ),
        (
            pm_id,
            product_id["free"],
            None,
            "free_monthly",
            None,
            "subscription",
            0,
            "USD",
            "month",
            1,
            None,
            True,
            False,
            True,
        ),
        (
            pm_id,
            product_id["pro"],
            None,
            "pro_monthly",
            "Pro monthly",
            "subscription",
            2000,
            "USD",
            "month",
            1,
            None,
            True,
            False,
            True,
        ),
        (
            pm_id,
            None,
            users,
            "unique_users_eur",
            None,
            "usage",
            5,
            "EUR",
            None,
            None,
            1,
            False,
            False,
            True,
        ),
        (
            pm_id,
            None,
            users,
            "unique_users_no_charge",
            "Unique users - No Charge",
            "usage",
            0,
            "EUR",
            None,
            None,
            1,
            True,
            True,
            True,
        ),
    ]

    features = await db.fetch(
        "SELECT id, pricing_model_id, slug, name, description, type, amount, usage_meter_id,"
        " renewal_frequency FROM features ORDER BY slug"
    )
    assert [tuple(r)[1:] for r in features] == [
        (
            pm_id,
            "monthly_api_credits",
            "1,000 API calls a month",
            None,
            "usage_credit_grant",
            1000,
            api,
            "every_billing_period",
        ),
        (pm_id, "priority_support", "Priority support", None, "toggle", None, None, None),
        (
            pm_id,
            "welcome_api_credits",
            "100 API calls to start",
            "Once, when the subscription starts",
            "usage_credit_grant",
            100,
            api,
            "once",
        ),
    ]
    feature_slug = {r["id"]: r["slug"] for r in features}
    product_slug = {v: k for k, v in product_id.items()}

    links = await db.fetch("SELECT product_id, feature_id FROM product_features")
    pairs = sorted((product_slug[r["product_id"]], feature_slug[r["feature_id"]]) for r in links)
    assert pairs == [
        ("free", "welcome_api_credits"),
        ("pro", "monthly_api_credits"),
        ("pro", "priority_support"),
        ("pro", "welcome_api_credits"),
    ]

    # What the rest of the gateway reads.
    catalog = (await load_catalogs(db, [pm_id]))[pm_id]
    assert catalog.is_default
    default_usage = {
        catalog.meter_by_id[p.usage_meter_id].slug: p.slug
        for p in catalog.prices
        if p.is_default and p.usage_meter_id is not None
    }
    assert default_usage == {
        "api_calls": "api_calls_standard",
        "unique_users": "unique_users_no_charge",
    }


async def test_writes_are_set_based(db: Database) -> None:
    counter = start_counting()
    assert isinstance(await set_up(db, REALISTIC), uuid.UUID)
    small = counter.count

    data: dict[str, Any] = {
        "name": "Big",
        "isDefault": True,
        "usageMeters": [
            {
                "usageMeter": {"slug": f"m{i}", "name": f"M{i}"},
                "prices": [{"slug": f"m{i}_p{j}", "unitPrice": j} for j in range(5)],
            }
            for i in range(20)
        ],
        "features": [
            {
                "type": "usage_credit_grant",
                "slug": f"f{i}",
                "name": f"F{i}",
                "usageMeterSlug": f"m{i}",
                "amount": 10,
                "renewalFrequency": "once",
            }
            for i in range(20)
        ],
        "products": [
            {
                "product": {"slug": f"p{i}", "name": f"P{i}", "default": i == 0},
                "price": {
                    "type": "single_payment",
                    "slug": f"p{i}_once",
                    "unitPrice": 0 if i == 0 else 100,
                },
                "features": [f"f{k}" for k in range(20)],
            }
            for i in range(20)
        ],
    }
    counter = start_counting()
    assert isinstance(await set_up(db, json.dumps(data)), uuid.UUID)
    # One more statement: clearing the previous default.
    assert counter.count == small + 1
    assert counter.statements[:4] == [
        "BEGIN",
        "SELECT pg_advisory_xact_lock($1)",
        catalog_setup._CLEAR_DEFAULT_SQL,
        catalog_setup._INSERT_PRICING_MODEL_SQL,
    ]
    assert counter.statements[-1] == "COMMIT"
    counts = await _count_rows(db)
    assert counts["prices"] == 7 + 20 * 6 + 20
    assert counts["product_features"] == 4 + 20 * 20


async def test_catalog_change_is_notified(db: Database) -> None:
    received: asyncio.Queue[str] = asyncio.Queue()

    def on_notify(_conn: object, _pid: int, _channel: str, payload: str) -> None:
        received.put_nowait(payload)

    conn = await db.pool.acquire()
    try:
        await conn.add_listener(NOTIFY_CHANNEL, on_notify)
        pm_id = await set_up(db, json.dumps(minimal()))
        assert isinstance(pm_id, uuid.UUID)
        assert await asyncio.wait_for(received.get(), timeout=5) == str(pm_id)
    finally:
        await conn.remove_listener(NOTIFY_CHANNEL, on_notify)
        await db.pool.release(conn)


async def test_bad_definition_writes_nothing(db: Database) -> None:
    data = minimal()
    data["products"][0]["price"]["unitPrice"] = -1
    data["products"][0]["features"] = ["nope"]
    data["features"][0]["usageMeterSlug"] = "api_calls"
    result = await setup_pricing_model(db, json.dumps(data))
    problems = [
        "features[0].usageMeterSlug: unknown field",
        "products[0].price.unitPrice: must be >= 0",
    ]
    assert result == UserError(
        ErrorCode.INVALID_INPUT,
        "the pricing model definition has 2 problem(s): " + "; ".join(problems),
        ["input", "definition"],
        extra={"problems": problems},
    )
    assert await _count_rows(db) == {
        "pricing_models": 0,
        "usage_meters": 0,
        "prices": 0,
        "features": 0,
        "products": 0,
        "product_features": 0,
    }


async def test_malformed_text_is_an_invalid_input(db: Database) -> None:
    result = await set_up(db, "name: [")
    assert isinstance(result, UserError)
    assert result.code is ErrorCode.INVALID_INPUT
    assert result.field == ["input", "definition"]
    assert len(result.extra["problems"]) == 1
    assert result.message.startswith(
        "the pricing model definition has 1 problem(s): definition: malformed YAML at line 1"
    )
    assert (await _count_rows(db))["pricing_models"] == 0


async def test_integrity_error_is_an_invalid_input_and_rolls_back(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should validation miss a conflict, the database's constraint still rejects it whole."""
    valid, _ = parse_definition(json.dumps(minimal()))
    assert valid is not None
    meter = valid.meters[0]
    clashing = Plan(
        name=valid.name,
        is_default=True,
        meters=valid.meters,
        features=valid.features,
        # A product price with the slug of the meter's price: prices_slug_key.
        products=(
            ProductPlan(
                slug="pro",
                name="Pro",
                description=None,
                is_default=False,
                price=ProductPricePlan(
                    type="single_payment",
                    slug=meter.prices[0].slug,
                    name=None,
                    unit_price=1,
                    currency="USD",
                    interval_unit=None,
                    interval_count=None,
                ),
                feature_slugs=(),
                active=True,
            ),
        ),
    )
    first = await set_up(db, json.dumps(minimal()))
    assert isinstance(first, uuid.UUID)
    monkeypatch.setattr(catalog_setup, "parse_plan", lambda text: (clashing, []))
    result = await set_up(db, "ignored")
    assert isinstance(result, UserError)
    assert result.code is ErrorCode.INVALID_INPUT
    assert result.field == ["input", "definition"]
    [problem] = result.extra["problems"]
    assert problem.startswith(
        "definition: conflicts with the database (constraint prices_slug_key): Key"
        " (pricing_model_id, slug)="
    )
    assert problem.endswith(", api_calls_standard) already exists.")
    # Rolled back: the first model is still the only one, and still the default.
    rows = await db.fetch("SELECT id, is_default FROM pricing_models")
    assert [tuple(r) for r in rows] == [(first, True)]
    assert await db.fetchval("SELECT count(*) FROM usage_meters") == 1


async def test_explicit_default_moves_the_default(db: Database) -> None:
    first = await set_up(db, json.dumps(minimal()))
    data = minimal()
    data.update(name="Second", isDefault=True)
    second = await set_up(db, json.dumps(data))
    assert isinstance(first, uuid.UUID)
    assert isinstance(second, uuid.UUID)
    rows = await db.fetch("SELECT id, is_default FROM pricing_models ORDER BY id")
    assert [tuple(r) for r in rows] == [(first, False), (second, True)]


async def test_without_is_default_the_existing_default_stays(db: Database) -> None:
    first = await set_up(db, json.dumps(minimal()))
    data = minimal()
    data.update(name="Second")
    second = await set_up(db, json.dumps(data))
    data.update(name="Third", isDefault=False)
    third = await set_up(db, json.dumps(data))
    rows = await db.fetch("SELECT id, name, is_default FROM pricing_models ORDER BY id")
    assert [tuple(r) for r in rows] == [
        (first, "Minimal", True),
        (second, "Second", False),
        (third, "Third", False),
    ]


async def test_concurrent_setups_leave_exactly_one_default(db: Database) -> None:
    async def one(i: int) -> uuid.UUID | UserError:
        data = minimal()
        data["name"] = f"Model {i}"
        return await set_up(db, json.dumps(data))

    results = await asyncio.gather(*(one(i) for i in range(8)))
    assert all(isinstance(r, uuid.UUID) for r in results)
    assert await db.fetchval("SELECT count(*) FROM pricing_models WHERE is_default") == 1
    assert await db.fetchval("SELECT count(*) FROM pricing_models") == 8
