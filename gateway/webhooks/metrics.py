"""Prometheus metrics of webhook deliveries (served by /metrics with the others)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

DELIVERIES = Counter(
    "gateway_webhook_deliveries_total",
    "Webhook deliveries finished, by outcome: delivered, failed (retries exhausted), canceled",
    ["outcome"],
)
ATTEMPTS = Counter(
    "gateway_webhook_attempts_total",
    "Webhook delivery attempts by result: success, http_error, timeout, network_error, refused",
    ["result"],
)
OLDEST_PENDING = Gauge(
    "gateway_webhook_oldest_pending_seconds",
    "Age of the oldest webhook delivery not yet delivered, failed or canceled (0: none)",
    multiprocess_mode="livemax",
)
