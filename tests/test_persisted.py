"""Persisted documents over HTTP: Apollo APQ, trusted documents; the SDL endpoint."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.api.app import create_app
from gateway.api.persisted import ManifestError
from gateway.settings import Settings
from gateway.storage.db import Database
from schema import SDL_PATH
from tests.conftest import GraphQLClient
from tests.factories import create_customer, session_token, setup_pricing

QUERY = "query Name { billing { customer { externalId } } }"
NOT_FOUND = {
    "data": None,
    "errors": [
        {"message": "PersistedQueryNotFound", "extensions": {"code": "PERSISTED_QUERY_NOT_FOUND"}}
    ],
}


def sha(document: str) -> str:
    return hashlib.sha256(document.encode()).hexdigest()


def apq(document: str) -> dict[str, Any]:
    return {"persistedQuery": {"version": 1, "sha256Hash": sha(document)}}


@asynccontextmanager
async def gateway(settings: Settings, **changes: Any) -> AsyncIterator[httpx.AsyncClient]:
    application = create_app(settings.model_copy(update=changes), settings.database_url or "")
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(application.router.lifespan_context(application))
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=application), base_url="http://gateway.test"
        )
        yield await stack.enter_async_context(client)


async def test_apq_round_trip_over_post(gql: GraphQLClient) -> None:
    await setup_pricing(gql)
    await create_customer(gql, "user-1")
    token = await session_token(gql, "user-1")
    headers = {"authorization": f"Bearer {token}"}
    document = QUERY + " # post"
    miss = await gql.http.post("/graphql", json={"extensions": apq(document)}, headers=headers)
    assert (miss.status_code, miss.json()) == (200, NOT_FOUND)
    registered = await gql.http.post(
        "/graphql", json={"query": document, "extensions": apq(document)}, headers=headers
    )
    expected = {"data": {"billing": {"customer": {"externalId": "user-1"}}}}
    assert (registered.status_code, registered.json()) == (200, expected)
    hit = await gql.http.post("/graphql", json={"extensions": apq(document)}, headers=headers)
    assert (hit.status_code, hit.json()) == (200, expected)
    # graphql-response+json: a miss is a request error, 400 without a data entry
    modern = await gql.http.post(
        "/graphql",
        json={"extensions": apq(document + " ")},
        headers={**headers, "accept": "application/graphql-response+json"},
    )
    assert (modern.status_code, modern.json()) == (400, {"errors": NOT_FOUND["errors"]})


async def test_apq_round_trip_over_get(gql: GraphQLClient) -> None:
    await setup_pricing(gql)
    await create_customer(gql, "user-1")
    headers = {"authorization": f"Bearer {gql.token}"}
    document = '{ billing(customerExternalId: "user-1") { customer { externalId } } } # get'
    params = {"extensions": json.dumps(apq(document))}
    miss = await gql.http.get("/graphql", params=params, headers=headers)
    assert (miss.status_code, miss.json()) == (200, NOT_FOUND)
    registered = await gql.http.get(
        "/graphql", params={**params, "query": document}, headers=headers
    )
    expected = {"data": {"billing": {"customer": {"externalId": "user-1"}}}}
    assert (registered.status_code, registered.json()) == (200, expected)
    hit = await gql.http.get("/graphql", params=params, headers=headers)
    assert (hit.status_code, hit.json()) == (200, expected)


async def test_a_hash_that_is_not_the_query_s_is_refused_and_not_registered(
    gql: GraphQLClient,
) -> None:
    headers = {"authorization": f"Bearer {gql.token}"}
    claimed = "{ __typename } # claimed"
    forged = await gql.http.post(
        "/graphql",
        json={"query": "{ customers { totalCount } }", "extensions": apq(claimed)},
        headers=headers,
    )
    assert (forged.status_code, forged.json()) == (
        400,
        {
            "errors": [
                {
                    "message": "provided sha does not match query",
                    "extensions": {"code": "BAD_REQUEST"},
                }
            ]
        },
    )
    after = await gql.http.post("/graphql", json={"extensions": apq(claimed)}, headers=headers)
    assert after.json() == NOT_FOUND
    for extensions, message in [
        ({"persistedQuery": {"version": 2, "sha256Hash": sha(claimed)}}, "Unsupported"),
        ({"persistedQuery": {"version": 1, "sha256Hash": "abc"}}, "must be a SHA-256 in hex"),
    ]:
        bad = await gql.http.post("/graphql", json={"extensions": extensions}, headers=headers)
        assert bad.status_code == 400
        assert message in bad.json()["errors"][0]["message"]


# ------------------------------------------------------------------ trusted documents

LISTED = "query Mine { billing { customer { externalId } } }"
RECORD = """mutation { createUsageEvent(input: {target: {usageMeterSlug: "generations"}}) {
  __typename } }"""


async def test_trusted_documents_refuse_other_operations_of_customer_tokens(
    gql: GraphQLClient, db: Database, settings: Settings, tmp_path: Path
) -> None:
    await setup_pricing(gql)
    await create_customer(gql, "user-1")
    token = await session_token(gql, "user-1")
    manifest = tmp_path / "persisted-documents.json"
    manifest.write_text(json.dumps({sha(LISTED): LISTED}))
    customer = {"authorization": f"Bearer {token}"}
    secret = {"authorization": f"Bearer {gql.token}"}
    mine = {"data": {"billing": {"customer": {"externalId": "user-1"}}}}
    async with gateway(settings, gateway_trusted_documents=manifest) as http:
        for body in (
            {"documentId": sha(LISTED)},
            {"documentId": f"sha256:{sha(LISTED)}"},
            {"extensions": apq(LISTED)},
            {"query": LISTED},  # the listed document, character for character
        ):
            response = await http.post("/graphql", json=body, headers=customer)
            assert (response.status_code, response.json()) == (200, mine), body
        listed_get = await http.get(
            "/graphql", params={"documentId": sha(LISTED)}, headers=customer
        )
        assert (listed_get.status_code, listed_get.json()) == (200, mine)

        free = await http.post("/graphql", json={"query": RECORD}, headers=customer)
        assert (free.status_code, free.json()["errors"][0]["extensions"]) == (
            200,
            {"code": "QUERY_NOT_IN_SAFELIST"},
        )
        assert free.json()["data"] is None
        unknown = await http.post(
            "/graphql", json={"query": RECORD, "extensions": apq(RECORD)}, headers=customer
        )
        assert unknown.json()["errors"][0]["extensions"] == {"code": "PERSISTED_QUERY_NOT_IN_LIST"}
        by_hash = await http.post("/graphql", json={"documentId": sha(RECORD)}, headers=customer)
        assert by_hash.json()["errors"][0]["extensions"] == {"code": "PERSISTED_QUERY_NOT_IN_LIST"}
        assert await db.fetchval("SELECT count(*) FROM usage_events") == 0
        # nothing was registered for the customer's attempt
        secret_hash = await http.post("/graphql", json={"extensions": apq(RECORD)}, headers=secret)
        assert secret_hash.json()["errors"][0]["extensions"] == {
            "code": "PERSISTED_QUERY_NOT_FOUND"
        }
        # a secret key still sends free documents
        free_key = await http.post(
            "/graphql",
            json={"query": '{ billing(customerExternalId: "user-1") { customer { externalId } } }'},
            headers=secret,
        )
        assert (free_key.status_code, free_key.json()) == (200, mine)


async def test_a_manifest_with_a_wrong_hash_stops_the_start(
    settings: Settings, tmp_path: Path
) -> None:
    manifest = tmp_path / "persisted-documents.json"
    manifest.write_text(json.dumps({sha("{ a }"): "{ b }"}))
    with pytest.raises(ManifestError, match="is not the SHA-256 of its document"):
        create_app(settings.model_copy(update={"gateway_trusted_documents": manifest}), "")
    manifest.write_text("[1]")
    with pytest.raises(ManifestError, match="is not a JSON object of hash -> document"):
        create_app(settings.model_copy(update={"gateway_trusted_documents": manifest}), "")


# ------------------------------------------------------------------ the SDL


async def test_the_sdl_is_served_where_introspection_is(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    response = await http.get("/graphql/schema.graphql")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.text == SDL_PATH.read_text()
    async with gateway(settings, gateway_introspection=False) as closed:
        refused = await closed.get("/graphql/schema.graphql")
        assert refused.status_code == 404
