"""Webhook endpoints and the delivery of usage alert events (the Standard Webhooks spec).

- ``endpoints``: create (a ``whsec_`` secret, shown once), delete, list with deliveries.
- ``addresses``: which URLs and addresses may be called (no server-side request forgery).
- ``sending``: one signed POST, connected to the checked address only.
- ``deliveries``: claiming due deliveries (``FOR UPDATE SKIP LOCKED``), recording attempts,
  the retry schedule, replay.
- ``worker``: the loop every gateway process runs; ``metrics``: its Prometheus metrics.
"""
