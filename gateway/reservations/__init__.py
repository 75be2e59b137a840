"""Reservations and voids: hold credits before work whose cost is not known yet, settle the
hold with one usage event, and reverse an event recorded by mistake.

- ``holds``: ``reserveUsage``, ``finalizeUsageReservation``, ``releaseUsageReservation``.
- ``voids``: ``voidUsageEvent`` (secret keys only).
- ``sweep``: the periodic tidy-up of expired holds (they already count as freed on every
  read; the sweep only rewrites their rows).

Every decision is made in the database functions of ``storage/sql/reservations.sql`` and
``storage/sql/voids.sql``, in one statement each, under the (subscription, meter) lock that
usage events take. See docs/billing.md ("Reservations", "Voids").
"""
