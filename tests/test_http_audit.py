"""The GraphQL over HTTP audit: graphql-http's serverAudits against a live gateway process.

The audit package is installed in ``tests/http_audit/`` (its own package.json and lock file)
with ``npm ci`` the first time; the test is skipped, saying why, only when Node.js or npm is
missing or the install fails. Every audit, MUSTs and SHOULDs alike, must pass: no warnings.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.servers import gateway_processes

AUDIT_DIR = Path(__file__).parent / "http_audit"


def _audit_package() -> None:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("the GraphQL over HTTP audit needs Node.js and npm, which are not installed")
    if (AUDIT_DIR / "node_modules" / "graphql-http").is_dir():
        return
    install = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund"],
        cwd=AUDIT_DIR,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if install.returncode != 0:
        pytest.skip(
            f"npm could not install the audit package graphql-http: {install.stderr[-500:]}"
        )


def test_the_graphql_over_http_audit_passes_without_warnings(database_url: str) -> None:
    _audit_package()
    with gateway_processes(database_url, 1) as (url,):
        run = subprocess.run(
            ["node", str(AUDIT_DIR / "audit.mjs"), url + "/graphql"],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
    results = json.loads(run.stdout)
    assert len(results) == 61  # the audits of graphql-http 1.23.1
    assert [r for r in results if r["status"] != "ok"] == []
