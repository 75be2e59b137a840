from __future__ import annotations


async def test_introspection_works_without_credentials(gql) -> None:
    response = await gql("{ __schema { queryType { name } } }", token=None)
    assert response.status == 200
    assert response.body == {"data": {"__schema": {"queryType": {"name": "Query"}}}}


async def test_a_query_without_credentials_is_401(gql) -> None:
    response = await gql('{ billing(customerExternalId: "u1") { customer { id } } }', token=None)
    assert response.status == 401
    assert response.errors is not None
    assert [e["extensions"]["code"] for e in response.errors] == ["UNAUTHENTICATED"]
    assert response.body["data"] is None  # refused before execution: no resolver ran
