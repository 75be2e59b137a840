"""Flowglad's pricing model setup format, as pydantic models.

The models mirror Flowglad's setup schema (``setupPricingModelSchema``): the same field
names, the same discriminated unions on ``type`` (features: ``toggle``,
``usage_credit_grant``, ``resource``; product prices: ``subscription``, ``single_payment``;
meter prices: ``usage``) and Flowglad's defaults. Compatibility policy:

- a field Flowglad accepts is never an error. What the gateway models it stores (``active``
  flags, the interval of usage prices); what it does not model (resources and resource
  features, product images and quantity labels, display groups and orders, trial periods) is
  accepted and reported by :func:`unmodelled_warnings`;
- a key Flowglad does not know either is refused (``extra="forbid"``): it is usually a typo.

``parse`` reads YAML or JSON text and returns the definition or every problem as
``path: problem`` (``features[2].usageMeterSlug: unknown usage meter "x"``). Field problems
come from pydantic; the rules that span entries (unique slugs, references, defaults) are
checked once every entry is well-formed, by :func:`cross_check`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Hashable
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel

MAX_NAME_LENGTH = 255
SLUG_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
NO_CHARGE_SUFFIX = "_no_charge"
DEFAULT_CURRENCY = "USD"
MAX_BIGINT = 2**63 - 1
MAX_INT = 2**31 - 1
FREE_PRODUCT_SLUG = "free"
"""Flowglad's reserved slug: the free default product (and its price) added when no product
is marked default; a product with this slug must be the default."""
FREE_PRODUCT_NAME = "Free Plan"

# Tags of the discriminated unions: pydantic puts the chosen tag in an error's location.
_UNION_TAGS = frozenset(
    {"toggle", "usage_credit_grant", "resource", "subscription", "single_payment", "usage"}
)


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Text = Annotated[str, Strict(), AfterValidator(_no_nul)]
# Flowglad's ``safeZodSanitizedString``: trimmed, 1 to 255 characters.
Name = Annotated[
    str,
    Strict(),
    Field(min_length=1, max_length=MAX_NAME_LENGTH),
    AfterValidator(_no_nul),
]
Slug = Annotated[
    str, Strict(), Field(min_length=1, max_length=MAX_NAME_LENGTH, pattern=SLUG_PATTERN)
]
Currency = Annotated[str, Strict(), Field(pattern=r"^[A-Z]{3}$")]
Amount = Annotated[int, Strict(), Field(ge=0, le=MAX_BIGINT)]
PositiveBig = Annotated[int, Strict(), Field(ge=1, le=MAX_BIGINT)]
PositiveInt = Annotated[int, Strict(), Field(ge=1, le=MAX_INT)]
NonNegativeInt = Annotated[int, Strict(), Field(ge=0, le=MAX_INT)]
Flag = Annotated[bool, Strict()]
IntervalUnit = Literal["day", "week", "month", "year"]
RenewalFrequency = Literal["once", "every_billing_period"]


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        str_strip_whitespace=True,
    )

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: Any) -> Any:
        """``null`` counts as absent for a known field (its default applies, or it is
        required); an unknown field stays and is refused even when null."""
        if not isinstance(data, dict):
            return data
        known = set(cls.model_fields) | {f.alias for f in cls.model_fields.values() if f.alias}
        return {k: v for k, v in data.items() if v is not None or k not in known}


# --- Usage meters and their prices ----------------------------------------------------------


class UsageMeterSpec(_Model):
    slug: Slug
    name: Name
    aggregation_type: Literal["sum", "count_distinct_properties"] = "sum"


class UsagePriceSpec(_Model):
    type: Literal["usage"] = "usage"
    slug: Slug | None = None
    """Optional (Flowglad's rule); the gateway names an unslugged price, see ``pricing_setup``."""
    name: Name | None = None
    unit_price: Amount
    currency: Currency = DEFAULT_CURRENCY
    usage_events_per_unit: PositiveInt = 1
    is_default: Flag = False
    active: Flag = True
    interval_unit: IntervalUnit | None = None
    interval_count: PositiveInt | None = None
    trial_period_days: None = None


class UsageMeterEntry(_Model):
    usage_meter: UsageMeterSpec
    prices: list[UsagePriceSpec] | None = None


# --- Features -------------------------------------------------------------------------------


class _FeatureBase(_Model):
    slug: Slug
    name: Name
    description: Text | None = None
    active: Flag = True


class ToggleFeature(_FeatureBase):
    type: Literal["toggle"]


class UsageCreditGrantFeature(_FeatureBase):
    type: Literal["usage_credit_grant"]
    usage_meter_slug: Text
    amount: PositiveBig
    renewal_frequency: RenewalFrequency


class ResourceFeature(_FeatureBase):
    """Accepted, not modelled: the gateway has no resources (warned, not stored)."""

    type: Literal["resource"]
    resource_slug: Text
    amount: PositiveBig


Feature = Annotated[
    ToggleFeature | UsageCreditGrantFeature | ResourceFeature, Field(discriminator="type")
]


class ResourceSpec(_Model):
    slug: Slug
    name: Name
    active: Flag = True


# --- Products -------------------------------------------------------------------------------


class ProductSpec(_Model):
    slug: Slug
    name: Name
    description: Text | None = None
    image_url: Text | None = Field(default=None, alias="imageURL")
    active: Flag = True
    default: Flag = False
    singular_quantity_label: Text | None = None
    plural_quantity_label: Text | None = None


class _ProductPriceBase(_Model):
    slug: Slug
    name: Name | None = None
    unit_price: Amount
    currency: Currency = DEFAULT_CURRENCY
    is_default: Flag = True
    active: Flag = True
    trial_period_days: NonNegativeInt | None = None
    usage_meter_id: None = None
    usage_events_per_unit: None = None


class SubscriptionPrice(_ProductPriceBase):
    type: Literal["subscription"]
    interval_unit: IntervalUnit
    interval_count: PositiveInt = 1


class SinglePaymentPrice(_ProductPriceBase):
    type: Literal["single_payment"]
    interval_unit: None = None
    interval_count: None = None


ProductPrice = Annotated[SubscriptionPrice | SinglePaymentPrice, Field(discriminator="type")]


class ProductEntry(_Model):
    product: ProductSpec
    price: ProductPrice
    features: list[Text] = []
    display_group: Text | None = None
    display_order: Annotated[int, Strict()] | None = None


class PricingModelSpec(_Model):
    name: Name
    is_default: Flag = False
    usage_meters: list[UsageMeterEntry] = []
    features: list[Feature] = []
    products: list[ProductEntry] = []
    resources: list[ResourceSpec] | None = None


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


def load(text: str) -> tuple[Any, str | None]:
    """The document, or a problem. JSON is read as JSON first so that tab-indented JSON
    (which YAML rejects) works; anything else goes through YAML, which names the line and
    column of a mistake."""
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


def _path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in _UNION_TAGS:
            continue
        else:
            path += f".{part}" if path else part
    return path or "definition"


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
        return _quote(value if len(value) <= 60 else value[:60] + "...")
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"{type(value).__name__} {_quote(str(value))}"


_EXPECTED = {
    "int_type": "an integer",
    "int_from_float": "an integer",
    "int_parsing": "an integer",
    "bool_type": "a boolean",
    "bool_parsing": "a boolean",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "none_required": "null or absent",
}


def _choices(ctx: dict[str, Any], key: str) -> str:
    """pydantic's list of allowed values ("'a', 'b' or 'c'") as '"a", "b", "c"'."""
    return ", ".join(f'"{c}"' for c in re.findall(r"'([^']*)'", str(ctx.get(key, ""))))


def _message(error: Any) -> tuple[str, str]:
    """(path, message) of one pydantic error, in the gateway's words."""
    loc = tuple(error["loc"])
    kind = error["type"]
    value = error.get("input")
    ctx = error.get("ctx", {})
    path = _path(loc)
    if kind == "missing":
        return path, "is required"
    if kind == "extra_forbidden":
        return path, "unknown field"
    if kind in _EXPECTED:
        return path, f"must be {_EXPECTED[kind]}, got {_describe(value)}"
    if kind == "union_tag_not_found":
        return _path((*loc, "type")), "is required"
    if kind == "union_tag_invalid":
        tag = value.get("type") if isinstance(value, dict) else None
        if tag == "usage" and "price" in loc:
            return _path((*loc, "type")), "usage prices belong to a usage meter, not a product"
        return _path((*loc, "type")), f"must be one of {_choices(ctx, 'expected_tags')}, got " + (
            _describe(tag)
        )
    if kind == "literal_error" and loc[-1] == "type" and "prices" in loc:
        return path, (
            f'must be "usage": the prices of a usage meter are usage prices, got {_describe(value)}'
        )
    if kind == "literal_error":
        return path, f"must be one of {_choices(ctx, 'expected')}, got {_describe(value)}"
    if kind == "greater_than_equal":
        bound = ctx.get("ge")
        return path, "must be > 0" if bound == 1 else f"must be >= {bound}"
    if kind == "less_than_equal":
        return path, f"must be <= {ctx.get('le')}"
    if kind == "string_pattern_mismatch" and loc and loc[-1] == "currency":
        if isinstance(value, str) and re.fullmatch(r"[A-Z]{3}", value.upper()):
            return path, f'must be upper-case: "{value.upper()}", not {_quote(value)}'
        return path, (f'must be a three-letter ISO 4217 code such as "USD", got {_describe(value)}')
    if kind == "string_pattern_mismatch":
        return path, (
            "must start with a lower-case letter or digit and contain only lower-case letters,"
            f' digits, "_" and "-", got {_describe(value)}'
        )
    if kind == "string_too_long":
        return path, f"must be at most {MAX_NAME_LENGTH} characters"
    if kind == "string_too_short":
        return path, "must not be empty"
    message = str(error["msg"]).removeprefix("Value error, ")
    return path, message[:1].lower() + message[1:]


def parse(text: str) -> tuple[PricingModelSpec | None, list[str]]:
    """The definition, or None and every problem (``path: problem``)."""
    data, load_problem = load(text)
    if load_problem is not None:
        return None, [load_problem]
    if data is None:
        return None, ["definition: is empty"]
    if not isinstance(data, dict):
        return None, [
            "definition: the top level must be a mapping (name, usageMeters, features, products),"
            f" got {_describe(data)}"
        ]
    # Each entry of the four lists is validated on its own, so that the rules spanning
    # entries (cross_check) still run over the valid ones: every problem is listed at once.
    problems: list[str] = []
    top = dict(data)
    entries: dict[str, list[Any]] = {}
    for key in _ENTRY_ADAPTERS:
        if isinstance(top.get(key), list):
            entries[key] = top[key]
            top[key] = []
    spec: PricingModelSpec | None = None
    try:
        spec = PricingModelSpec.model_validate(top)
    except ValidationError as exc:
        problems.extend(": ".join(_message(e)) for e in exc.errors())
    valid: dict[str, list[Any]] = {}
    for key, items in entries.items():
        valid[key] = []
        for i, item in enumerate(items):
            try:
                valid[key].append(_ENTRY_ADAPTERS[key].validate_python(item))
            except ValidationError as exc:
                for e in exc.errors():
                    e["loc"] = (key, i, *e["loc"])
                    problems.append(": ".join(_message(e)))
    if spec is None:
        snake = _snake(valid)
        spec = PricingModelSpec.model_construct(
            name="",
            is_default=False,
            usage_meters=snake.get("usage_meters", []),
            features=snake.get("features", []),
            products=snake.get("products", []),
            resources=snake.get("resources"),
        )
    else:
        spec = spec.model_copy(update=_snake(valid))
    problems.extend(cross_check(spec, _raw_slugs(entries)))
    return (None, problems) if problems else (spec, [])


_ENTRY_ADAPTERS: dict[str, TypeAdapter[Any]] = {
    "usageMeters": TypeAdapter(UsageMeterEntry),
    "features": TypeAdapter(Feature),
    "products": TypeAdapter(ProductEntry),
    "resources": TypeAdapter(ResourceSpec),
}


def _snake(valid: dict[str, list[Any]]) -> dict[str, list[Any]]:
    names = {"usageMeters": "usage_meters", "features": "features", "products": "products"}
    return {names.get(k, k): v for k, v in valid.items()}


def _raw_slugs(entries: dict[str, list[Any]]) -> set[str]:
    """Every slug an entry gives, valid or not: references to them are not reported again."""
    slugs: set[str] = set()
    for key, items in entries.items():
        for item in items:
            if not isinstance(item, dict):
                continue
            inner = item.get("usageMeter") if key == "usageMeters" else item
            if isinstance(inner, dict) and isinstance(inner.get("slug"), str):
                slugs.add(inner["slug"].strip())
    return slugs


def _quote(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def cross_check(spec: PricingModelSpec, raw_slugs: Collection[str] = ()) -> list[str]:
    """Rules that span entries: unique slugs, references, defaults (Flowglad's rules and the
    gateway's), in document order."""
    problems: list[str] = []

    def unique(kind: str, seen: dict[str, str], slug: str | None, path: str) -> None:
        if slug is None:
            return
        if slug in seen:
            problems.append(f"{path}: duplicate slug {_quote(slug)}")
        else:
            seen[slug] = path

    meters: dict[str, str] = {}
    prices: dict[str, str] = {}
    for i, entry in enumerate(spec.usage_meters):
        unique("usage meter", meters, entry.usage_meter.slug, f"usageMeters[{i}].usageMeter.slug")
        default_at: str | None = None
        for j, price in enumerate(entry.prices or []):
            at = f"usageMeters[{i}].prices[{j}]"
            if price.slug is not None and price.slug.endswith(NO_CHARGE_SUFFIX):
                problems.append(
                    f'{at}.slug: {_quote(price.slug)} must not end in "{NO_CHARGE_SUFFIX}": the'
                    " suffix is reserved for the no-charge price the gateway creates for every"
                    " usage meter"
                )
            else:
                unique("price", prices, price.slug, f"{at}.slug")
            if price.is_default and not price.active:
                problems.append(
                    f"{at}.isDefault: an inactive price cannot be the default;"
                    " set active: true or isDefault: false"
                )
            if price.is_default:
                if default_at is not None:
                    problems.append(
                        f"{at}.isDefault: a usage meter has at most one default price;"
                        f" {default_at} is already the default"
                    )
                default_at = default_at or at
    resources: dict[str, str] = {}
    for i, resource in enumerate(spec.resources or []):
        unique("resource", resources, resource.slug, f"resources[{i}].slug")
    features: dict[str, str] = {}
    for i, feature in enumerate(spec.features):
        unique("feature", features, feature.slug, f"features[{i}].slug")
        if (
            isinstance(feature, UsageCreditGrantFeature)
            and feature.usage_meter_slug not in meters
            and feature.usage_meter_slug not in raw_slugs
        ):
            problems.append(
                f"features[{i}].usageMeterSlug: unknown usage meter {_quote(feature.usage_meter_slug)}"
            )
        if (
            isinstance(feature, ResourceFeature)
            and feature.resource_slug not in resources
            and feature.resource_slug not in raw_slugs
        ):
            problems.append(
                f"features[{i}].resourceSlug: unknown resource {_quote(feature.resource_slug)}"
            )
    products: dict[str, str] = {}
    default_product: str | None = None
    for i, pentry in enumerate(spec.products):
        at = f"products[{i}]"
        product, pprice = pentry.product, pentry.price
        unique("product", products, product.slug, f"{at}.product.slug")
        if pprice.slug.endswith(NO_CHARGE_SUFFIX):
            problems.append(
                f'{at}.price.slug: {_quote(pprice.slug)} must not end in "{NO_CHARGE_SUFFIX}":'
                " the suffix is reserved for the no-charge price the gateway creates for every"
                " usage meter"
            )
        else:
            unique("price", prices, pprice.slug, f"{at}.price.slug")
        if not (pprice.active and pprice.is_default):
            problems.append(f"{at}.price: price must have active=true and isDefault=true")
        if product.slug == FREE_PRODUCT_SLUG and not product.default:
            problems.append(
                f"{at}.product.slug: slug {_quote(FREE_PRODUCT_SLUG)} is reserved for default"
                " products only"
            )
        if product.default:
            if default_product is not None:
                problems.append(
                    f"{at}.product.default: at most one product may be the default;"
                    f" {default_product} is already the default"
                )
            default_product = default_product or f"{at}.product"
            if pprice.unit_price != 0:
                problems.append(f"{at}.price.unitPrice: default products must have zero price")
            if pprice.trial_period_days:
                problems.append(f"{at}.price.trialPeriodDays: default products cannot have trials")
        listed: set[str] = set()
        for k, slug in enumerate(pentry.features):
            if slug in listed:
                problems.append(f"{at}.features[{k}]: duplicate feature {_quote(slug)}")
            elif slug not in features and slug not in raw_slugs:
                problems.append(f"{at}.features[{k}]: unknown feature {_quote(slug)}")
            listed.add(slug)
    if default_product is None and FREE_PRODUCT_SLUG in prices:
        problems.append(
            f"{prices[FREE_PRODUCT_SLUG]}: no product is the default, so the free default"
            f" product and its price {_quote(FREE_PRODUCT_SLUG)} are added; that price slug"
            " is taken"
        )
    return problems


def _ignored(path: str, what: str) -> str:
    return f"{path}: {what} is not modelled by the gateway; accepted and ignored"


def unmodelled_warnings(spec: PricingModelSpec) -> list[str]:
    """What the definition holds that the gateway accepts but does not store."""
    warnings: list[str] = []
    if spec.resources:
        warnings.append(_ignored("resources", f"{len(spec.resources)} resource(s)"))
    resource_features = set()
    for i, feature in enumerate(spec.features):
        if isinstance(feature, ResourceFeature):
            resource_features.add(feature.slug)
            warnings.append(_ignored(f"features[{i}]", "a resource feature"))
    for i, entry in enumerate(spec.products):
        at = f"products[{i}]"
        product = entry.product
        if product.image_url is not None:
            warnings.append(_ignored(f"{at}.product.imageURL", "a product image"))
        for key, value in (
            ("singularQuantityLabel", product.singular_quantity_label),
            ("pluralQuantityLabel", product.plural_quantity_label),
        ):
            if value is not None:
                warnings.append(_ignored(f"{at}.product.{key}", "a quantity label"))
        if entry.price.trial_period_days is not None:
            warnings.append(_ignored(f"{at}.price.trialPeriodDays", "a trial period"))
        if entry.display_group is not None:
            warnings.append(_ignored(f"{at}.displayGroup", "a display group"))
        if entry.display_order is not None:
            warnings.append(_ignored(f"{at}.displayOrder", "a display order"))
        for k, slug in enumerate(entry.features):
            if slug in resource_features:
                warnings.append(_ignored(f"{at}.features[{k}]", "a resource feature"))
    return warnings
