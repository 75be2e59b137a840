-- Voiding a usage event recorded by mistake (voidUsageEvent, secret keys only).
--
-- A void reverses exactly what the event did when it was recorded: its takes go back to
-- the grants it took them from (those still unexpired), its used, covered and uncovered
-- usage leave the period's totals (so its charge goes), and a distinct property set it
-- alone paid for is freed. The row stays, marked voided, and keeps its transactionId.
--
-- The one current definition of each function below. Edit it here, then make a migration
-- with `alembic revision --autogenerate` (docs/architecture.md).

CREATE OR REPLACE FUNCTION public.void_usage_event(p_event_id uuid, p_reason text)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_variable
DECLARE
  v_now timestamptz := now();
  e usage_events%ROWTYPE;
  s subscriptions%ROWTYPE;
  v_meter usage_meters%ROWTYPE;
  v_current timestamptz;
  v_seq bigint;
  v_pricing_model_id uuid;
  v_hash text;
BEGIN
  SELECT * INTO e FROM usage_events WHERE id = p_event_id;
  IF NOT FOUND THEN
    RETURN _usage_error('NOT_FOUND', 'no usage event ' || p_event_id,
                        ARRAY['input', 'usageEventId']);
  END IF;
  SELECT * INTO s FROM subscriptions WHERE id = e.subscription_id;
  SELECT pricing_model_id INTO v_pricing_model_id FROM customers WHERE id = e.customer_id;

  IF e.voided_at IS NULL THEN
    SELECT cp.period_start INTO v_current
      FROM billing_period(s.start_date, s.interval_unit, s.interval_count, v_now) cp;
    IF e.period_start IS DISTINCT FROM v_current THEN
      RETURN _usage_error('INVALID_INPUT',
                          'usage event ' || e.id || ' belongs to a closed billing period',
                          ARRAY['input', 'usageEventId']);
    END IF;
    IF e.covered > 0 AND e.take_grant_ids IS NULL THEN
      RETURN _usage_error('INVALID_INPUT',
                          'usage event ' || e.id || ' was recorded before voids were possible',
                          ARRAY['input', 'usageEventId']);
    END IF;

    -- The (subscription, meter) lock every writer takes; the void gets a place in the
    -- order that recomputation replays (reconcile).
    UPDATE meter_balances mb SET event_seq = mb.event_seq + 1
     WHERE mb.subscription_id = e.subscription_id AND mb.usage_meter_id = e.usage_meter_id
    RETURNING mb.event_seq INTO v_seq;
    UPDATE usage_events SET voided_at = v_now, void_reason = p_reason, voided_seq = v_seq
     WHERE id = e.id AND voided_at IS NULL
    RETURNING * INTO e;
    IF FOUND THEN
      FOR i IN 1 .. coalesce(cardinality(e.take_grant_ids), 0) LOOP
        UPDATE credit_grants SET consumed = consumed - e.take_amounts[i]
         WHERE id = e.take_grant_ids[i] AND (expires_at IS NULL OR expires_at > v_now);
      END LOOP;
      UPDATE usage_totals t
         SET used = t.used - e.consumed, covered = t.covered - e.covered,
             uncovered = t.uncovered - (e.consumed - e.covered)
       WHERE t.subscription_id = e.subscription_id AND t.usage_meter_id = e.usage_meter_id
         AND t.period_start = e.period_start AND t.price_id = e.price_id;
      SELECT * INTO v_meter FROM usage_meters WHERE id = e.usage_meter_id;
      IF v_meter.aggregation_type = 'count_distinct_properties' AND e.consumed > 0 THEN
        -- The set is freed unless a later live event of the period repeated it (an earlier
        -- one would have paid for it instead of this one).
        v_hash := md5(e.properties::text);
        IF NOT EXISTS (
            SELECT 1 FROM usage_events o
             WHERE o.subscription_id = e.subscription_id AND o.usage_meter_id = e.usage_meter_id
               AND o.seq > e.seq AND o.period_start = e.period_start
               AND o.voided_at IS NULL AND md5(o.properties::text) = v_hash) THEN
          DELETE FROM usage_distinct_keys k
           WHERE k.subscription_id = e.subscription_id AND k.usage_meter_id = e.usage_meter_id
             AND k.period_start = e.period_start AND k.properties_hash = v_hash;
        END IF;
      END IF;
      -- (Alerts hook: a void lowers usedBalance and raises availableBalance.)
      RETURN jsonb_build_object('status', 'voided', 'event', _usage_event_json(e),
                                'pricing_model_id', v_pricing_model_id, 'balance',
        (SELECT to_jsonb(b) FROM usage_balance(e.subscription_id, e.usage_meter_id, v_now) b));
    END IF;
    SELECT * INTO e FROM usage_events WHERE id = p_event_id;
  END IF;

  -- Voided already (before, or by a concurrent void that won the lock): a no-op answer.
  RETURN jsonb_build_object('status', 'already_voided', 'event', _usage_event_json(e),
                            'pricing_model_id', v_pricing_model_id, 'balance',
    (SELECT to_jsonb(b) FROM usage_balance(e.subscription_id, e.usage_meter_id, v_now) b));
END;
$$;
