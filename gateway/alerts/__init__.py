"""Usage alerts: thresholds on a meter's balance, evaluated by the database at write time.

``manage`` creates and deletes alerts; the decision itself (TRIGGERED / RESOLVED, at most
once per alert, subscription and billing period) is ``fire_usage_alerts()`` in
``gateway/storage/sql/alerts.sql``, run in the transaction of the change. Its events are the
outbox that ``gateway.webhooks`` delivers.
"""
