"""Relay cursor pagination shared by the connections (``customers``, ``Billing.usageEvents``).

A page is a keyset slice of a list ordered by a time-ordered UUIDv7 id, so a page costs an
index range scan from the cursor, never an OFFSET. The cursor is opaque to clients (the id's
16 bytes in URL-safe base64 without padding).

Forward (``first``/``after``): the ``first`` items after the cursor (from the start without
one). Backward (``last``/``before``, chosen when either is given): the ``last`` items just
before the cursor (from the end without one), still in list order; ``last`` defaults to the
size ``first`` has. ``after`` and ``before`` together are refused, as are sizes outside
0..``MAX_PAGE``.

``hasNextPage``/``hasPreviousPage`` in the paging direction come from fetching one item more
than asked. Against it, they say whether a cursor was given: an item is named by its cursor,
so something lies on that side (items of these lists are never deleted).
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from typing import Generic, TypeVar

from gateway.errors import UserError, invalid

T = TypeVar("T")
MAX_PAGE = 100
LOWEST_ID = uuid.UUID(int=0)
HIGHEST_ID = uuid.UUID(int=(1 << 128) - 1)


def encode_cursor(item_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(item_id.bytes).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> uuid.UUID | None:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return uuid.UUID(bytes=raw)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class PageRequest:
    forward: bool
    """True for first/after, False for last/before."""
    size: int
    cursor: uuid.UUID | None
    """The id the page starts after (forward) or ends before (backward)."""


def page_request(
    first: int | None,
    after: str | None,
    last: int | None,
    before: str | None,
    *,
    default_size: int,
) -> PageRequest | UserError:
    """The page asked for by Relay's four arguments (None: not given)."""
    forward = last is None and before is None
    if not forward and after is not None:
        return invalid("after and before cannot be combined: page one way at a time", "before")
    size_name = "first" if forward else "last"
    requested = first if forward or last is None else last
    size = default_size if requested is None else requested
    if size < 0 or size > MAX_PAGE:
        return invalid(f"{size_name} must be between 0 and {MAX_PAGE}", size_name)
    cursor_name, cursor_text = ("after", after) if forward else ("before", before)
    cursor = None
    if cursor_text is not None:
        cursor = decode_cursor(cursor_text)
        if cursor is None:
            return invalid(f"{cursor_name} is not a cursor of this connection", cursor_name)
    return PageRequest(forward=forward, size=size, cursor=cursor)


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    """In list order, whichever way the page was taken."""
    has_next_page: bool
    has_previous_page: bool


def page_of(rows: list[T], request: PageRequest) -> Page[T]:
    """The page from ``rows``: up to size + 1 items in paging order (forward: list order,
    backward: reverse list order) starting at the cursor."""
    more = len(rows) > request.size
    items = rows[: request.size]
    if request.forward:
        return Page(items, has_next_page=more, has_previous_page=request.cursor is not None)
    items.reverse()
    return Page(items, has_next_page=request.cursor is not None, has_previous_page=more)
