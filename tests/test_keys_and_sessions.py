"""Secret API keys (the `keys` CLI, hashing, revocation) and customer session tokens."""

from __future__ import annotations

import asyncio
import hashlib
import re
import stat
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from gateway import cli
from gateway.callers.auth import AuthenticationError, issue_customer_token, verify_customer_token
from gateway.settings import Settings, get_settings
from gateway.storage.db import Database
from tests.conftest import GraphQLClient
from tests.servers import gateway_processes
from tests.test_auth_matrix import PLAN_A, new_customer, setup_model

SECRET = "kQ3v-9Zr_T1mXw8bLp2YcN6dHs4uJf0aEg7iRo5tVy"  # random enough for production
DASHBOARD = {"query": "{ customers(first: 1) { pageInfo { hasNextPage } } }"}
DASHBOARD_OK = {"data": {"customers": {"pageInfo": {"hasNextPage": False}}}}
REVOKED = {
    "data": None,
    "errors": [
        {"message": "unknown or revoked secret key", "extensions": {"code": "UNAUTHENTICATED"}}
    ],
}


@pytest.fixture
def cli_env(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """`billing-gateway` pointed at the test database."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("GATEWAY_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


async def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the CLI in a thread (it runs its own event loop), with its output."""
    capsys.readouterr()
    code = await asyncio.to_thread(cli.main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def refused_within(
    post: Callable[[], Awaitable[httpx.Response]], seconds: float = 1.0
) -> httpx.Response:
    """``post()`` again until it is not a success (a revocation reaches a process by NOTIFY,
    in milliseconds), or ``seconds`` passed; the last answer."""
    deadline = time.monotonic() + seconds
    while True:
        response = await post()
        if response.status_code != 200 or time.monotonic() > deadline:
            return response
        assert response.json() == DASHBOARD_OK
        await asyncio.sleep(0.01)


async def test_keys_create_list_revoke(
    cli_env: None, db: Database, capsys: pytest.CaptureFixture[str], http: httpx.AsyncClient
) -> None:
    code, out, _ = await run_cli(capsys, "keys", "create", "--name", "backend")
    assert code == 0
    match = re.fullmatch(
        r"created key ([0-9a-f-]{36}) \(backend\); it is shown only once:\n(sk_[A-Za-z0-9_-]{43})\n",
        out,
    )
    assert match is not None, out
    key_id, key = match.groups()

    # Stored as its SHA-256 only: the key itself is nowhere in the table.
    row = await db.fetchrow(
        "SELECT name, prefix, key_hash, revoked_at FROM api_keys WHERE id = $1", uuid.UUID(key_id)
    )
    assert row is not None
    assert dict(row) == {
        "name": "backend",
        "prefix": key[:10],
        "key_hash": hashlib.sha256(key.encode()).hexdigest(),
        "revoked_at": None,
    }
    assert key not in str(await db.fetch("SELECT t::text FROM api_keys t"))

    response = await http.post(
        "/graphql", json=DASHBOARD, headers={"authorization": f"Bearer {key}"}
    )
    assert (response.status_code, response.json()) == (200, DASHBOARD_OK)

    code, out, _ = await run_cli(capsys, "keys", "list")
    assert code == 0
    assert re.fullmatch(
        rf"{key_id}  {re.escape(key[:10])}\.\.\.  backend  created \S+  active\n", out
    ), out

    code, out, _ = await run_cli(capsys, "keys", "revoke", key_id)
    assert (code, out) == (0, f"revoked key {key_id}\n")
    # Refused as soon as the revocation's notification reached the gateway (within 1 s).
    response = await refused_within(
        lambda: http.post("/graphql", json=DASHBOARD, headers={"authorization": f"Bearer {key}"})
    )
    assert (response.status_code, response.json()) == (401, REVOKED)

    code, out, _ = await run_cli(capsys, "keys", "list")
    assert re.fullmatch(
        rf"{key_id}  {re.escape(key[:10])}\.\.\.  backend  created \S+  revoked \S+\n", out
    ), out
    code, out, err = await run_cli(capsys, "keys", "revoke", key_id)
    assert (code, out, err) == (1, "", f"error: no active key {key_id}\n")
    code, out, err = await run_cli(capsys, "keys", "revoke", "not-a-uuid")
    assert (code, out, err) == (2, "", "error: not-a-uuid is not a key id\n")


async def test_revocation_takes_effect_on_every_gateway_process(
    cli_env: None, db: Database, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = await run_cli(capsys, "keys", "create", "--name", "fleet")
    assert code == 0
    key_id, key = re.findall(r"created key (\S+) .*\n(\S+)\n", out)[0]
    headers = {"authorization": f"Bearer {key}"}
    with gateway_processes(database_url, 2) as urls:
        async with httpx.AsyncClient(timeout=10) as client:
            for url in urls:
                response = await client.post(url + "/graphql", json=DASHBOARD, headers=headers)
                assert (response.status_code, response.json()) == (200, DASHBOARD_OK)
            code, _, _ = await run_cli(capsys, "keys", "revoke", key_id)
            assert code == 0
            for url in urls:  # each within a second: the trigger's NOTIFY
                response = await refused_within(
                    lambda url=url: client.post(url + "/graphql", json=DASHBOARD, headers=headers)
                )
                assert (response.status_code, response.json()) == (401, REVOKED)


@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        ("Bearer", "use Authorization: Bearer <secret key or session token>"),
        ("Bearer   ", "use Authorization: Bearer <secret key or session token>"),
        ("Token abc", "use Authorization: Bearer <secret key or session token>"),
        ("Bearer sk_unknown", "unknown or revoked secret key"),
        ("Bearer cst_abc", "malformed session token"),
        ("Bearer cst_a.b.c", "malformed session token"),
        ("Bearer something", "malformed session token"),
    ],
)
async def test_bad_credentials_are_401(
    authorization: str, message: str, http: httpx.AsyncClient, db: Database
) -> None:
    response = await http.post(
        "/graphql", json={"query": "{ __typename }"}, headers={"authorization": authorization}
    )
    assert (response.status_code, response.json()) == (
        401,
        {"data": None, "errors": [{"message": message, "extensions": {"code": "UNAUTHENTICATED"}}]},
    )


async def test_the_bearer_scheme_is_case_insensitive(
    http: httpx.AsyncClient, secret_key: str
) -> None:
    response = await http.post(
        "/graphql", json=DASHBOARD, headers={"authorization": f"bearer {secret_key}"}
    )
    assert (response.status_code, response.json()) == (200, DASHBOARD_OK)


# ------------------------------------------------------------------ session tokens


def test_a_token_is_valid_until_its_expiry_exactly() -> None:
    customer = uuid.uuid4()
    issued = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
    token, expires_at = issue_customer_token(SECRET, customer, timedelta(seconds=60), now=issued)
    assert expires_at == issued + timedelta(seconds=60)
    claims = verify_customer_token(SECRET, token, now=expires_at - timedelta(seconds=1))
    assert claims.customer_id == customer
    with pytest.raises(AuthenticationError, match=r"^session token expired$"):
        verify_customer_token(SECRET, token, now=expires_at)


def test_a_forged_or_altered_token_is_refused() -> None:
    mine, other = uuid.uuid4(), uuid.uuid4()
    now = datetime.now(UTC)
    token, _ = issue_customer_token(SECRET, mine, timedelta(hours=1), now=now)
    with pytest.raises(AuthenticationError, match=r"^invalid session token$"):
        verify_customer_token("another secret " + "x" * 32, token)
    # Claims of another customer under this token's signature.
    other_token, _ = issue_customer_token(SECRET, other, timedelta(hours=1), now=now)
    body = other_token.removeprefix("cst_").split(".")[0]
    signature = token.split(".")[1]
    with pytest.raises(AuthenticationError, match=r"^invalid session token$"):
        verify_customer_token(SECRET, f"cst_{body}.{signature}")
    with pytest.raises(AuthenticationError, match=r"^malformed session token$"):
        verify_customer_token(SECRET, token.replace(".", ""))


async def test_create_customer_session_checks_its_input(gql: GraphQLClient, db: Database) -> None:
    await setup_model(gql, PLAN_A)
    customer_id = await new_customer(gql, "sess")
    document = """mutation($e: String!, $s: Int) { createCustomerSession(
        input: {customerExternalId: $e, expiresInSeconds: $s}) {
        __typename ... on CustomerSessionCreated { token expiresAt }
        ... on UserError { code message field } } }"""
    for seconds in (0, -5, 7 * 24 * 3600 + 1):
        response = await gql(document, {"e": "sess", "s": seconds})
        assert response.body == {
            "data": {
                "createCustomerSession": {
                    "__typename": "InvalidInput",
                    "code": "INVALID_INPUT",
                    "message": "expiresInSeconds must be between 1 and 604800",
                    "field": ["input", "expiresInSeconds"],
                }
            }
        }
    response = await gql(document, {"e": "nobody", "s": 60})
    assert response.body == {
        "data": {
            "createCustomerSession": {
                "__typename": "NotFound",
                "code": "NOT_FOUND",
                "message": "no customer with externalId 'nobody'",
                "field": ["input", "customerExternalId"],
            }
        }
    }

    before = datetime.now(UTC).replace(microsecond=0)
    created = (await gql(document, {"e": "sess", "s": 120})).body["data"]["createCustomerSession"]
    after = datetime.now(UTC)
    expires_at = datetime.fromisoformat(created["expiresAt"])
    assert before + timedelta(seconds=120) <= expires_at <= after + timedelta(seconds=120)
    response = await gql("{ billing { customer { id externalId } } }", token=created["token"])
    assert response.body == {
        "data": {"billing": {"customer": {"id": customer_id, "externalId": "sess"}}}
    }
    # The default lifetime is an hour.
    created = (await gql(document, {"e": "sess", "s": None})).body["data"]["createCustomerSession"]
    lifetime = datetime.fromisoformat(created["expiresAt"]) - datetime.now(UTC)
    assert timedelta(minutes=59) < lifetime <= timedelta(hours=1)


# ------------------------------------------------------------------ the token secret


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GATEWAY_TOKEN_SECRET", "GATEWAY_ENV", "DATABASE_URL", "GATEWAY_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)


def test_production_requires_a_token_secret(clean_env: None) -> None:
    url = "postgresql://gateway@db/gateway"
    with pytest.raises(ValidationError, match="GATEWAY_TOKEN_SECRET must be set"):
        Settings(gateway_env="production", database_url=url)
    with pytest.raises(ValidationError, match="GATEWAY_TOKEN_SECRET must be set"):
        Settings(gateway_env="production", database_url=url, gateway_token_secret="short")
    settings = Settings(gateway_env="production", database_url=url, gateway_token_secret=SECRET)
    assert settings.token_secret() == SECRET


def test_development_generates_a_secret_once_and_keeps_it(clean_env: None, tmp_path: Path) -> None:
    first = Settings(gateway_data_dir=tmp_path).token_secret()
    path = tmp_path / "token-secret"
    assert path.read_text() == first
    assert len(first) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Settings(gateway_data_dir=tmp_path).token_secret() == first
