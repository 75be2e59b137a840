-- Usage alerts, evaluated in the transaction of the change that moved a balance, and their
-- outbox (usage_alert_events) with one webhook delivery per subscribed endpoint.
--
-- The write functions call these through one marked hook line each ("alerts hook"):
--   record_usage_event()      PERFORM evaluate_usage_alerts(customer, sub, meter, balance)
--   _record_usage_steady()    PERFORM evaluate_usage_alerts_batch(customers, results)
--   record_usage_events()     the same for the items it records one by one (whose own
--                             evaluation it defers with the setting gateway.alerts_deferred)
--   grant_usage_credits       SELECT evaluate_usage_alerts(customer, sub, meter, balance)
--   reserve_usage(), finalize_usage_reservation(), release_usage_reservation() and
--   void_usage_event()        PERFORM evaluate_usage_alerts(customer, sub, meter, balance)
--   (finalize_usage_reservation() defers the evaluation of the event it records, like the
--   batch, and evaluates once on the balance after the event and the freed hold)
-- evaluate_usage_alerts() and _batch() also send the gateway_balance notification of every
-- (subscription, meter) they are called for (live updates, gateway.live).
-- A balance is the JSON of usage_balance() (subscription_id, usage_meter_id,
-- available_balance, used_balance, balance_limit, period_start, period_end), as of now.
-- Every function takes the customer whose balances they are as its first argument (never
-- NULL) and filters by it: the outbox rows are the customer's (gateway/storage/distribution.py).
--
-- The one current definition of each function below. Edit it here, then make a migration
-- with `alembic revision --autogenerate` (docs/architecture.md).

-- TRIGGERED when an alert's threshold holds and it has not fired in the balance's period;
-- RESOLVED when it no longer holds after a TRIGGERED of that period, and for a TRIGGERED of
-- an earlier period (that period is over). "At most once" is the unique key
-- usage_alert_events_once_key, not a prior read. Returns the number of events written.
CREATE OR REPLACE FUNCTION public.fire_usage_alerts(p_customer_id uuid, p_balances jsonb)
RETURNS integer
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  v_written integer;
BEGIN
  WITH ch AS (
    SELECT (b ->> 'subscription_id')::uuid AS sub_id, (b ->> 'usage_meter_id')::uuid AS meter_id,
           (b ->> 'available_balance')::bigint AS available,
           (b ->> 'used_balance')::bigint AS used,
           (b ->> 'balance_limit')::bigint AS lim,
           (b ->> 'period_start')::timestamptz AS period_start,
           (b ->> 'period_end')::timestamptz AS period_end, x.ord
      FROM jsonb_array_elements(coalesce(p_balances, '[]'::jsonb)) WITH ORDINALITY AS x(b, ord)
     WHERE jsonb_typeof(b) = 'object'
  ), cand_all AS (
    SELECT ch.*, s.customer_id, cu.external_id, m.slug AS meter_slug, a.id AS alert_id,
           a.percent_used, a.used_above, a.available_below,
           -- an alert names no customer or this one
           CASE WHEN a.customer_id IS NOT NULL THEN cu.external_id END AS alert_customer,
           CASE WHEN a.percent_used IS NOT NULL
                  THEN coalesce(ch.lim > 0 AND 100.0 * ch.used / ch.lim >= a.percent_used, false)
                WHEN a.used_above IS NOT NULL THEN ch.used >= a.used_above
                ELSE ch.available <= a.available_below
           END AS met
      FROM ch
      JOIN subscriptions s ON s.customer_id = p_customer_id AND s.id = ch.sub_id
      JOIN customers cu ON cu.id = p_customer_id
      JOIN usage_meters m ON m.id = ch.meter_id
      JOIN usage_alerts a ON a.usage_meter_id = ch.meter_id AND a.deleted_at IS NULL
                         AND (a.customer_id IS NULL OR a.customer_id = p_customer_id)
  ), cand AS (
    -- One balance per (alert, subscription): the first that meets the threshold, else the
    -- last. p_balances may be a batch's successive balances of one (subscription, meter), in
    -- order; usage only moves them one way, so the first that meets it is the crossing event's,
    -- as if the events had been evaluated one by one.
    SELECT DISTINCT ON (c.alert_id, c.sub_id) c.*
      FROM cand_all c
     ORDER BY c.alert_id, c.sub_id, c.met DESC, CASE WHEN c.met THEN c.ord END, c.ord DESC
  ), due AS (
    -- this period: TRIGGERED once the threshold holds, RESOLVED once it no longer does
    SELECT c.*, c.period_start AS event_period,
           CASE WHEN c.met THEN 'triggered' ELSE 'resolved' END AS type
      FROM cand c
     WHERE CASE WHEN c.met THEN NOT EXISTS (
                   SELECT 1 FROM usage_alert_events e
                    WHERE e.customer_id = p_customer_id AND e.alert_id = c.alert_id AND e.subscription_id = c.sub_id
                      AND e.period_start = c.period_start AND e.type = 'triggered')
                ELSE EXISTS (
                   SELECT 1 FROM usage_alert_events e
                    WHERE e.customer_id = p_customer_id AND e.alert_id = c.alert_id AND e.subscription_id = c.sub_id
                      AND e.period_start = c.period_start AND e.type = 'triggered')
                 AND NOT EXISTS (
                   SELECT 1 FROM usage_alert_events e
                    WHERE e.customer_id = p_customer_id AND e.alert_id = c.alert_id AND e.subscription_id = c.sub_id
                      AND e.period_start = c.period_start AND e.type = 'resolved')
           END
    UNION ALL
    -- earlier periods still TRIGGERED: they are over, so they resolve
    SELECT c.*, t.period_start AS event_period, 'resolved' AS type
      FROM cand c
      JOIN usage_alert_events t
        ON t.customer_id = p_customer_id AND t.alert_id = c.alert_id AND t.subscription_id = c.sub_id
       AND t.period_start < c.period_start AND t.type = 'triggered'
     WHERE NOT EXISTS (SELECT 1 FROM usage_alert_events r
                        WHERE r.customer_id = p_customer_id AND r.alert_id = t.alert_id AND r.subscription_id = t.subscription_id
                          AND r.period_start = t.period_start AND r.type = 'resolved')
  ), made AS (
    SELECT d.*, uuid_v7() AS event_id, now() AS occurred_at FROM due d
  ), written AS (
    INSERT INTO usage_alert_events (customer_id, id, alert_id, subscription_id, usage_meter_id,
                                    period_start, type, payload, occurred_at)
    SELECT p_customer_id, m.event_id, m.alert_id, m.sub_id, m.meter_id, m.event_period, m.type,
           jsonb_build_object(
             'type', 'usage_alert.' || m.type,
             'timestamp', m.occurred_at,
             'data', jsonb_build_object(
               'id', m.event_id,
               'type', upper(m.type),
               'alert', jsonb_build_object(
                 'id', m.alert_id,
                 'usageMeter', jsonb_build_object('id', m.meter_id, 'slug', m.meter_slug),
                 'customerExternalId', m.alert_customer,
                 'percentUsed', m.percent_used, 'usedAbove', m.used_above,
                 'availableBelow', m.available_below),
               'customerExternalId', m.external_id,
               'subscriptionId', m.sub_id,
               'balance', jsonb_build_object(
                 'usageMeterSlug', m.meter_slug,
                 'availableBalance', m.available, 'usedBalance', m.used,
                 'balanceLimit', m.lim,
                 'percentUsed', CASE WHEN m.lim > 0 THEN 100.0 * m.used / m.lim END,
                 'billingPeriodStart', m.period_start, 'billingPeriodEnd', m.period_end),
               'occurredAt', m.occurred_at)),
           m.occurred_at
      FROM made m
    ON CONFLICT ON CONSTRAINT usage_alert_events_once_key DO NOTHING
    RETURNING id, type, customer_id
  ), queued AS (
    INSERT INTO webhook_deliveries (customer_id, id, event_id, endpoint_id)
    SELECT p_customer_id, uuid_v7(), w.id, ep.id
      FROM written w
      JOIN webhook_endpoints ep
        ON ep.deleted_at IS NULL
       AND (ep.event_types IS NULL OR 'usage_alert.' || w.type = ANY (ep.event_types))
    RETURNING 1
  )
  -- (queued runs whether read or not, like every data-modifying WITH). Each written event
  -- is announced to live subscribers (gateway.live) as "<customer id>:<event id>".
  SELECT count(*)::integer INTO v_written
    FROM written w CROSS JOIN LATERAL pg_notify('gateway_alert', w.customer_id || ':' || w.id) n;
  RETURN v_written;
END;
$$;

-- One (subscription, meter) after a change; a single index probe when the meter has no alert.
-- Inside record_usage_events()'s item-by-item loop (gateway.alerts_deferred is on) it does
-- nothing: the batch evaluates each group once, after its last item.
CREATE OR REPLACE FUNCTION public.evaluate_usage_alerts(
  p_customer_id uuid,
  p_subscription_id uuid,
  p_meter_id uuid,
  p_balance jsonb)
RETURNS integer
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
  IF current_setting('gateway.alerts_deferred', true) = 'on' THEN
    RETURN 0;
  END IF;
  -- Live updates (gateway.live): subscribers re-read this balance after the commit.
  -- PostgreSQL sends one notification per distinct payload per transaction.
  PERFORM pg_notify('gateway_balance', p_subscription_id || ':' || p_meter_id);
  IF p_balance IS NULL OR NOT EXISTS (
      SELECT 1 FROM usage_alerts a WHERE a.usage_meter_id = p_meter_id AND a.deleted_at IS NULL) THEN
    RETURN 0;
  END IF;
  RETURN fire_usage_alerts(p_customer_id, jsonb_build_array(p_balance));
END;
$$;

-- A batch's results (record_usage_event()'s JSON, in input order) for the customers
-- p_customers: once per batch, on the successive balances of each (subscription, meter) with an
-- alert, so that a TRIGGERED event carries the balance of the event that crossed the threshold
-- (fire_usage_alerts()); the notifications and the look-up of alerts once for the whole batch.
CREATE OR REPLACE FUNCTION public.evaluate_usage_alerts_batch(p_customers uuid[],
                                                        p_results jsonb[])
RETURNS integer
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  v_customer uuid;
  v_balances jsonb;
  v_written integer := 0;
BEGIN
  -- Live updates: one notification per (subscription, meter) the batch recorded on.
  PERFORM pg_notify('gateway_balance', k.pair)
     FROM (SELECT DISTINCT (x.res -> 'balance' ->> 'subscription_id') || ':'
                           || (x.res -> 'balance' ->> 'usage_meter_id') AS pair
             FROM unnest(p_results) AS x(res)
            WHERE x.res ->> 'status' = 'recorded' AND x.res -> 'balance' IS NOT NULL) k;
  IF NOT EXISTS (SELECT 1 FROM usage_alerts a WHERE a.deleted_at IS NULL) THEN
    RETURN 0;
  END IF;
  FOREACH v_customer IN ARRAY p_customers LOOP
    SELECT jsonb_agg(x.res -> 'balance' ORDER BY x.ord) INTO v_balances
      FROM unnest(p_results) WITH ORDINALITY AS x(res, ord)
     WHERE x.res ->> 'status' = 'recorded' AND x.res -> 'balance' IS NOT NULL
       AND x.res -> 'event' ->> 'customer_id' = v_customer::text
       AND EXISTS (SELECT 1 FROM usage_alerts a
                    WHERE a.usage_meter_id = (x.res -> 'balance' ->> 'usage_meter_id')::uuid
                      AND a.deleted_at IS NULL);
    IF v_balances IS NOT NULL THEN
      v_written := v_written + fire_usage_alerts(v_customer, v_balances);
    END IF;
  END LOOP;
  RETURN v_written;
END;
$$;
