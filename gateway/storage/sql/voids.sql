-- Voiding a usage event recorded by mistake (voidUsageEvent, secret keys only).
--
-- After a void the stored state is exactly what recording every other event in the same
-- order would have given (what reconcile recomputes): the event's takes go back to its
-- grants, and the live events recorded after it on the same (subscription, meter) are
-- allocated again in their order, so credits it had taken now cover later usage that went
-- uncovered, its uncovered usage and charge go, and a distinct property set it paid for is
-- paid by the next event that repeated it, or freed. The work is bounded by p_max_later
-- (more live events after it: InvalidInput). The row stays, marked voided, and keeps its
-- transactionId: a retry of it is a replay of the voided event.
--
-- Shard-local: the event's customer is the first argument (never NULL; the gateway knows it
-- from gateway.billing.owners), and every statement filters by it.
--
-- The one current definition of each function below. Edit it here, then make a migration
-- with `alembic revision --autogenerate` (docs/architecture.md).

CREATE OR REPLACE FUNCTION public.void_usage_event(p_customer_id uuid, p_event_id uuid,
                                            p_reason text, p_max_later integer)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_variable
DECLARE
  v_balance jsonb;
  v_now timestamptz := now();
  e usage_events%ROWTYPE;
  o usage_events%ROWTYPE;
  s subscriptions%ROWTYPE;
  v_distinct boolean;
  v_current timestamptz;
  v_pricing_model_id uuid;
  v_later uuid[];
  v_consume bigint;
  v_left bigint;
  v_take bigint;
  v_grant_ids uuid[];
  v_takes bigint[];
  g record;
BEGIN
  SELECT * INTO e FROM usage_events WHERE customer_id = p_customer_id AND id = p_event_id;
  IF NOT FOUND THEN
    RETURN _usage_error('NOT_FOUND', 'no usage event ' || p_event_id,
                        ARRAY['input', 'usageEventId']);
  END IF;
  SELECT * INTO s FROM subscriptions
   WHERE customer_id = p_customer_id AND id = e.subscription_id;
  SELECT pricing_model_id INTO v_pricing_model_id FROM customers WHERE id = p_customer_id;

  -- The (subscription, meter) lock every writer takes, then the event as of now.
  PERFORM 1 FROM meter_balances mb
    WHERE mb.customer_id = p_customer_id AND mb.subscription_id = e.subscription_id
      AND mb.usage_meter_id = e.usage_meter_id
      FOR UPDATE;
  SELECT * INTO e FROM usage_events WHERE customer_id = p_customer_id AND id = p_event_id;

  IF e.voided_at IS NULL THEN
    SELECT cp.period_start INTO v_current
      FROM billing_period(s.start_date, s.interval_unit, s.interval_count, v_now) cp;
    IF e.period_start IS DISTINCT FROM v_current THEN
      RETURN _usage_error('INVALID_INPUT',
                          'usage event ' || e.id || ' belongs to a closed billing period',
                          ARRAY['input', 'usageEventId']);
    END IF;
    SELECT array_agg(l.id ORDER BY l.seq) INTO v_later
      FROM (SELECT x.id, x.seq FROM usage_events x
             WHERE x.customer_id = p_customer_id AND x.subscription_id = e.subscription_id
               AND x.usage_meter_id = e.usage_meter_id AND x.seq > e.seq AND x.voided_at IS NULL
             ORDER BY x.seq LIMIT p_max_later + 1) l;
    v_later := coalesce(v_later, '{}');
    IF cardinality(v_later) > p_max_later THEN
      RETURN _usage_error('INVALID_INPUT',
                          'more than ' || p_max_later || ' events were recorded after usage event '
                            || e.id || ' on its meter: it can no longer be voided',
                          ARRAY['input', 'usageEventId']);
    END IF;
    IF EXISTS (SELECT 1 FROM usage_events x
                WHERE x.customer_id = p_customer_id AND x.id = ANY (v_later || e.id) AND x.covered > 0
                  AND x.take_grant_ids IS NULL) THEN
      RETURN _usage_error('INVALID_INPUT',
                          'usage event ' || e.id || ' or one after it was recorded before voids'
                            || ' were possible',
                          ARRAY['input', 'usageEventId']);
    END IF;
    SELECT m.aggregation_type = 'count_distinct_properties' INTO v_distinct
      FROM usage_meters m WHERE m.id = e.usage_meter_id;

    UPDATE usage_events SET voided_at = v_now, void_reason = p_reason
     WHERE customer_id = p_customer_id AND id = e.id
    RETURNING * INTO e;

    -- Rewind the event and every live event after it: takes, totals, distinct sets.
    FOR o IN SELECT * FROM usage_events x
              WHERE x.customer_id = p_customer_id AND x.id = ANY (v_later || e.id) LOOP
      FOR i IN 1 .. coalesce(cardinality(o.take_grant_ids), 0) LOOP
        UPDATE credit_grants SET consumed = consumed - o.take_amounts[i]
         WHERE customer_id = p_customer_id AND id = o.take_grant_ids[i];
      END LOOP;
      UPDATE usage_totals t
         SET used = t.used - o.consumed, covered = t.covered - o.covered,
             uncovered = t.uncovered - (o.consumed - o.covered)
       WHERE t.customer_id = p_customer_id AND t.subscription_id = o.subscription_id
         AND t.usage_meter_id = o.usage_meter_id AND t.period_start = o.period_start
         AND t.price_id = o.price_id;
      IF v_distinct AND o.consumed > 0 THEN
        DELETE FROM usage_distinct_keys k
         WHERE k.customer_id = p_customer_id AND k.subscription_id = o.subscription_id AND k.usage_meter_id = o.usage_meter_id
           AND k.period_start = o.period_start AND k.properties_hash = md5(o.properties::text);
      END IF;
    END LOOP;

    -- Record the later events again, in their order, by record_usage_event()'s rules.
    FOR o IN SELECT * FROM usage_events x
              WHERE x.customer_id = p_customer_id AND x.id = ANY (v_later) ORDER BY x.seq LOOP
      IF v_distinct THEN
        v_consume := CASE WHEN EXISTS (
            SELECT 1 FROM usage_distinct_keys k
             WHERE k.customer_id = p_customer_id AND k.subscription_id = o.subscription_id AND k.usage_meter_id = o.usage_meter_id
               AND k.period_start = o.period_start
               AND k.properties_hash = md5(o.properties::text)) THEN 0 ELSE 1 END;
        IF v_consume > 0 THEN
          INSERT INTO usage_distinct_keys (customer_id, subscription_id, usage_meter_id,
                                           period_start, properties_hash)
          VALUES (p_customer_id, o.subscription_id, o.usage_meter_id, o.period_start,
                  md5(o.properties::text));
        END IF;
      ELSE
        v_consume := o.amount;
      END IF;
      v_left := v_consume;
      v_grant_ids := '{}';
      v_takes := '{}';
      FOR g IN
        SELECT cg.id, cg.amount - cg.consumed AS remaining FROM credit_grants cg
         WHERE cg.customer_id = p_customer_id AND cg.subscription_id = o.subscription_id AND cg.usage_meter_id = o.usage_meter_id
           AND cg.granted_at <= o.usage_date
           AND (cg.expires_at IS NULL OR cg.expires_at > o.usage_date)
           AND cg.consumed < cg.amount AND cg.issued_seq < o.seq
         ORDER BY cg.expires_at ASC NULLS LAST, cg.granted_at, cg.id
      LOOP
        EXIT WHEN v_left = 0;
        v_take := least(v_left, g.remaining);
        v_grant_ids := v_grant_ids || g.id;
        v_takes := v_takes || v_take;
        v_left := v_left - v_take;
        UPDATE credit_grants SET consumed = consumed + v_take
         WHERE customer_id = p_customer_id AND id = g.id;
      END LOOP;
      UPDATE usage_totals t
         SET used = t.used + v_consume, covered = t.covered + (v_consume - v_left),
             uncovered = t.uncovered + v_left
       WHERE t.customer_id = p_customer_id AND t.subscription_id = o.subscription_id
         AND t.usage_meter_id = o.usage_meter_id AND t.period_start = o.period_start
         AND t.price_id = o.price_id;
      UPDATE usage_events
         SET consumed = v_consume, covered = v_consume - v_left, take_grant_ids = v_grant_ids,
             take_amounts = v_takes
       WHERE customer_id = p_customer_id AND id = o.id;
    END LOOP;

    v_balance := (SELECT to_jsonb(b)
                    FROM usage_balance(p_customer_id, e.subscription_id, e.usage_meter_id, v_now) b);
    -- A void lowers usedBalance and raises availableBalance.
    PERFORM evaluate_usage_alerts(p_customer_id, e.subscription_id, e.usage_meter_id, v_balance);  -- alerts hook
    RETURN jsonb_build_object('status', 'voided', 'event', _usage_event_json(e),
                              'pricing_model_id', v_pricing_model_id, 'balance', v_balance);
  END IF;

  -- Voided already (before, or by a concurrent void that held the lock first): a no-op.
  RETURN jsonb_build_object('status', 'already_voided', 'event', _usage_event_json(e),
                            'pricing_model_id', v_pricing_model_id, 'balance',
    (SELECT to_jsonb(b) FROM usage_balance(p_customer_id, e.subscription_id, e.usage_meter_id, v_now) b));
END;
$$;
