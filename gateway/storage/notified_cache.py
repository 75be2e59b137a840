"""A per-process cache of database facts that a PostgreSQL notification invalidates.

Entries live at most ``max_age`` seconds and at most ``max_entries`` are kept (least recently
used first out; cachetools' ``TTLCache``). A change to a cached fact sends ``NOTIFY channel,
'<entry key>'`` in the transaction that makes it (a trigger, best, so that every path
notifies); every process LISTENs (``gateway.storage.listener.Listener``) and drops that entry,
or every entry when the payload names none (``parse`` returns None). ``max_age`` bounds the
life of an entry whose notification was lost.

While the listener is disconnected, notifications could be missed: the cache is bypassed
(``get`` finds nothing, ``put`` keeps nothing), and emptied when the listener reconnects. A
cache never attached to a listener is always bypassed: without notifications it could not
be told of a change.

A load that was under way when an invalidation arrived may have read the old fact, so it is
not kept: ``ticket()`` is taken before the load, and ``put`` keeps the value only when no
invalidation happened since (a generation counter, bumped by each).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Generic, TypeVar

from cachetools import TTLCache

from gateway.storage.listener import Listening

V = TypeVar("V")


def _whole(payload: str) -> str | None:
    return payload or None


class NotifiedCache(Generic[V]):
    """See the module docstring."""

    def __init__(
        self,
        channel: str,
        *,
        max_entries: int,
        max_age: float,
        parse: Callable[[str], str | None] = _whole,
    ) -> None:
        self.channel = channel
        self.max_entries = max_entries
        self.max_age = max_age
        self._parse = parse
        self._entries: TTLCache[str, V] | None = None
        if max_entries > 0 and max_age > 0:
            self._entries = TTLCache(maxsize=max_entries, ttl=max_age, timer=time.monotonic)
        self._listener: Listening | None = None
        self._generation = 0

    def attach(self, listener: Listening) -> None:
        """Invalidate on ``listener``'s notifications; bypass the cache while it is down."""
        listener.on(self.channel, self._on_notify)
        listener.on_reconnect(self.invalidate)
        self._listener = listener

    @property
    def active(self) -> bool:
        """Whether entries are read and kept now (a connected listener, a non-zero size)."""
        listener = self._listener
        return self._entries is not None and listener is not None and listener.connected

    def get(self, key: str) -> V | None:
        if self._entries is None or not self.active:
            return None
        return self._entries.get(key)

    def ticket(self) -> int:
        """Take before loading what ``put`` will keep."""
        return self._generation

    def put(self, key: str, value: V, ticket: int) -> None:
        """Keep ``value`` unless an invalidation happened since ``ticket`` was taken."""
        if self._entries is not None and ticket == self._generation and self.active:
            self._entries[key] = value

    def invalidate(self, key: str | None = None) -> None:
        """Drop ``key``'s entry (every entry when None); loads under way are not kept."""
        self._generation += 1
        if self._entries is None:
            return
        if key is None:
            self._entries.clear()
        else:
            self._entries.pop(key, None)

    def __len__(self) -> int:
        return 0 if self._entries is None else len(self._entries)

    def _on_notify(self, payload: str) -> None:
        self.invalidate(self._parse(payload))
