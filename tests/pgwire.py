"""A PostgreSQL wire-protocol proxy that records every statement the server is asked to run.

It sits between a client and the real server (TCP or the embedded server's Unix socket),
forwards every byte unchanged, and decodes the client's messages: a simple ``Query`` ('Q')
is one statement run; with the extended protocol, ``Parse`` ('P') names a statement, ``Bind``
('B') binds it to a portal and each ``Execute`` ('E') runs it once. ``Parse`` and ``Describe``
alone (asyncpg preparing a statement) run nothing and are not recorded. This is what the
server executes, seen from outside the gateway's own code, so it can check the gateway's
statement counter (``gateway_db_queries_total``) exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import parse_qs, quote, urlsplit

from gateway.storage.db import asyncpg_dsn

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104


def _cstring(data: bytes) -> tuple[str, bytes]:
    end = data.index(b"\x00")
    return data[:end].decode(), data[end + 1 :]


class StatementRecorder:
    """Start with ``await recorder.start()``; connect to ``recorder.url``."""

    def __init__(self, database_url: str) -> None:
        parts = urlsplit(asyncpg_dsn(database_url))
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        self.user = parts.username or query.get("user", "postgres")
        self.password = parts.password
        self.database = parts.path.lstrip("/") or self.user
        host = query.get("host") or parts.hostname or "127.0.0.1"
        port = int(query.get("port") or parts.port or 5432)
        self.unix_path = f"{host}/.s.PGSQL.{port}" if host.startswith("/") else None
        self.upstream = (host, port)
        self.executed: list[str] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.url = ""

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        credentials = quote(self.user) + (f":{quote(self.password)}" if self.password else "")
        self.url = f"postgresql://{credentials}@127.0.0.1:{port}/{self.database}?sslmode=disable"
        return self.url

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        if self.unix_path is not None:
            up_reader, up_writer = await asyncio.open_unix_connection(self.unix_path)
        else:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        back = asyncio.create_task(self._pump(up_reader, writer))
        try:
            await self._client_messages(reader, up_writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            up_writer.close()
            with contextlib.suppress(Exception):
                await back
            writer.close()
            self._tasks.discard(task)

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _client_messages(
        self, reader: asyncio.StreamReader, upstream: asyncio.StreamWriter
    ) -> None:
        # The startup packet has no type byte. (sslmode=disable: no SSL request comes first.)
        length = int.from_bytes(await reader.readexactly(4), "big")
        body = await reader.readexactly(length - 4)
        code = int.from_bytes(body[:4], "big")
        assert code not in (SSL_REQUEST, GSSENC_REQUEST), "the proxy speaks plain text only"
        upstream.write(length.to_bytes(4, "big") + body)
        statements: dict[str, str] = {}
        portals: dict[str, str] = {}
        while True:
            header = await reader.readexactly(5)
            kind = header[:1]
            body = await reader.readexactly(int.from_bytes(header[1:], "big") - 4)
            if kind == b"Q":
                self.executed.append(_cstring(body)[0])
            elif kind == b"P":
                name, rest = _cstring(body)
                statements[name] = _cstring(rest)[0]
            elif kind == b"B":
                portal, rest = _cstring(body)
                portals[portal] = statements[_cstring(rest)[0]]
            elif kind == b"E":
                self.executed.append(portals[_cstring(body)[0]])
            upstream.write(header + body)
            await upstream.drain()
            if kind == b"X":
                return
