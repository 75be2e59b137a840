"""Usage history: parse the paging arguments and filters, read one page through the loaders."""

from __future__ import annotations

import uuid

import strawberry

from gateway.billing import paging
from gateway.billing.records import CustomerRow
from gateway.billing.usage_history import HistoryFilter
from gateway.errors import BadUserInput, UserError
from schema.history import UsageEventConnection

DEFAULT_PAGE = 50


def page_request(
    first: int | None, after: str | None, last: int | None, before: str | None, default: int
) -> paging.PageRequest:
    """The page asked for; a top-level BAD_USER_INPUT error for sizes or cursors out of line."""
    request = paging.page_request(first, after, last, before, default_size=default)
    if isinstance(request, UserError):
        raise BadUserInput(request.message)
    return request


async def usage_events(
    info: strawberry.Info,
    customer: CustomerRow,
    meter_slug: str | None,
    subscription_id: str | None,
    request: paging.PageRequest,
) -> UsageEventConnection:
    """The customer's events, newest first. An unknown meter slug, or a subscription that is
    not the customer's, matches no event (as with usageBalances)."""
    loaders = info.context.loaders
    # Loaded with or without a meter filter (from the process cache, no round trip): every
    # history of the request then reaches its page load in the same tick, one statement.
    catalog = await loaders.catalog.load(customer.pricing_model_id)
    meter_id = None
    if meter_slug is not None:
        meter = catalog.meter_by_slug.get(meter_slug)
        if meter is None:
            return UsageEventConnection.of(paging.page_of([], request), None)
        meter_id = meter.id
    sub_id = None
    if subscription_id is not None:
        try:
            sub_id = uuid.UUID(subscription_id)
        except ValueError:
            return UsageEventConnection.of(paging.page_of([], request), None)
    history = HistoryFilter(customer.id, meter_id, sub_id)
    rows = await loaders.usage_event_page.load((history, request))
    return UsageEventConnection.of(paging.page_of(rows, request), history)
