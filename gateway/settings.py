"""All configuration in one pydantic-settings object, read from the environment."""

from __future__ import annotations

import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


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

    # Database pool.
    gateway_pool_min_size: int = 2
    gateway_pool_max_size: int = 10
    gateway_transaction_pooling: bool = Field(
        default=False,
        description="DATABASE_URL is a pooler in transaction mode (PgBouncer): no prepared"
        " statements, and GATEWAY_DIRECT_DATABASE_URL is required.",
    )
    gateway_direct_database_url: str | None = Field(
        default=None,
        description="Direct PostgreSQL URL for LISTEN and migrations; unset: DATABASE_URL.",
    )

    # Timeouts: no request waits without bound (docs/operations.md, "Timeouts").
    gateway_pool_acquire_timeout_seconds: float = Field(
        default=5.0, ge=0, description="Longest wait for a pooled connection; 0: no limit."
    )
    gateway_statement_timeout_seconds: float = Field(
        default=10.0, ge=0, description="PostgreSQL statement_timeout; 0: no limit."
    )
    gateway_lock_timeout_seconds: float = Field(
        default=2.0, ge=0, description="PostgreSQL lock_timeout; 0: no limit."
    )
    gateway_writers_per_meter: int = Field(
        default=2,
        ge=1,
        description="Usage writes in flight per (subscription, meter) per process.",
    )
    gateway_retry_after_seconds: int = Field(
        default=1, ge=1, description="Retry-After of a 503 (timeout or database outage)."
    )

    # Billing rules.
    gateway_backdating_days: int = Field(
        default=35, ge=0, description="Oldest usageDate accepted, in days before now."
    )
    gateway_future_tolerance_seconds: int = Field(
        default=300, ge=0, description="How far in the future a usageDate may lie."
    )
    gateway_max_properties_bytes: int = 8192
    gateway_max_batch_size: int = 1000

    # GraphQL hardening.
    gateway_introspection: bool = True
    gateway_graphiql: bool = True
    gateway_max_depth: int = 12
    gateway_max_aliases: int = 200
    gateway_max_tokens: int = 20000
    gateway_max_body_bytes: int = 2 * 1024 * 1024
    gateway_rate_limit_per_minute: int = Field(
        default=6000, ge=0, description="Requests per caller per minute per process; 0 disables."
    )

    # createUsageEvent(s) documents executed by the compiled path (gateway.api.graphql_fast).
    gateway_compiled_execution: bool = True

    # Cache of the catalog (slug -> id maps); invalidated by LISTEN/NOTIFY, bounded by this TTL.
    gateway_catalog_cache_seconds: float = 60.0

    @model_validator(mode="after")
    def _production_requires_secrets(self) -> Settings:
        if self.gateway_env == "production":
            if not self.gateway_token_secret or len(self.gateway_token_secret) < 32:
                raise ValueError(
                    "GATEWAY_TOKEN_SECRET must be set (at least 32 characters) in production mode"
                )
            if not self.database_url:
                raise ValueError("DATABASE_URL must be set in production mode")
        if self.gateway_transaction_pooling and not self.gateway_direct_database_url:
            raise ValueError(
                "GATEWAY_TRANSACTION_POOLING needs GATEWAY_DIRECT_DATABASE_URL: a direct"
                " PostgreSQL URL (not through the pooler) for LISTEN and migrations"
            )
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
