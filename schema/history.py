"""Usage history: the connection of a customer's usage events (Billing.usageEvents)."""

from __future__ import annotations

import strawberry

from gateway.billing.paging import Page, encode_cursor
from gateway.billing.usage_history import HistoryFilter, UsageEventRow
from schema.paging import PageInfo
from schema.usage_event import UsageEvent


def _cursor(row: UsageEventRow) -> str:
    return encode_cursor(row.id)


@strawberry.type(description="One usage event in a history page, with its cursor.")
class UsageEventEdge:
    cursor: str = strawberry.field(
        description="Opaque; pass as `after` or `before` to page from this event."
    )
    node: UsageEvent = strawberry.field(description="The usage event.")


@strawberry.type(
    description="A page of a customer's usage events, newest first (Relay cursor connection)."
)
class UsageEventConnection:
    edges: list[UsageEventEdge] = strawberry.field(description="The page's events, newest first.")
    page_info: PageInfo = strawberry.field(description="Cursors and whether more pages exist.")
    filter: strawberry.Private[HistoryFilter | None]

    @strawberry.field(
        description="How many events match the filters in all pages. Counting reads the whole"
        " matching history, so ask for it only when it is shown."
    )
    async def total_count(self, info: strawberry.Info) -> int:
        if self.filter is None:
            return 0
        count: int = await info.context.loaders.usage_event_count.load(self.filter)
        return count

    @classmethod
    def of(cls, page: Page[UsageEventRow], history: HistoryFilter | None) -> UsageEventConnection:
        return cls(
            edges=[UsageEventEdge(cursor=_cursor(r), node=UsageEvent.of(r)) for r in page.items],
            page_info=PageInfo.of(page, _cursor),
            filter=history,
        )
