"""Live updates: balances and alert events pushed to GraphQL subscriptions.

- ``hub``: one per process. It turns the database's notifications (``gateway_balance``: a
  (subscription, meter) changed; ``gateway_alert``: an alert event was written) received on the
  process's one listening connection (``gateway.storage.listener``) into wake-ups of the
  subscriptions that watch them, and wakes every subscription after the connection was
  re-established (a notification may have been missed while nobody listened).
- ``feeds``: what a subscription sends. A balance feed re-reads the balance through the normal
  read path when woken (at most one read in flight and one pending, so a burst of changes
  gives few reads, in order, ending with the final value) and at the end of the billing
  period; an alert feed reads each new event of its customers. Both go through a bounded
  queue: a client that does not keep up is disconnected, never buffered without limit.
- ``sessions``: the caller's credential, checked again before every message (revocation) and
  on a timer (expiry).

The SQL side: ``evaluate_usage_alerts()``/``_batch()`` (``storage/sql/alerts.sql``), which every
write function calls once per changed (subscription, meter), send the ``gateway_balance``
notification; ``fire_usage_alerts()`` sends ``gateway_alert`` for every event it writes.
PostgreSQL delivers notifications at commit, once per distinct payload per transaction.
"""
