"""Test setup: a real PostgreSQL for the whole run, emptied before each test.

The server is the one at DATABASE_URL when it is set, else an embedded PostgreSQL in a
temporary data directory. Each run creates its own database (so runs never share state) and
applies the migrations to it; every test that uses the database starts from empty tables
(TRUNCATE), which also lets concurrency tests commit from many connections.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest

from gateway.api.app import create_app
from gateway.callers.auth import create_api_key
from gateway.settings import Settings
from gateway.storage.db import Database, asyncpg_dsn
from gateway.storage.embedded import EmbeddedPostgres
from gateway.storage.migrate import upgrade

FIXTURES = Path(__file__).parent / "fixtures"
TABLES = (
    "usage_reservations, webhook_attempts, webhook_deliveries, webhook_endpoints, usage_alert_events, usage_alerts,"
    " usage_events, usage_distinct_keys, usage_totals, meter_balances, credit_grants,"
    " subscriptions, customers, customer_external_ids, product_features, features, prices, products, usage_meters,"
    " pricing_models, api_keys"
)


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(asyncpg_dsn(url))
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    name = f"gateway_test_{os.getpid()}_{secrets.token_hex(3)}"
    server: EmbeddedPostgres | None = None
    tmp: tempfile.TemporaryDirectory[str] | None = None
    base = os.environ.get("DATABASE_URL")
    if base:
        admin_url = base
    else:
        tmp = tempfile.TemporaryDirectory(prefix="gateway-test-")
        server = EmbeddedPostgres(Path(tmp.name))
        admin_url = server.start()

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(asyncpg_dsn(admin_url))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    url = _with_database(admin_url, name)
    upgrade(url)
    try:
        yield url
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        if server is not None:
            server.stop()
        if tmp is not None:
            tmp.cleanup()


@pytest.fixture
def embedded_data_dir() -> Iterator[Path]:
    """A data directory for a command that starts the embedded PostgreSQL: a temporary
    directory of its own, not under ``tmp_path``. As root the server runs as another user, who
    needs to traverse the path; the wheel opens it up (chmod o+rx), but every pytest session
    that starts (another run on the same machine) sets pytest's base directory back to 0700,
    and the server then fails mid-way (initdb: "could not open file ... Permission denied")."""
    with tempfile.TemporaryDirectory(prefix="gateway-data-") as name:
        path = Path(name)
        path.chmod(0o755)
        yield path


@pytest.fixture(scope="session")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        database_url=database_url,
        gateway_data_dir=tmp_path_factory.mktemp("data"),
        gateway_token_secret="test-secret-" + "x" * 32,
        # Webhook tests start their own delivery workers (tests/test_webhooks.py).
        gateway_webhook_worker=False,
        gateway_webhook_poll_seconds=0.05,
        gateway_webhook_timeout_seconds=1.0,
        gateway_webhook_retry_base_seconds=0.1,
    )


@pytest.fixture(scope="session")
async def database(database_url: str) -> AsyncIterator[Database]:
    db = Database(database_url, min_size=1, max_size=20)
    await db.connect()
    yield db
    await db.close()


@pytest.fixture
async def db(database: Database) -> Database:
    """The database, with every table emptied."""
    await database.execute(f"TRUNCATE {TABLES}")
    return database


@asynccontextmanager
async def running_app(settings: Settings, **updates: Any) -> AsyncIterator[Any]:
    """The app of ``settings`` (with ``updates``), its lifespan entered, on the test database."""
    application = create_app(settings.model_copy(update=updates), settings.database_url or "")
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(application.router.lifespan_context(application))
        yield application


@pytest.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[Any]:
    async with running_app(settings) as application:
        yield application


@dataclass
class GraphQLResponse:
    status: int
    body: dict[str, Any]

    @property
    def data(self) -> Any:
        return self.body.get("data")

    @property
    def errors(self) -> list[dict[str, Any]] | None:
        return self.body.get("errors")


class GraphQLClient:
    """Posts GraphQL documents to the app in-process (ASGI)."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.token: str | None = None

    async def __call__(
        self, query: str, variables: dict[str, Any] | None = None, *, token: str | None = "default"
    ) -> GraphQLResponse:
        headers = {}
        bearer = self.token if token == "default" else token
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        response = await self.http.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
        )
        return GraphQLResponse(response.status_code, response.json())


@pytest.fixture
async def http(app: Any, db: Database) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
        yield client


@pytest.fixture
async def secret_key(db: Database) -> str:
    _, key = await create_api_key(db, "tests")
    return key


@pytest.fixture
async def gql(http: httpx.AsyncClient, secret_key: str) -> GraphQLClient:
    """A GraphQL client that sends the secret key unless told otherwise (token=...)."""
    client = GraphQLClient(http)
    client.token = secret_key
    return client
