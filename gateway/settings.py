"""All configuration in one pydantic-settings object, read from the environment."""

from __future__ import annotations

import ipaddress
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _split(value: str) -> list[str]:
    return [entry.strip() for entry in value.split(",") if entry.strip()]


def _default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "billing-gateway"


class Settings(BaseSettings):
    """Gateway settings. Every field maps to an upper-case environment variable."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", case_sensitive=False)

    # Where the data lives.
    database_url: str | None = Field(
        default=None,
        description="PostgreSQL URL. Unset: an embedded PostgreSQL in GATEWAY_DATA_DIR is used.",
    )
    gateway_data_dir: Path = Field(
        default_factory=_default_data_dir,
        description="Directory of the embedded PostgreSQL data and the generated token secret.",
    )

    # Mode and secrets.
    gateway_env: Literal["development", "production"] = Field(
        default="development",
        description="production refuses to start without an explicit GATEWAY_TOKEN_SECRET.",
    )
    gateway_token_secret: str | None = Field(
        default=None,
        description="HMAC secret for customer session tokens (>= 32 characters).",
    )

    # HTTP.
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8000
    gateway_workers: int = 1
    gateway_trusted_proxies: str | None = Field(
        default=None,
        description=(
            "Proxies whose X-Forwarded-For and X-Forwarded-Proto are believed: comma-separated"
            " addresses or CIDR networks (unset: none, the TCP peer is the client)."
        ),
    )

    # Database pool.
    gateway_pool_min_size: int = 2
    gateway_pool_max_size: int = 10

    # Billing rules.
    gateway_backdating_days: int = Field(
        default=35, ge=0, description="Oldest usageDate accepted, in days before now."
    )
    gateway_future_tolerance_seconds: int = Field(
        default=300, ge=0, description="How far in the future a usageDate may lie."
    )
    gateway_max_properties_bytes: int = 8192
    gateway_max_properties_depth: int = Field(
        default=32,
        ge=1,
        le=200,
        description="How deep an event's properties may nest ({} is 1); deeper is InvalidInput.",
    )
    gateway_max_batch_size: int = Field(
        default=1000,
        ge=1,
        description="Most usage events in one request, over all its createUsageEvent(s) fields.",
    )

    # GraphQL hardening.
    gateway_introspection: bool = True
    gateway_graphiql: bool = True
    gateway_max_depth: int = 12
    gateway_max_aliases: int = 200
    gateway_max_tokens: int = 20000
    gateway_max_fragment_spreads: int = Field(
        default=1000,
        ge=0,
        description="Fragment spreads per document, counted as if every fragment were inlined.",
    )
    gateway_max_expanded_selections: int = Field(
        default=20000,
        ge=0,
        description="Selections per document, counted as if every fragment were inlined.",
    )
    gateway_max_body_bytes: int = 2 * 1024 * 1024
    gateway_rate_limit_per_minute: int = Field(
        default=6000,
        ge=0,
        description=(
            "Units per caller per minute per process: a request costs one, or one per usage"
            " event it records; 0 disables."
        ),
    )

    # createUsageEvent(s) documents executed by the compiled path (gateway.api.graphql_fast).
    gateway_compiled_execution: bool = True

    # Cache of the catalog (slug -> id maps); invalidated by LISTEN/NOTIFY, bounded by this TTL.
    gateway_catalog_cache_seconds: float = 60.0

    # How often each process rewrites expired reservation holds to EXPIRED (0: never). Only
    # tidying: an expired hold counts as freed on every read whether or not this ran.
    gateway_reservation_sweep_seconds: float = Field(default=60.0, ge=0)

    # A void records again every live event after it on the same meter of the subscription
    # (so the result equals a world without it): at most this many, or the void is refused.
    gateway_void_max_later_events: int = Field(default=10_000, ge=0)

    @field_validator("gateway_trusted_proxies")
    @classmethod
    def _proxies_are_addresses(cls, value: str | None) -> str | None:
        for entry in _split(value or ""):
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError as exc:
                raise ValueError(
                    f"GATEWAY_TRUSTED_PROXIES: {entry!r} is not an address or network"
                ) from exc
        return value

    def trusted_proxies(self) -> list[str]:
        """The addresses and networks of ``GATEWAY_TRUSTED_PROXIES``."""
        return _split(self.gateway_trusted_proxies or "")

    @model_validator(mode="after")
    def _production_requires_secrets(self) -> Settings:
        if self.gateway_env == "production":
            if not self.gateway_token_secret or len(self.gateway_token_secret) < 32:
                raise ValueError(
                    "GATEWAY_TOKEN_SECRET must be set (at least 32 characters) in production mode"
                )
            if not self.database_url:
                raise ValueError("DATABASE_URL must be set in production mode")
        return self

    def token_secret(self) -> str:
        """The token secret: configured, or generated once and kept in the data directory."""
        if self.gateway_token_secret:
            return self.gateway_token_secret
        path = self.gateway_data_dir / "token-secret"
        if path.exists():
            return path.read_text().strip()
        self.gateway_data_dir.mkdir(parents=True, exist_ok=True)
        value = secrets.token_urlsafe(48)
        path.write_text(value)
        path.chmod(0o600)
        return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
