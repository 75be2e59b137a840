"""A graphql-transport-ws client for the subscription tests (the `websockets` library)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

PROTOCOL = Subprotocol("graphql-transport-ws")

USAGE_BALANCE_SUBSCRIPTION = """
subscription($meter: String!, $customer: String, $sub: ID) {
  usageBalance(meterSlug: $meter, customerExternalId: $customer, subscriptionId: $sub) {
    usageMeter { slug } subscriptionId availableBalance usedBalance balanceLimit
    billingPeriodStart billingPeriodEnd
  }
}
"""


class Live:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    @classmethod
    @asynccontextmanager
    async def open(
        cls, base_url: str, token: str | None, *, ack: bool = True
    ) -> AsyncIterator[Live]:
        url = base_url.replace("http://", "ws://", 1) + "/graphql"
        async with connect(url, subprotocols=[PROTOCOL], open_timeout=10) as ws:
            live = cls(ws)
            payload = {} if token is None else {"Authorization": f"Bearer {token}"}
            await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
            if ack:
                assert await live.receive() == {"type": "connection_ack"}
            yield live

    async def subscribe(self, op_id: str, query: str, variables: dict[str, Any]) -> None:
        await self.ws.send(
            json.dumps(
                {
                    "id": op_id,
                    "type": "subscribe",
                    "payload": {"query": query, "variables": variables},
                }
            )
        )

    async def complete(self, op_id: str) -> None:
        await self.ws.send(json.dumps({"id": op_id, "type": "complete"}))

    async def receive(self, seconds: float = 10) -> dict[str, Any]:
        async with asyncio.timeout(seconds):
            message: dict[str, Any] = json.loads(await self.ws.recv())
        return message

    async def nothing_within(self, seconds: float) -> bool:
        """True when no message arrives within ``seconds`` (a closed connection counts)."""
        try:
            async with asyncio.timeout(seconds):
                await self.ws.recv()
        except TimeoutError:
            return True
        except ConnectionClosed:
            return True
        return False

    async def closed_with(self, seconds: float = 10) -> tuple[int | None, str | None]:
        """Wait for the server to close the connection: (code, reason)."""
        try:
            async with asyncio.timeout(seconds):
                while True:
                    await self.ws.recv()
        except ConnectionClosed as exc:
            return (
                None if exc.rcvd is None else exc.rcvd.code,
                None if exc.rcvd is None else exc.rcvd.reason,
            )
