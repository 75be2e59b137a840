"""Relay's PageInfo, shared by every connection (the rules: gateway.billing.paging)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar

import strawberry

from gateway.billing.paging import Page

T = TypeVar("T")

FIRST = "Page forward: how many items after `after` (0 to 100)."
AFTER = "Page forward from this cursor (an edge's `cursor` or `pageInfo.endCursor`)."
LAST = (
    "Page backward: how many items just before `before`, still in list order (0 to 100;"
    " default: the value of `first`). Giving `last` or `before` pages backward."
)
BEFORE = (
    "Page backward from this cursor (`pageInfo.startCursor`); without it, `last` takes the"
    " end of the list. Cannot be combined with `after`."
)


# The paging arguments of every connection field, described once.
FirstArg = Annotated[int | None, strawberry.argument(description=FIRST)]
AfterArg = Annotated[str | None, strawberry.argument(description=AFTER)]
LastArg = Annotated[int | None, strawberry.argument(description=LAST)]
BeforeArg = Annotated[str | None, strawberry.argument(description=BEFORE)]


@strawberry.type(description="Where a page lies in its list (Relay's cursor connections).")
class PageInfo:
    has_next_page: bool = strawberry.field(
        description="More items follow this page: when paging forward, whether another page"
        " exists; when paging backward, true whenever `before` was given."
    )
    has_previous_page: bool = strawberry.field(
        description="Items precede this page: when paging backward, whether another page"
        " exists; when paging forward, true whenever `after` was given."
    )
    start_cursor: str | None = strawberry.field(
        description="The first edge's cursor (pass as `before` for the previous page);"
        " null when the page is empty."
    )
    end_cursor: str | None = strawberry.field(
        description="The last edge's cursor (pass as `after` for the next page);"
        " null when the page is empty."
    )

    @classmethod
    def of(cls, page: Page[T], cursor: Callable[[T], str]) -> PageInfo:
        return cls(
            has_next_page=page.has_next_page,
            has_previous_page=page.has_previous_page,
            start_cursor=cursor(page.items[0]) if page.items else None,
            end_cursor=cursor(page.items[-1]) if page.items else None,
        )
