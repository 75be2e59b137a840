"""Flowglad's pricing model setup format, as pydantic models.

The models mirror Flowglad's setup schema (``setupPricingModelSchema``): the same field
names, the same discriminated unions on ``type`` (features: ``toggle``,
``usage_credit_grant``, ``resource``; product prices: ``subscription``, ``single_payment``;
meter prices: ``usage``) and Flowglad's defaults. Compatibility policy:

- a field Flowglad accepts is never an error. What the gateway models it stores (``active``
  flags, the interval of usage prices); what it does not model (resources and resource
  features, product images and quantity labels, display groups and orders, trial periods) is
  accepted and reported by ``pricing_rules.unmodelled_warnings``;
- a key Flowglad does not know either is refused (``extra="forbid"``): it is usually a typo.

Reading text into these models is ``pricing_read``; the rules spanning entries and the
warnings are ``pricing_rules``; turning a definition into rows is ``pricing_plan``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
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
