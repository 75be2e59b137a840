"""Hostile input at /graphql: never a 5xx, never a stack trace or SQL, never a write.

Malformed documents, variables of the wrong types, huge strings, deep nesting and enormous
alias counts, sent as every kind of caller. Each example checks the response (a JSON body,
a status the gateway documents, no INTERNAL_SERVER_ERROR, nothing that looks like a stack
trace or SQL) and that the database is exactly as it was.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gateway.storage.db import Database
from tests.conftest import GraphQLClient
from tests.test_auth_matrix import World, snapshot
from tests.test_auth_matrix import world as world

FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)
STATUSES = {200, 400, 401, 403, 405, 413, 415}
CODES = {
    "GRAPHQL_PARSE_FAILED",
    "GRAPHQL_VALIDATION_FAILED",
    "BAD_USER_INPUT",
    "UNAUTHENTICATED",
    "FORBIDDEN",
    "BAD_REQUEST",
    "PAYLOAD_TOO_LARGE",
    "UNSUPPORTED_MEDIA_TYPE",
    "METHOD_NOT_ALLOWED",
}
LEAKS = (
    "Traceback",
    'File "/',
    '.py", line',
    "asyncpg",
    "psycopg",
    "sqlalchemy",
    "SELECT ",
    "INSERT INTO",
    "UPDATE ",
    "DELETE FROM",
    "plpgsql",
    "Internal Server Error",
)
CALLERS = ("none", "secret_key", "customer_a")


class Checker:
    """Posts to /graphql and checks every answer; the database must not change."""

    def __init__(self, http: httpx.AsyncClient, db: Database, world: World) -> None:
        self.http = http
        self.db = db
        self.world = world
        self.before: dict[str, str] | None = None

    async def start(self) -> None:
        self.before = await snapshot(self.db)

    async def post(
        self,
        caller: str,
        body: Any = None,
        *,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        sent = dict(headers or {})
        token = self.world.tokens[caller]
        if token is not None:
            sent["authorization"] = f"Bearer {token}"
        if content is None:
            content = json.dumps(body).encode()
        sent.setdefault("content-type", "application/json")
        response = await self.http.post("/graphql", content=content, headers=sent)
        return await self.check(response)

    async def check(self, response: httpx.Response) -> tuple[int, dict[str, Any]]:
        assert response.status_code in STATUSES, (response.status_code, response.text[:500])
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        assert isinstance(body, dict)
        assert set(body) <= {"data", "errors", "extensions"}
        assert set(body.get("extensions") or {}) <= {"warnings"}  # hints, never errors
        for error in body.get("errors") or []:
            assert error["extensions"]["code"] in CODES, error
        for leak in LEAKS:
            assert leak not in response.text, (leak, response.text[:500])
        assert await snapshot(self.db) == self.before
        return response.status_code, body


@pytest.fixture
async def checker(http: httpx.AsyncClient, db: Database, world: World) -> Checker:
    check = Checker(http, db, world)
    await check.start()
    return check


# ------------------------------------------------------------------ malformed documents

# Pieces of GraphQL, including every query root field but no mutation field (so that a
# document assembled by chance can never be a write).
PIECES = [
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    ":",
    "!",
    "$",
    "=",
    "@",
    "...",
    "|",
    "&",
    ",",
    "query",
    "mutation",
    "subscription",
    "fragment",
    "on",
    "true",
    "false",
    "null",
    "billing",
    "usageBalance",
    "customers",
    "customer",
    "edges",
    "node",
    "id",
    "externalId",
    "meterSlug",
    "customerExternalId",
    "subscriptionId",
    "first",
    "after",
    "__schema",
    "__type",
    "__typename",
    "name",
    "fields",
    "Query",
    "Mutation",
    "Billing",
    "Int",
    "String",
    "ID",
    "skip",
    "include",
    "if",
    "x",
    '"api_calls"',
    '"cust-b"',
    '"cust-a"',
    "1",
    "-1",
    "1.5",
    "99999999999999999999",
    '"\\u0000"',
    '"""block"""',
    "#comment\n",
    "\u00e9",
    "\x00",
]
documents = st.one_of(
    st.text(max_size=400),
    st.lists(st.sampled_from(PIECES), max_size=60).map(" ".join),
)


@FUZZ
@given(
    document=documents,
    caller=st.sampled_from(CALLERS),
    operation=st.one_of(st.none(), st.text(max_size=20)),
)
async def test_malformed_documents(
    checker: Checker, document: str, caller: str, operation: str | None
) -> None:
    status, body = await checker.post(caller, {"query": document, "operationName": operation})
    if status == 200 and "errors" not in body:
        assert body["data"] is not None


@FUZZ
@given(
    content=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode)),
    content_type=st.sampled_from(
        [
            "application/json",
            "text/plain",
            "application/graphql",
            "multipart/form-data; boundary=x",
            "",
        ]
    ),
    accept=st.sampled_from(["application/json", "*/*", ""]),
)
async def test_malformed_bodies(
    checker: Checker, content: bytes, content_type: str, accept: str
) -> None:
    await checker.post(
        "secret_key", content=content, headers={"content-type": content_type, "accept": accept}
    )


# ------------------------------------------------------------------ variables of wrong types

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)


def maybe_valid_usage_input(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("target"), dict)


# (document, variable name, may a value be valid for this caller?) -- a value the caller could
# write with is rejected by `assume`.
READS = [
    """query($m: String!, $c: String, $s: ID) { usageBalance(meterSlug: $m,
         customerExternalId: $c, subscriptionId: $s) { availableBalance } }""",
    "query($n: Int, $a: String) { customers(first: $n, after: $a) { edges { cursor } } }",
    "query($c: String, $f: String!) { billing(customerExternalId: $c) { featureAccess(featureSlug: $f)"
    " usageBalances(subscriptionId: $c) { usedBalance } } }",
]


@FUZZ
@given(
    document=st.sampled_from(READS),
    caller=st.sampled_from(CALLERS),
    variables=st.dictionaries(
        st.sampled_from(["m", "c", "s", "n", "a", "f", "zz"]), json_values, max_size=6
    ),
)
async def test_wrong_variables_in_queries(
    checker: Checker, document: str, caller: str, variables: dict[str, Any]
) -> None:
    await checker.post(caller, {"query": document, "variables": variables})


WRITES = {
    "createUsageEvent": "mutation($v: CreateUsageEventInput!) { createUsageEvent(input: $v) "
    "{ __typename } }",
    "createUsageEvents": "mutation($v: [CreateUsageEventInput!]!) { createUsageEvents(input: $v)"
    " { __typename } }",
    "createCustomer": "mutation($v: CreateCustomerInput!) { createCustomer(input: $v) "
    "{ __typename } }",
    "grantUsageCredits": "mutation($v: GrantUsageCreditsInput!) { grantUsageCredits(input: $v) "
    "{ __typename } }",
    "setupPricingModel": "mutation($v: SetupPricingModelInput!) { setupPricingModel(input: $v) "
    "{ __typename } }",
}


def could_write(field: str, value: Any, caller: str) -> bool:
    """Whether `value` might coerce to an input that writes (such examples are skipped)."""
    if caller != "secret_key" and field not in ("createUsageEvent", "createUsageEvents"):
        return False  # refused before execution whatever the value
    if field == "createUsageEvent":
        return maybe_valid_usage_input(value)
    if field == "createUsageEvents":
        items = value if isinstance(value, list) else [value]
        return all(maybe_valid_usage_input(i) for i in items) and bool(items)
    if field == "createCustomer":
        return isinstance(value, dict) and isinstance(value.get("externalId"), str)
    if field == "grantUsageCredits":
        return isinstance(value, dict) and isinstance(value.get("subscriptionId"), str | int)
    return isinstance(value, dict) and isinstance(value.get("definition"), str)


@FUZZ
@given(field=st.sampled_from(sorted(WRITES)), caller=st.sampled_from(CALLERS), value=json_values)
async def test_wrong_variables_in_mutations(
    checker: Checker, field: str, caller: str, value: Any
) -> None:
    assume(not could_write(field, value, caller))
    status, body = await checker.post(caller, {"query": WRITES[field], "variables": {"v": value}})
    if caller == "none":
        assert status == 401
    elif caller == "customer_a" and field not in ("createUsageEvent", "createUsageEvents"):
        assert (status, body["errors"][0]["extensions"]["code"]) == (403, "FORBIDDEN")
    elif field == "createUsageEvents" and value == []:
        assert (status, body) == (200, {"data": {"createUsageEvents": []}})  # nothing to record
    else:
        assert (status, body["data"]) == (200, None)
        assert [e["extensions"]["code"] for e in body["errors"]] == ["BAD_USER_INPUT"] * len(
            body["errors"]
        )


# ------------------------------------------------------------------ huge strings


@FUZZ
@given(
    size=st.integers(min_value=1_000, max_value=1_500_000),
    char=st.sampled_from(["x", "\u00e9", "\U0001f600", "'", '"', "\\", "\x00", " "]),
    where=st.sampled_from(["variable", "literal", "header", "operationName"]),
    caller=st.sampled_from(CALLERS),
)
async def test_huge_strings(
    checker: Checker, size: int, char: str, where: str, caller: str
) -> None:
    huge = char * size
    query = """query($c: String, $m: String!) { usageBalance(meterSlug: $m,
                 customerExternalId: $c) { availableBalance } }"""
    body: dict[str, Any] = {"query": query, "variables": {"c": "cust-a", "m": "api_calls"}}
    headers: dict[str, str] = {}
    if where == "variable":
        body["variables"] = {"c": huge, "m": huge}
    elif where == "literal":
        body = {
            "query": "{ billing(customerExternalId: " + json.dumps(huge) + ") { customer { id } } }"
        }
    elif where == "operationName":
        body["operationName"] = huge
    encoded = json.dumps(body).encode()
    if where == "header":
        headers["x-padding"] = "x" * min(size, 60_000)
    status, answer = await checker.post(caller, content=encoded, headers=headers)
    if len(encoded) > 2 * 1024 * 1024:
        assert (status, answer["errors"][0]["extensions"]["code"]) == (413, "PAYLOAD_TOO_LARGE")


@FUZZ
@given(size=st.integers(min_value=1_000, max_value=200_000))
async def test_huge_bearer_tokens(checker: Checker, size: int) -> None:
    for prefix in ("sk_", "cst_", ""):
        response = await checker.http.post(
            "/graphql",
            json={"query": "{ __typename }"},
            headers={"authorization": "Bearer " + prefix + "a" * size},
        )
        status, _ = await checker.check(response)
        assert status == 401


# ------------------------------------------------------------------ deep nesting and aliases


@FUZZ
@given(
    depth=st.integers(min_value=1, max_value=3_000),
    kind=st.sampled_from(["selection", "list", "object", "variables"]),
    caller=st.sampled_from(CALLERS),
)
async def test_deep_nesting(checker: Checker, depth: int, kind: str, caller: str) -> None:
    if kind == "selection":
        chain = ["customers", "edges", "node"] + ["billing", "customer"] * depth
        inner = "__typename"
        for name in reversed(chain[:depth]):
            inner = f"{name} {{ {inner} }}"
        body: dict[str, Any] = {"query": "{ " + inner + " }"}
    elif kind == "list":
        body = {
            "query": "{ usageBalance(meterSlug: "
            + "[" * depth
            + '"x"'
            + "]" * depth
            + ") { usedBalance } }"
        }
    elif kind == "object":
        body = {
            "query": "{ billing(customerExternalId: "
            + "{a: " * depth
            + "1"
            + "}" * depth
            + ") { customer { id } } }"
        }
    else:
        nested: Any = "x"
        for _ in range(depth):
            nested = {"a": [nested]}
        body = {
            "query": "query($c: String) { billing(customerExternalId: $c) { customer { id } } }",
            "variables": {"c": nested},
        }
    content = json.dumps(body).encode() if kind != "variables" else None
    if content is None:
        # json.dumps would hit Python's recursion limit first: build the text by hand.
        content = (
            b'{"query": '
            + json.dumps(body["query"]).encode()
            + b', "variables": {"c": '
            + b'{"a": [' * depth
            + b'"x"'
            + b"]}" * depth
            + b"}}"
        )
    _status, answer = await checker.post(caller, content=content)
    if caller == "secret_key" and kind == "selection":
        too_deep = depth > 12
        assert ("errors" in answer) == too_deep, answer


@FUZZ
@given(
    count=st.integers(min_value=0, max_value=3_000),
    field=st.sampled_from(["__typename", "billing { customer { id } }"]),
    caller=st.sampled_from(("secret_key", "customer_a")),
)
async def test_enormous_alias_counts(checker: Checker, count: int, field: str, caller: str) -> None:
    document = "{ __typename " + " ".join(f"a{i}: {field}" for i in range(count)) + " }"
    status, body = await checker.post(caller, {"query": document})
    assert status == 200
    tokens = 3 + count * (3 if field == "__typename" else 9)
    if tokens > 20_000:
        assert body == {
            "data": None,
            "errors": [
                {
                    "message": "Syntax Error: Document contains more than 20000 tokens. Parsing aborted.",
                    "locations": body["errors"][0]["locations"],
                    "extensions": {"code": "GRAPHQL_PARSE_FAILED"},
                }
            ],
        }
    elif count <= 200:
        assert "errors" not in body
        assert len(body["data"]) == count + 1
    else:
        assert body == {
            "data": None,
            "errors": [
                {
                    "message": f"{count} aliases found. Allowed: 200",
                    "extensions": {"code": "GRAPHQL_VALIDATION_FAILED"},
                }
            ],
        }


async def test_the_customer_token_fixture_reads_its_own_billing(
    gql: GraphQLClient, world: World
) -> None:
    """The fuzzing above uses customer A's token: it is a valid one."""
    response = await gql(
        "{ billing { customer { externalId } } }", token=world.tokens["customer_a"]
    )
    assert response.body == {"data": {"billing": {"customer": {"externalId": "cust-a"}}}}
