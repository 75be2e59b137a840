"""Setting up a pricing model from Flowglad's setup format (YAML or JSON).

``parse_definition`` reads the text and validates the whole definition before anything is
written, returning every problem as ``path: problem`` (``products[1].price.unitPrice: must be
>= 0``), in a fixed order: the top level's unknown fields, then ``name``, ``isDefault``,
``usageMeters``, ``features`` and ``products``, each entry's fields in the documented order.
``setup_pricing_model`` writes a valid definition in one transaction with one set-based
statement per table, or nothing at all.

Rules (each violation is one problem):

- The top level is a mapping; unknown fields at any level are problems (they are usually
  typos); ``null`` counts as absent. Duplicate keys in one mapping are malformed YAML/JSON.
- ``name`` fields are non-empty strings; slugs match ``^[a-z0-9][a-z0-9_-]*$`` (at most 64
  characters) and are unique per kind within the definition: meters, features, products,
  and prices, where meter prices and product prices share one namespace.
- No user price slug may end in ``_no_charge``: for every meter the gateway creates the price
  ``{meterSlug}_no_charge`` (usage, unit price 0, one event per unit, active), in the
  currency of the meter's default price, else of its first price, else USD.
- Integers are integers (not floats, not booleans, not strings): ``unitPrice`` >= 0,
  ``usageEventsPerUnit`` (default 1), ``intervalCount`` (default 1) and ``amount`` > 0.
  Currencies are upper-case ISO 4217 codes (default USD); one model may mix currencies.
- A meter has at most one ``isDefault`` price and a default price must be active; when no
  user price is the default, the no-charge price is.
- Prices under ``usageMeters[].prices`` are usage prices (``type``, if given, is ``usage``);
  a product has exactly one price, ``subscription`` (with ``intervalUnit``) or
  ``single_payment`` (no interval), which is always the product's default (so
  ``isDefault: false`` and ``active: false`` are problems there).
- ``usage_credit_grant`` features need ``usageMeterSlug`` (a meter of this definition),
  ``amount`` and ``renewalFrequency``; ``toggle`` features have none of them.
- ``products`` lists at least one product; at most one product is ``default``; a product's
  ``features`` are slugs of features of this definition, each listed once.

Default pricing model (the one new customers get): the new model becomes the default when
``isDefault: true`` is given, or when no default pricing model exists yet. Making it the
default clears the previous default first, in the same transaction (the partial unique
index ``pricing_models_one_default`` allows one). The decision is serialised with the
transaction-level advisory lock ``DEFAULT_PRICING_MODEL_LOCK``; other code that changes which
model is the default should take it too.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Collection, Hashable
from dataclasses import dataclass
from typing import Any

import asyncpg
import uuid_utils
import yaml

from gateway.billing.catalog import notify_catalog_changed
from gateway.errors import ErrorCode, UserError
from gateway.storage.db import Conn, Database

SLUG_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]*")
MAX_SLUG_LENGTH = 64
NO_CHARGE_SUFFIX = "_no_charge"
CURRENCY_PATTERN = re.compile(r"[A-Z]{3}")
DEFAULT_CURRENCY = "USD"
MAX_BIGINT = 2**63 - 1
MAX_INT = 2**31 - 1
DEFAULT_PRICING_MODEL_LOCK = 0x6761_7465_7761_7901
"""Advisory lock key taken while deciding which pricing model is the default."""

AGGREGATION_TYPES = ("sum", "count_distinct_properties")
FEATURE_TYPES = ("toggle", "usage_credit_grant")
RENEWAL_FREQUENCIES = ("once", "every_billing_period")
PRODUCT_PRICE_TYPES = ("subscription", "single_payment")
INTERVAL_UNITS = ("day", "week", "month", "year")

_TOP_KEYS = ("name", "isDefault", "usageMeters", "features", "products")
_METER_ENTRY_KEYS = ("usageMeter", "prices")
_METER_KEYS = ("slug", "name", "aggregationType")
_USAGE_PRICE_KEYS = (
    "type",
    "slug",
    "name",
    "unitPrice",
    "currency",
    "usageEventsPerUnit",
    "isDefault",
    "active",
)
_FEATURE_KEYS = (
    "type",
    "slug",
    "name",
    "description",
    "usageMeterSlug",
    "amount",
    "renewalFrequency",
)
_GRANT_KEYS = ("usageMeterSlug", "amount", "renewalFrequency")
_PRODUCT_ENTRY_KEYS = ("product", "price", "features")
_PRODUCT_KEYS = ("slug", "name", "description", "default")
_PRODUCT_PRICE_KEYS = (
    "type",
    "slug",
    "name",
    "unitPrice",
    "currency",
    "intervalUnit",
    "intervalCount",
    "isDefault",
    "active",
)
# Keys of a usage price that are not reported as unknown when one is (wrongly) put under a
# product: the problem there is the price's type.
_USAGE_ONLY_KEYS = ("usageEventsPerUnit", "usageMeterSlug")


# --- The parsed definition ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UsagePriceDefinition:
    slug: str
    name: str | None
    unit_price: int
    currency: str
    usage_events_per_unit: int
    is_default: bool
    active: bool


@dataclass(frozen=True, slots=True)
class UsageMeterDefinition:
    slug: str
    name: str
    aggregation_type: str
    prices: tuple[UsagePriceDefinition, ...]

    @property
    def no_charge_slug(self) -> str:
        return self.slug + NO_CHARGE_SUFFIX

    @property
    def no_charge_currency(self) -> str:
        """The default price's currency, else the first price's, else USD."""
        for price in self.prices:
            if price.is_default:
                return price.currency
        return self.prices[0].currency if self.prices else DEFAULT_CURRENCY

    @property
    def has_default_price(self) -> bool:
        return any(price.is_default for price in self.prices)


@dataclass(frozen=True, slots=True)
class FeatureDefinition:
    type: str
    slug: str
    name: str
    description: str | None
    usage_meter_slug: str | None
    amount: int | None
    renewal_frequency: str | None


@dataclass(frozen=True, slots=True)
class ProductPriceDefinition:
    type: str
    slug: str
    name: str | None
    unit_price: int
    currency: str
    interval_unit: str | None
    interval_count: int | None


@dataclass(frozen=True, slots=True)
class ProductDefinition:
    slug: str
    name: str
    description: str | None
    is_default: bool
    price: ProductPriceDefinition
    feature_slugs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PricingModelDefinition:
    name: str
    is_default: bool
    """``isDefault: true`` was given; without it the model is the default only if none is."""
    usage_meters: tuple[UsageMeterDefinition, ...]
    features: tuple[FeatureDefinition, ...]
    products: tuple[ProductDefinition, ...]


# --- Reading the text -----------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """A SafeLoader that rejects duplicate keys in a mapping (YAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                ident = (key_node.tag, key_node.value)
                if ident in seen:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"found duplicate key {json.dumps(key_node.value)}",
                        key_node.start_mark,
                    )
                seen.add(ident)
        return super().construct_mapping(node, deep=deep)


class _DuplicateJsonKey(ValueError):
    pass


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateJsonKey(key)
        result[key] = value
    return result


def _load(text: str) -> tuple[Any, str | None]:
    """The document, or a problem. JSON is YAML, but JSON is read as JSON first so that
    tab-indented JSON (which YAML rejects) works; anything else goes through YAML, which
    names the line and column of a mistake."""
    if text.lstrip().startswith(("{", "[")):
        try:
            return json.loads(text, object_pairs_hook=_json_object), None
        except (ValueError, RecursionError):
            pass  # YAML reports it (with its position)
    try:
        return yaml.load(text, Loader=_StrictLoader), None  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "cannot be parsed"
        if mark is None:
            return None, f"definition: malformed YAML: {problem}"
        return None, (
            f"definition: malformed YAML at line {mark.line + 1}, column {mark.column + 1}: "
            f"{problem}"
        )
    except yaml.YAMLError as exc:
        return None, f"definition: malformed YAML: {exc}"
    except RecursionError:
        return None, "definition: malformed YAML: nested too deeply"
    except ValueError as exc:  # a value YAML recognised but could not build (a date, an int)
        reason = str(exc)
        if "integer string conversion" in reason:
            reason = "a number has too many digits"
        return None, f"definition: malformed YAML: {reason}"


# --- Validation -----------------------------------------------------------------------------


def _quote(value: str, limit: int = 60) -> str:
    if len(value) > limit:
        value = value[:limit] + "..."
    return json.dumps(value, ensure_ascii=False)


def _describe(value: Any) -> str:
    """How a wrong value is named in a problem."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {value}"
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"{type(value).__name__} {_quote(str(value))}"


def _one_of(choices: Collection[str]) -> str:
    return ", ".join(f'"{c}"' for c in choices)


def _at(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


class _Fields:
    """One mapping of the definition: reads its fields, reporting problems at their paths."""

    def __init__(
        self, problems: list[str], path: str, data: dict[Any, Any], allowed: Collection[str]
    ) -> None:
        self.problems = problems
        self.path = path
        self.data = data
        for key in data:
            if key not in allowed:
                self.add(key, "unknown field")

    def at(self, key: str) -> str:
        return _at(self.path, key)

    def add(self, key: object, message: str) -> None:
        self.problems.append(f"{_at(self.path, key)}: {message}")

    def present(self, key: str) -> bool:
        return self.data.get(key) is not None

    def string(self, key: str, *, required: bool = True) -> str | None:
        value = self.data.get(key)
        if value is None:
            if required:
                self.add(key, "is required")
            return None
        if not isinstance(value, str):
            self.add(key, f"must be a string, got {_describe(value)}")
            return None
        if "\x00" in value:
            self.add(key, "must not contain NUL characters")
            return None
        if required and not value.strip():
            self.add(key, "must not be empty")
            return None
        return value

    def slug(self, key: str = "slug") -> str | None:
        value = self.string(key)
        if value is None:
            return None
        if len(value) > MAX_SLUG_LENGTH:
            self.add(key, f"must be at most {MAX_SLUG_LENGTH} characters")
            return None
        if not SLUG_PATTERN.fullmatch(value):
            self.add(
                key,
                "must start with a lower-case letter or digit and contain only lower-case "
                f'letters, digits, "_" and "-", got {_quote(value)}',
            )
            return None
        return value

    def integer(
        self, key: str, *, minimum: int, maximum: int, default: int | None = None
    ) -> int | None:
        value = self.data.get(key)
        if value is None:
            if default is None:
                self.add(key, "is required")
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.add(key, f"must be an integer, got {_describe(value)}")
            return None
        if value < minimum:
            self.add(key, "must be > 0" if minimum == 1 else f"must be >= {minimum}")
            return None
        if value > maximum:
            self.add(key, f"must be <= {maximum}")
            return None
        return value

    def optional_integer(self, key: str, *, minimum: int, maximum: int) -> int | None:
        """Checks the value if there is one; absent is fine."""
        if not self.present(key):
            return None
        return self.integer(key, minimum=minimum, maximum=maximum)

    def boolean(self, key: str, *, default: bool) -> bool | None:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.add(key, f"must be a boolean, got {_describe(value)}")
            return None
        return value

    def choice(
        self,
        key: str,
        choices: Collection[str],
        *,
        required: bool = True,
        default: str | None = None,
    ) -> str | None:
        value = self.data.get(key)
        if value is None:
            if required and default is None:
                self.add(key, "is required")
            return default
        if value not in choices:
            self.add(key, f"must be one of {_one_of(choices)}, got {_describe(value)}")
            return None
        return str(value)

    def currency(self, key: str = "currency") -> str | None:
        value = self.data.get(key)
        if value is None:
            return DEFAULT_CURRENCY
        if not isinstance(value, str):
            self.add(key, f"must be a string, got {_describe(value)}")
            return None
        if CURRENCY_PATTERN.fullmatch(value):
            return value
        if CURRENCY_PATTERN.fullmatch(value.upper()):
            self.add(key, f'must be upper-case: "{value.upper()}", not {_quote(value)}')
        else:
            self.add(
                key,
                f'must be a three-letter ISO 4217 code such as "USD", got {_describe(value)}',
            )
        return None

    def list(self, key: str, *, required: bool = False) -> list[Any]:
        value = self.data.get(key)
        if value is None:
            if required:
                self.add(key, "is required")
            return []
        if not isinstance(value, list):
            self.add(key, f"must be a list, got {_describe(value)}")
            return []
        return value

    def mapping(self, key: str, allowed: Collection[str]) -> _Fields | None:
        """A required nested mapping."""
        value = self.data.get(key)
        if value is None:
            self.add(key, "is required")
            return None
        return _mapping(self.problems, self.at(key), value, allowed)


def _mapping(
    problems: list[str], path: str, value: Any, allowed: Collection[str]
) -> _Fields | None:
    if not isinstance(value, dict):
        problems.append(f"{path}: must be a mapping, got {_describe(value)}")
        return None
    return _Fields(problems, path, value, allowed)


class _Validator:
    def __init__(self) -> None:
        self.problems: list[str] = []
        # kind -> slug -> where it was first used
        self.slugs: dict[str, dict[str, str]] = {
            "meter": {},
            "price": {},
            "feature": {},
            "product": {},
        }
        # Every string a meter/feature gave as its slug, valid or not: references to them
        # are not reported again as unknown.
        self.meter_names: set[str] = set()
        self.feature_names: set[str] = set()
        self.default_product_at: str | None = None

    def claim(self, kind: str, slug: str | None, fields: _Fields, key: str = "slug") -> None:
        if slug is None:
            return
        seen = self.slugs[kind]
        if slug in seen:
            fields.add(key, f"duplicate slug {_quote(slug)}")
        else:
            seen[slug] = fields.at(key)

    def price_slug(self, fields: _Fields) -> str | None:
        slug = fields.slug()
        if slug is not None and slug.endswith(NO_CHARGE_SUFFIX):
            fields.add(
                "slug",
                f'{_quote(slug)} must not end in "{NO_CHARGE_SUFFIX}": the suffix is reserved '
                "for the no-charge price the gateway creates for every usage meter",
            )
            return None
        self.claim("price", slug, fields)
        return slug

    def definition(self, data: Any) -> PricingModelDefinition:
        top = _Fields(self.problems, "", data, _TOP_KEYS)
        name = top.string("name")
        is_default = top.boolean("isDefault", default=False)
        meters = tuple(
            self.meter(entry, f"usageMeters[{i}]")
            for i, entry in enumerate(top.list("usageMeters"))
        )
        features = tuple(
            self.feature(entry, f"features[{i}]") for i, entry in enumerate(top.list("features"))
        )
        product_entries = top.list("products", required=True)
        if (
            top.present("products")
            and isinstance(top.data["products"], list)
            and not (product_entries)
        ):
            top.add("products", "must list at least one product")
        products = tuple(
            self.product(entry, f"products[{i}]") for i, entry in enumerate(product_entries)
        )
        return PricingModelDefinition(
            name=name or "",
            is_default=bool(is_default),
            usage_meters=tuple(m for m in meters if m is not None),
            features=tuple(f for f in features if f is not None),
            products=tuple(p for p in products if p is not None),
        )

    def meter(self, entry: Any, path: str) -> UsageMeterDefinition | None:
        outer = _mapping(self.problems, path, entry, _METER_ENTRY_KEYS)
        if outer is None:
            return None
        slug = name = aggregation = None
        inner = outer.mapping("usageMeter", _METER_KEYS)
        if inner is not None:
            raw_slug = inner.data.get("slug")
            if isinstance(raw_slug, str):
                self.meter_names.add(raw_slug)
            slug = inner.slug()
            self.claim("meter", slug, inner)
            name = inner.string("name")
            aggregation = inner.choice("aggregationType", AGGREGATION_TYPES, default="sum")
        prices: list[UsagePriceDefinition] = []
        default_at: str | None = None
        for j, price_entry in enumerate(outer.list("prices")):
            price_path = f"{path}.prices[{j}]"
            price = self.usage_price(price_entry, price_path)
            if price is None:
                continue
            prices.append(price)
            if not price.is_default:
                continue
            if default_at is None:
                default_at = price_path
            else:
                self.problems.append(
                    f"{price_path}.isDefault: a usage meter has at most one default price;"
                    f" {default_at} is already the default"
                )
        if inner is None:
            return None
        return UsageMeterDefinition(
            slug=slug or "",
            name=name or "",
            aggregation_type=aggregation or "",
            prices=tuple(prices),
        )

    def usage_price(self, entry: Any, path: str) -> UsagePriceDefinition | None:
        f = _mapping(self.problems, path, entry, _USAGE_PRICE_KEYS)
        if f is None:
            return None
        if f.present("type") and f.data["type"] != "usage":
            f.add(
                "type",
                f'must be "usage": the prices of a usage meter are usage prices, got '
                f"{_describe(f.data['type'])}",
            )
        slug = self.price_slug(f)
        name = f.string("name", required=False)
        unit_price = f.integer("unitPrice", minimum=0, maximum=MAX_BIGINT)
        currency = f.currency()
        per_unit = f.integer("usageEventsPerUnit", minimum=1, maximum=MAX_INT, default=1)
        is_default = f.boolean("isDefault", default=False)
        active = f.boolean("active", default=True)
        if is_default and active is False:
            f.add("active", "a default price must be active")
        return UsagePriceDefinition(
            slug=slug or "",
            name=name,
            unit_price=unit_price or 0,
            currency=currency or DEFAULT_CURRENCY,
            usage_events_per_unit=per_unit or 1,
            is_default=bool(is_default),
            active=active is not False,
        )

    def feature(self, entry: Any, path: str) -> FeatureDefinition | None:
        f = _mapping(self.problems, path, entry, _FEATURE_KEYS)
        if f is None:
            return None
        feature_type = f.choice("type", FEATURE_TYPES)
        raw_slug = f.data.get("slug")
        if isinstance(raw_slug, str):
            self.feature_names.add(raw_slug)
        slug = f.slug()
        self.claim("feature", slug, f)
        name = f.string("name")
        description = f.string("description", required=False)
        meter_slug: str | None = None
        amount: int | None = None
        renewal: str | None = None
        if feature_type == "toggle":
            for key in _GRANT_KEYS:
                if f.present(key):
                    f.add(key, "only usage_credit_grant features have this field")
        else:
            grant = feature_type == "usage_credit_grant"
            meter_slug = f.string("usageMeterSlug", required=grant)
            if meter_slug is not None and meter_slug not in self.meter_names:
                f.add("usageMeterSlug", f"unknown usage meter {_quote(meter_slug)}")
            if grant:
                amount = f.integer("amount", minimum=1, maximum=MAX_BIGINT)
            else:
                amount = f.optional_integer("amount", minimum=1, maximum=MAX_BIGINT)
            renewal = f.choice("renewalFrequency", RENEWAL_FREQUENCIES, required=grant)
        return FeatureDefinition(
            type=feature_type or "",
            slug=slug or "",
            name=name or "",
            description=description,
            usage_meter_slug=meter_slug,
            amount=amount,
            renewal_frequency=renewal,
        )

    def product(self, entry: Any, path: str) -> ProductDefinition | None:
        outer = _mapping(self.problems, path, entry, _PRODUCT_ENTRY_KEYS)
        if outer is None:
            return None
        slug = name = description = None
        is_default: bool | None = False
        inner = outer.mapping("product", _PRODUCT_KEYS)
        if inner is not None:
            slug = inner.slug()
            self.claim("product", slug, inner)
            name = inner.string("name")
            description = inner.string("description", required=False)
            is_default = inner.boolean("default", default=False)
            if is_default:
                if self.default_product_at is None:
                    self.default_product_at = f"{path}.product"
                else:
                    inner.add(
                        "default",
                        "at most one product may be the default;"
                        f" {self.default_product_at} is already the default",
                    )
        price = self.product_price(outer)
        feature_slugs: list[str] = []
        for k, item in enumerate(outer.list("features")):
            item_path = f"{path}.features[{k}]"
            if not isinstance(item, str):
                self.problems.append(
                    f"{item_path}: must be a feature slug (a string), got {_describe(item)}"
                )
            elif item in feature_slugs:
                self.problems.append(f"{item_path}: duplicate feature {_quote(item)}")
            elif item not in self.feature_names:
                self.problems.append(f"{item_path}: unknown feature {_quote(item)}")
            else:
                feature_slugs.append(item)
        if inner is None or price is None:
            return None
        return ProductDefinition(
            slug=slug or "",
            name=name or "",
            description=description,
            is_default=bool(is_default),
            price=price,
            feature_slugs=tuple(feature_slugs),
        )

    def product_price(self, outer: _Fields) -> ProductPriceDefinition | None:
        raw = outer.data.get("price")
        is_usage = isinstance(raw, dict) and raw.get("type") == "usage"
        allowed = _PRODUCT_PRICE_KEYS + (_USAGE_ONLY_KEYS if is_usage else ())
        f = outer.mapping("price", allowed)
        if f is None:
            return None
        price_type: str | None = None
        if is_usage:
            f.add("type", "usage prices belong to a usage meter, not a product")
        else:
            price_type = f.choice("type", PRODUCT_PRICE_TYPES)
        slug = self.price_slug(f)
        name = f.string("name", required=False)
        unit_price = f.integer("unitPrice", minimum=0, maximum=MAX_BIGINT)
        currency = f.currency()
        interval_unit: str | None = None
        interval_count: int | None = None
        if price_type == "subscription":
            interval_unit = f.choice("intervalUnit", INTERVAL_UNITS)
            interval_count = f.integer("intervalCount", minimum=1, maximum=MAX_INT, default=1)
        elif price_type == "single_payment":
            for key in ("intervalUnit", "intervalCount"):
                if f.present(key):
                    f.add(key, "only subscription prices have an interval")
        else:
            f.choice("intervalUnit", INTERVAL_UNITS, required=False)
            f.optional_integer("intervalCount", minimum=1, maximum=MAX_INT)
        if f.boolean("isDefault", default=True) is False:
            f.add(
                "isDefault",
                "a product's only price is always its default price; remove isDefault or set "
                "it to true",
            )
        if f.boolean("active", default=True) is False:
            f.add("active", "a product's only price is its default price, which must be active")
        return ProductPriceDefinition(
            type=price_type or "",
            slug=slug or "",
            name=name,
            unit_price=unit_price or 0,
            currency=currency or DEFAULT_CURRENCY,
            interval_unit=interval_unit,
            interval_count=interval_count,
        )


def parse_definition(text: str) -> tuple[PricingModelDefinition | None, list[str]]:
    """The definition, or None and every problem (``path: problem``) in document order."""
    data, load_problem = _load(text)
    if load_problem is not None:
        return None, [load_problem]
    if data is None:
        return None, ["definition: is empty"]
    if not isinstance(data, dict):
        return None, [
            "definition: the top level must be a mapping (name, usageMeters, features, "
            f"products), got {_describe(data)}"
        ]
    validator = _Validator()
    definition = validator.definition(data)
    if validator.problems:
        return None, validator.problems
    return definition, []


# --- Writing --------------------------------------------------------------------------------


def _new_id() -> uuid.UUID:
    return uuid.UUID(bytes=uuid_utils.uuid7().bytes)


_CLEAR_DEFAULT_SQL = "UPDATE pricing_models SET is_default = false WHERE is_default"

_INSERT_PRICING_MODEL_SQL = """
INSERT INTO pricing_models (id, name, is_default)
SELECT $1, $2, $3 OR NOT EXISTS (SELECT 1 FROM pricing_models WHERE is_default)
"""

_INSERT_METERS_SQL = """
INSERT INTO usage_meters (id, pricing_model_id, slug, name, aggregation_type)
SELECT m.id, $1, m.slug, m.name, m.aggregation_type
  FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[])
       AS m(id, slug, name, aggregation_type)
"""

_INSERT_FEATURES_SQL = """
INSERT INTO features (id, pricing_model_id, slug, name, description, type, amount,
                      usage_meter_id, renewal_frequency)
SELECT f.id, $1, f.slug, f.name, f.description, f.type, f.amount, f.usage_meter_id,
       f.renewal_frequency
  FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[],
              $8::uuid[], $9::text[])
       AS f(id, slug, name, description, type, amount, usage_meter_id, renewal_frequency)
"""

_INSERT_PRODUCTS_SQL = """
INSERT INTO products (id, pricing_model_id, slug, name, description, is_default)
SELECT p.id, $1, p.slug, p.name, p.description, p.is_default
  FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::boolean[])
       AS p(id, slug, name, description, is_default)
"""

_INSERT_PRICES_SQL = """
INSERT INTO prices (id, pricing_model_id, product_id, usage_meter_id, slug, name, type,
                    unit_price, currency, interval_unit, interval_count, usage_events_per_unit,
                    is_default, is_no_charge, active)
SELECT p.id, $1, p.product_id, p.usage_meter_id, p.slug, p.name, p.type, p.unit_price,
       p.currency, p.interval_unit, p.interval_count, p.usage_events_per_unit, p.is_default,
       p.is_no_charge, p.active
  FROM unnest($2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::text[],
              $8::bigint[], $9::text[], $10::text[], $11::integer[], $12::integer[],
              $13::boolean[], $14::boolean[], $15::boolean[])
       AS p(id, product_id, usage_meter_id, slug, name, type, unit_price, currency,
            interval_unit, interval_count, usage_events_per_unit, is_default, is_no_charge,
            active)
"""

_INSERT_PRODUCT_FEATURES_SQL = """
INSERT INTO product_features (product_id, feature_id)
SELECT * FROM unnest($1::uuid[], $2::uuid[])
"""


def _columns(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows to one list per column (the arrays passed to unnest)."""
    return [[row[i] for row in rows] for i in range(width)]


async def _write(conn: Conn, d: PricingModelDefinition) -> uuid.UUID:
    pm_id = _new_id()
    meter_ids = {m.slug: _new_id() for m in d.usage_meters}
    feature_ids = {f.slug: _new_id() for f in d.features}
    product_ids = {p.slug: _new_id() for p in d.products}

    await conn.execute("SELECT pg_advisory_xact_lock($1)", DEFAULT_PRICING_MODEL_LOCK)
    if d.is_default:
        await conn.execute(_CLEAR_DEFAULT_SQL)
    await conn.execute(_INSERT_PRICING_MODEL_SQL, pm_id, d.name, d.is_default)

    if d.usage_meters:
        meters = [(meter_ids[m.slug], m.slug, m.name, m.aggregation_type) for m in d.usage_meters]
        await conn.execute(_INSERT_METERS_SQL, pm_id, *_columns(meters, 4))

    if d.products:
        products = [
            (product_ids[p.slug], p.slug, p.name, p.description, p.is_default) for p in d.products
        ]
        await conn.execute(_INSERT_PRODUCTS_SQL, pm_id, *_columns(products, 5))

    if d.features:
        features = [
            (
                feature_ids[f.slug],
                f.slug,
                f.name,
                f.description,
                f.type,
                f.amount,
                meter_ids[f.usage_meter_slug] if f.usage_meter_slug is not None else None,
                f.renewal_frequency,
            )
            for f in d.features
        ]
        await conn.execute(_INSERT_FEATURES_SQL, pm_id, *_columns(features, 8))

    # (id, product_id, usage_meter_id, slug, name, type, unit_price, currency, interval_unit,
    #  interval_count, usage_events_per_unit, is_default, is_no_charge, active)
    prices: list[tuple[Any, ...]] = []
    for m in d.usage_meters:
        meter_id = meter_ids[m.slug]
        prices.append(
            (
                _new_id(),
                None,
                meter_id,
                m.no_charge_slug,
                None,
                "usage",
                0,
                m.no_charge_currency,
                None,
                None,
                1,
                not m.has_default_price,
                True,
                True,
            )
        )
        prices.extend(
            (
                _new_id(),
                None,
                meter_id,
                p.slug,
                p.name,
                "usage",
                p.unit_price,
                p.currency,
                None,
                None,
                p.usage_events_per_unit,
                p.is_default,
                False,
                p.active,
            )
            for p in m.prices
        )
    for product in d.products:
        pp = product.price
        prices.append(
            (
                _new_id(),
                product_ids[product.slug],
                None,
                pp.slug,
                pp.name,
                pp.type,
                pp.unit_price,
                pp.currency,
                pp.interval_unit,
                pp.interval_count,
                None,
                True,
                False,
                True,
            )
        )
    if prices:
        await conn.execute(_INSERT_PRICES_SQL, pm_id, *_columns(prices, 14))

    links = [
        (product_ids[p.slug], feature_ids[slug]) for p in d.products for slug in p.feature_slugs
    ]
    if links:
        await conn.execute(_INSERT_PRODUCT_FEATURES_SQL, *_columns(links, 2))

    await notify_catalog_changed(conn, pm_id)
    return pm_id


def _invalid(problems: list[str]) -> UserError:
    message = f"the pricing model definition has {len(problems)} problem(s): " + "; ".join(problems)
    return UserError(
        ErrorCode.INVALID_INPUT, message, ["input", "definition"], extra={"problems": problems}
    )


async def setup_pricing_model(db: Database, text: str) -> uuid.UUID | UserError:
    """Validate ``text`` and write the pricing model in one transaction; its id, or the
    problems as an INVALID_INPUT error (and nothing written)."""
    definition, problems = parse_definition(text)
    if definition is None:
        return _invalid(problems)
    try:
        async with db.transaction() as conn:
            return await _write(conn, definition)
    except asyncpg.IntegrityConstraintViolationError as exc:
        # Validation should make this impossible; the transaction has been rolled back.
        constraint = getattr(exc, "constraint_name", None)
        detail = getattr(exc, "detail", None) or str(exc)
        what = f" (constraint {constraint})" if constraint else ""
        return _invalid([f"definition: conflicts with the database{what}: {detail}"])
