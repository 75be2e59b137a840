"""LISTEN on several databases at once: every node of a Citus cluster.

On Citus, a notification is sent by the node whose transaction raises it: the hot functions
run on the worker that holds the customer (gateway.storage.distribute), so their
``gateway_balance`` and ``gateway_alert`` notifications, and the credential triggers' on a
customer's row, are sent by that worker, never by the coordinator. ``Listeners`` keeps one
self-healing ``Listener`` per URL (GATEWAY_LISTEN_DATABASE_URLS) behind the interface of one:
every callback hears every node, ``connected`` is True only while all of them are (a cache
bypasses itself when any node could be missed), and the ``on_reconnect`` hooks run after any
of them reconnects (what that node sent meanwhile is lost). A notification sent on several
nodes (a reference table's trigger runs on each copy) reaches the callbacks once per node;
their owners only drop entries, so a repeat costs nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from gateway.storage.listener import Hook, Listener, Payload


class Listeners:
    """One ``Listener`` per URL, used as one (see the module docstring)."""

    def __init__(self, urls: Sequence[str], **options: Any) -> None:
        if not urls:
            raise ValueError("Listeners needs at least one URL")
        self.listeners = [Listener(url, **options) for url in urls]

    @property
    def connected(self) -> bool:
        return all(listener.connected for listener in self.listeners)

    @property
    def connections(self) -> int:
        """Connections established so far, over all URLs (for tests)."""
        return sum(listener.connections for listener in self.listeners)

    def on(self, channel: str, callback: Payload) -> None:
        for listener in self.listeners:
            listener.on(channel, callback)

    async def listen(self, channel: str, callback: Payload) -> None:
        await asyncio.gather(*(listener.listen(channel, callback) for listener in self.listeners))

    def on_reconnect(self, callback: Hook) -> None:
        for listener in self.listeners:
            listener.on_reconnect(callback)

    async def start(self, wait: float | None = None) -> None:
        await asyncio.gather(*(listener.start(wait) for listener in self.listeners))

    async def stop(self) -> None:
        await asyncio.gather(*(listener.stop() for listener in self.listeners))
