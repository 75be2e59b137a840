"""All configuration in one pydantic-settings object, read from the environment."""

from __future__ import annotations

import ipaddress
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gateway.secret_policy import secret_problem


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
        description="production refuses placeholder or weak secrets and, unless the settings"
        " below turn them on, serves no GraphiQL, introspection or field suggestions.",
    )
    gateway_token_secret: str | None = Field(
        default=None,
        description="HMAC secret for customer session tokens (>= 32 characters; in production"
        " random: no placeholder, at least 10 distinct characters, 3 bits per character).",
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

    # Browsers on other origins (gateway.api.app: Starlette's CORSMiddleware).
    gateway_cors_origins: str | None = Field(
        default=None,
        description=(
            "Origins whose pages may call the gateway from a browser: comma-separated"
            " (https://app.example.com, http://localhost:5173), or * for any (development"
            " only). Unset: none. Bearer tokens only, never cookies."
        ),
    )

    # Live updates (gateway.live): GraphQL subscriptions over WebSocket.
    gateway_max_subscriptions_per_connection: int = Field(
        default=20, ge=1, description="Most open subscriptions on one WebSocket connection."
    )
    gateway_subscription_init_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        description="How long a WebSocket may stay open without its connection_init.",
    )
    gateway_subscription_queue_size: int = Field(
        default=64,
        ge=1,
        description="Messages buffered per subscription for a slow client; when full, the"
        " connection is closed rather than buffered further.",
    )

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
    gateway_listen_database_urls: str | None = Field(
        default=None,
        description="Comma-separated PostgreSQL URLs to LISTEN on, each on a connection of"
        " its own: on Citus, the coordinator and every worker (a delegated function notifies"
        " on its worker). Unset: the direct URL, else DATABASE_URL.",
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
    # Group commit of createUsageEvent (gateway.billing.group_commit; docs/operations.md).
    gateway_group_commit_in_flight: int = Field(default=1, ge=0)
    gateway_group_commit_max_events: int = Field(default=100, ge=2)
    gateway_group_commit_max_wait_ms: float = Field(default=50.0, gt=0)
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
    # Unset (None): on in development, off in production (see the properties below).
    gateway_introspection: bool | None = Field(
        default=None, description="Schema introspection (for every caller, anonymous included)."
    )
    gateway_graphiql: bool | None = Field(default=None, description="The GraphiQL page.")
    gateway_field_suggestions: bool | None = Field(
        default=None, description='"Did you mean ...?" in validation and variable errors.'
    )
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
    # Documents already run by the compiled path answered without strawberry's per-request
    # pipeline (gateway.api.compiled_lane); only with compiled execution on and tracing off.
    gateway_compiled_lane: bool = True

    # Persisted documents (gateway.api.persisted).
    gateway_trusted_documents: Path | None = Field(
        default=None,
        description=(
            "A persisted-documents manifest ({sha256: document}, as graphql-codegen's client"
            " preset writes it): customer tokens may then run only its documents."
        ),
    )
    gateway_apq_cache_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=0,
        description="Document text that automatic persisted queries keep per process (LRU).",
    )

    # Cache of the catalog (slug -> id maps); invalidated by LISTEN/NOTIFY, bounded by this TTL.
    gateway_catalog_cache_seconds: float = 60.0
    # Cache of credentials (gateway.callers.auth): a revocation reaches every process by
    # LISTEN/NOTIFY within milliseconds; these bound it should a notification be lost.
    gateway_auth_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        description="Longest a process trusts a secret key or a customer's session revocation"
        " instant it read, should the notification of its revocation be lost; 0: no cache.",
    )
    gateway_auth_cache_size: int = Field(
        default=4096,
        ge=0,
        description="Valid secret keys and customers each process keeps (LRU); 0: no cache.",
    )

    # Webhook deliveries (gateway.webhooks): a worker in every process.
    gateway_webhook_worker: bool = Field(
        default=True, description="Run the webhook delivery worker in this process."
    )
    gateway_webhook_poll_seconds: float = Field(
        default=1.0, gt=0, description="How often the worker looks for due deliveries."
    )
    gateway_webhook_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Longest wait for a webhook receiver's answer."
    )
    gateway_webhook_batch_size: int = Field(
        default=20, ge=1, le=1000, description="Deliveries a worker claims and sends at once."
    )
    gateway_webhook_retry_base_seconds: float = Field(
        default=10.0,
        gt=0,
        le=60,
        description="First retry delay (doubling each attempt, with jitter: half to all of it).",
    )
    gateway_webhook_retry_max_seconds: float = Field(
        default=3600.0, gt=0, description="Longest delay between two attempts."
    )
    gateway_webhook_retry_hours: float = Field(
        default=72.0,
        ge=24,
        description="How long a delivery is retried before it is given up (at least a day).",
    )
    gateway_webhook_allow_private_networks: bool = Field(
        default=False,
        description=(
            "production: allow webhook URLs on loopback, link-local and private addresses"
            " (development always allows them)."
        ),
    )

    # Logs and traces (gateway.logs, gateway.api.tracing).
    gateway_log_format: Literal["auto", "json", "console"] = Field(
        default="auto",
        description="json: one JSON object per line; console: short human lines; auto: console"
        " when stderr is a terminal, else json.",
    )
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None,
        description="OTLP/HTTP collector base URL (http://collector:4318). Unset: no tracing;"
        " nothing of OpenTelemetry is loaded.",
    )

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

    @field_validator("gateway_cors_origins")
    @classmethod
    def _origins_are_origins(cls, value: str | None) -> str | None:
        for entry in _split(value or ""):
            if entry != "*" and (
                not entry.startswith(("http://", "https://"))
                or entry.rstrip("/") != entry
                or entry.count("/") != 2
            ):
                raise ValueError(
                    f"GATEWAY_CORS_ORIGINS: {entry!r} is not an origin"
                    " (scheme://host[:port], no path)"
                )
        return value

    def cors_origins(self) -> list[str]:
        """The origins of ``GATEWAY_CORS_ORIGINS``."""
        return _split(self.gateway_cors_origins or "")

    def trusted_proxies(self) -> list[str]:
        """The addresses and networks of ``GATEWAY_TRUSTED_PROXIES``."""
        return _split(self.gateway_trusted_proxies or "")

    @model_validator(mode="after")
    def _production_requires_secrets(self) -> Settings:
        if self.gateway_env == "production":
            problem = secret_problem(self.gateway_token_secret)
            if problem is not None:
                raise ValueError(problem)
            if not self.database_url:
                raise ValueError("DATABASE_URL must be set in production mode")
            if "*" in self.cors_origins():
                raise ValueError(
                    "GATEWAY_CORS_ORIGINS=* is refused in production mode: name the origins"
                    " of your frontends (https://app.example.com)"
                )
        if self.gateway_transaction_pooling and not self.gateway_direct_database_url:
            raise ValueError(
                "GATEWAY_TRANSACTION_POOLING needs GATEWAY_DIRECT_DATABASE_URL: a direct"
                " PostgreSQL URL (not through the pooler) for LISTEN and migrations"
            )
        return self

    @property
    def production(self) -> bool:
        return self.gateway_env == "production"

    @property
    def introspection(self) -> bool:
        """Introspection is served (GATEWAY_INTROSPECTION; unset: not in production)."""
        return self._on_in_development(self.gateway_introspection)

    @property
    def graphiql(self) -> bool:
        """The GraphiQL page is served (GATEWAY_GRAPHIQL; unset: not in production)."""
        return self._on_in_development(self.gateway_graphiql)

    @property
    def field_suggestions(self) -> bool:
        """Errors suggest names (GATEWAY_FIELD_SUGGESTIONS; unset: not in production)."""
        return self._on_in_development(self.gateway_field_suggestions)

    def _on_in_development(self, value: bool | None) -> bool:
        return not self.production if value is None else value

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
