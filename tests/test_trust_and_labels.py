"""Whom the gateway believes (X-Forwarded-For) and who may add metrics label values."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY

from gateway.api import observability
from gateway.api.observability import _OperationNames
from gateway.settings import Settings
from gateway.storage.db import Database
from tests.conftest import GraphQLClient
from tests.factories import create_customer, session_token, setup_pricing
from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def served(database_url: str, tmp_path: Path, **env: str) -> Iterator[str]:
    """`billing-gateway serve` (the way production runs) with ``env``; yields its base URL."""
    port = free_port()
    log = tmp_path / f"serve-{port}.log"
    environment = {
        **os.environ,
        "DATABASE_URL": database_url,
        "GATEWAY_TOKEN_SECRET": "test-secret-" + "x" * 32,
        "GATEWAY_DATA_DIR": str(tmp_path / "data"),
        **env,
    }
    command = [sys.executable, "-m", "gateway.cli", "serve", "--host", "127.0.0.1"]
    with log.open("w") as out:
        server = subprocess.Popen(
            [*command, "--port", str(port)],
            cwd=ROOT,
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise AssertionError(f"serve did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()


async def statuses(url: str, forwarded_for: list[str]) -> list[int]:
    """Anonymous `{ __typename }` requests, one per X-Forwarded-For value."""
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        return [
            (
                await client.post(
                    "/graphql",
                    json={"query": "{ __typename }"},
                    headers={"x-forwarded-for": address},
                )
            ).status_code
            for address in forwarded_for
        ]


async def test_x_forwarded_for_is_not_believed_by_default(
    database_url: str, tmp_path: Path, db: Database
) -> None:
    rotating = ["203.0.113.1", "203.0.113.2", "203.0.113.3", "203.0.113.4"]
    with served(database_url, tmp_path, GATEWAY_RATE_LIMIT_PER_MINUTE="3") as url:
        # One bucket, the TCP peer's: rotating the header does not buy a fourth request.
        assert await statuses(url, rotating) == [200, 200, 200, 429]


async def test_x_forwarded_for_is_believed_from_a_named_proxy(
    database_url: str, tmp_path: Path, db: Database
) -> None:
    with served(
        database_url,
        tmp_path,
        GATEWAY_RATE_LIMIT_PER_MINUTE="3",
        GATEWAY_TRUSTED_PROXIES="10.0.0.0/8, 127.0.0.1",
    ) as url:
        # Each client behind the proxy has its own bucket...
        assert await statuses(url, ["203.0.113.1", "203.0.113.2", "203.0.113.3"]) == [200] * 3
        # ...and the header names the client: the fourth request of one of them is refused.
        assert await statuses(url, ["198.51.100.7"] * 4) == [200, 200, 200, 429]


def test_trusted_proxies_must_be_addresses_or_networks(settings: Settings) -> None:
    ok = Settings(**{**settings.model_dump(), "gateway_trusted_proxies": "10.0.0.0/8, ::1"})
    assert ok.trusted_proxies() == ["10.0.0.0/8", "::1"]
    assert Settings(**settings.model_dump()).trusted_proxies() == []
    with pytest.raises(ValueError, match=r"'proxy\.example' is not an address or network"):
        Settings(**{**settings.model_dump(), "gateway_trusted_proxies": "proxy.example"})


# ------------------------------------------------------------------ operation labels


def operations(name: str) -> float:
    total = 0.0
    for metric in REGISTRY.collect():
        if metric.name == "gateway_graphql_operations":
            for s in metric.samples:
                if s.name.endswith("_total") and s.labels["operation"] == name:
                    total += s.value
    return total


@pytest.fixture
def names(monkeypatch: pytest.MonkeyPatch) -> _OperationNames:
    """Fresh label pools (the process's are shared by every test): 3 names for secret keys,
    2 for customer sessions."""
    fresh = _OperationNames(3, 2)
    monkeypatch.setattr(observability, "operation_names", fresh)
    return fresh


async def test_anonymous_callers_add_no_operation_labels(
    gql: GraphQLClient, names: _OperationNames
) -> None:
    before_other = operations("other")
    for i in range(5):
        response = await gql(f"query Junk{i} {{ __typename }}", token=None)
        assert response.body == {"data": {"__typename": "Query"}}
    assert names.seen == set()
    assert [operations(f"Junk{i}") for i in range(5)] == [0.0] * 5
    assert operations("other") == before_other + 5
    # The backends' names are all still to be had.
    for i in range(3):
        assert (await gql(f"query Backend{i} {{ __typename }}")).status == 200
    assert names.seen == {"Backend0", "Backend1", "Backend2"}
    # An anonymous caller using a known name is counted under it.
    before = operations("Backend0")
    await gql("query Backend0 { __typename }", token=None)
    assert operations("Backend0") == before + 1


async def test_customer_sessions_cannot_use_up_the_backends_labels(
    gql: GraphQLClient, names: _OperationNames
) -> None:
    await setup_pricing(gql)
    await create_customer(gql, "user-1")
    token = await session_token(gql, "user-1")
    for i in range(4):
        assert (await gql(f"query Mine{i} {{ __typename }}", token=token)).status == 200
    assert names.pools["customer"] == {"Mine0", "Mine1"}
    assert [operations(f"Mine{i}") for i in (2, 3)] == [0.0, 0.0]
    for i in range(3):
        assert (await gql(f"query Backend{i} {{ __typename }}")).status == 200
    assert names.pools["secret_key"] == {"Backend0", "Backend1", "Backend2"}
    assert (await gql("query Backend3 { __typename }")).status == 200
    assert operations("Backend3") == 0.0
