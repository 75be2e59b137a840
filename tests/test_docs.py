"""The docs stay true: every setting is documented with its default, links resolve, and the
getting-started mutation works."""

from __future__ import annotations

import re
from pathlib import Path

from gateway.demo import prepare_demo
from gateway.settings import Settings
from gateway.storage.db import Database
from tests.conftest import GraphQLClient

DOCS = Path(__file__).parent.parent / "docs"
OPERATIONS = (DOCS / "operations.md").read_text()


def _settings_table() -> dict[str, str]:
    rows = re.findall(r"^\| `([A-Z_]+)` \| (.+?) \| .+ \|$", OPERATIONS, re.M)
    return dict(rows)


def test_every_setting_is_in_the_operations_table_with_its_default() -> None:
    table = _settings_table()
    fields = Settings.model_fields
    assert set(table) == {name.upper() for name in fields}, (
        "docs/operations.md's settings table must list exactly the fields of gateway/settings.py"
    )
    for name, field in fields.items():
        documented = table[name.upper()]
        if field.default_factory is not None:
            continue  # GATEWAY_DATA_DIR: a path under the home directory
        default = field.default
        if default is None:
            assert documented == "unset", name
        elif isinstance(default, bool):
            assert documented == f"`{str(default).lower()}`", name
        elif isinstance(default, float) and default.is_integer():
            assert documented == f"`{int(default)}`", name
        else:
            assert documented == f"`{default}`", name


def test_relative_links_of_the_docs_resolve() -> None:
    for page in DOCS.glob("*.md"):
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target:
                continue
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"
    for name in ("getting-started.md", "client-guide.md", "operations.md"):
        assert "schema/schema.graphql" in (DOCS / name).read_text(), name


async def test_the_getting_started_mutation_works(
    gql: GraphQLClient, db: Database, settings: Settings
) -> None:
    text = (DOCS / "getting-started.md").read_text()
    (block,) = re.findall(r"```graphql\n(.*?)```", text, re.S)
    mutation = "\n".join(
        line[3:] if line.startswith("   ") else line for line in block.splitlines()
    )
    demo = await prepare_demo(db, settings, settings.token_secret())
    response = await gql(mutation, token=demo.customer_token)
    assert response.errors is None
    assert response.data == {
        "createUsageEvent": {
            "__typename": "UsageEventRecorded",
            "balance": {"availableBalance": 96, "usedBalance": 4},
        }
    }
