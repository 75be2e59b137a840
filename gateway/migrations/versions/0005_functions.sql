-- 0005: batches record each (subscription, meter) group with a few statements, not per event.
--
-- record_usage_events() still runs the groups in the order of 0003 (subscription, then meter,
-- items in input order). A group of two or more items now goes to _record_usage_group()
-- first. It records the whole group at once when every item is the steady case:
-- * a new transactionId (not recorded, not repeated in the group);
-- * a usable target;
-- * no usageDate (so every item is dated now(), one billing period, one set of grants);
-- * no requireBalance;
-- * a SUM meter whose row lock exists with this period's grants already issued.
-- Anything else returns no rows, having written nothing, and the group runs item by item
-- through record_usage_event() exactly as before.
-- For the steady case the results are what the item-by-item path would give: the events get
-- the next sequence numbers in input order, event i covers min(R, A_i) - min(R, A_(i-1)) of
-- its amount (R: the grants' remaining credits, A_i: the group's running total of amounts;
-- this is the soonest-expiring-first allocation summed), the grants are consumed in the same
-- order, and each item's balance is the balance after it.
-- tests/test_usage_groups.py checks this against the item-by-item path on the same inputs.

CREATE OR REPLACE FUNCTION _record_usage_group(
  p_items jsonb,              -- one group's items in input order, each with its 'pos'
  p_caller_customer_id uuid,
  p_subscription_id uuid,
  p_meter_id uuid)
RETURNS TABLE (item_position integer, result jsonb)
-- Generic plans: custom plans of the write statement cost more to plan than to run.
LANGUAGE plpgsql VOLATILE SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
  v_now timestamptz := now();
  s subscriptions%ROWTYPE;
  v_pricing_model_id uuid;
  v_meter usage_meters%ROWTYPE;
  p record;
  mb meter_balances%ROWTYPE;
  v_n integer := jsonb_array_length(p_items);
  v_ok integer;
  v_remaining numeric;      -- credits the group's events may take (the allocation's grants)
  v_valid numeric;          -- credits remaining on grants valid now (the balance's grants)
  v_grants bigint;
  v_used numeric;
  v_covered numeric;
  v_uncovered numeric;
  v_total numeric;
  v_left numeric;
  v_take numeric;
  v_period_id uuid;
  v_positions integer[];
  v_results jsonb[];
  g record;
BEGIN
  SELECT * INTO s FROM subscriptions WHERE id = p_subscription_id;
  IF NOT FOUND
     OR (p_caller_customer_id IS NOT NULL AND s.customer_id <> p_caller_customer_id)
     OR s.status NOT IN ('trialing', 'active', 'past_due', 'unpaid', 'cancellation_scheduled')
     OR v_now < s.start_date THEN
    RETURN;
  END IF;
  SELECT pricing_model_id INTO v_pricing_model_id FROM customers WHERE id = s.customer_id;
  SELECT * INTO v_meter FROM usage_meters
   WHERE id = p_meter_id AND pricing_model_id = v_pricing_model_id;
  IF NOT FOUND OR v_meter.aggregation_type <> 'sum' THEN
    RETURN;
  END IF;

  -- The (subscription, meter) lock of record_usage_event(), taken at the same point of the
  -- batch's order. Without the row, or before this period's grants exist, the first event
  -- has more to do: item by item.
  SELECT * INTO mb FROM meter_balances
   WHERE subscription_id = s.id AND usage_meter_id = v_meter.id FOR UPDATE;
  IF NOT FOUND THEN
    RETURN;
  END IF;
  SELECT * INTO p FROM billing_period(s.start_date, s.interval_unit, s.interval_count, v_now);
  IF mb.grants_period_start IS DISTINCT FROM p.period_start THEN
    RETURN;
  END IF;

  -- Every item the steady case (under the lock: the idempotency look-up sees every event of
  -- this subscription's meter written before it).
  SELECT count(*) FILTER (
           WHERE i.item ->> 'usage_date' IS NULL
             AND NOT coalesce((i.item ->> 'require_balance')::boolean, false)
             AND pr.id IS NOT NULL AND pr.active AND pr.type = 'usage'
             AND pr.usage_meter_id = v_meter.id
             AND (p_caller_customer_id IS NULL OR pr.is_default
                  OR i.item ->> 'target_kind' IN ('usageMeterId', 'usageMeterSlug'))
             AND NOT EXISTS (
               SELECT 1 FROM usage_events e
                WHERE e.customer_id = s.customer_id AND e.usage_meter_id = v_meter.id
                  AND e.transaction_id = i.item ->> 'transaction_id')),
         count(DISTINCT i.item ->> 'transaction_id')
    INTO v_ok, v_total
    FROM jsonb_array_elements(p_items) AS i(item)
    LEFT JOIN LATERAL (
      SELECT x.* FROM prices x
       WHERE CASE i.item ->> 'target_kind'
               WHEN 'priceId' THEN x.id = (i.item ->> 'target')::uuid
                                   AND x.pricing_model_id = v_pricing_model_id
               WHEN 'priceSlug' THEN x.slug = i.item ->> 'target'
                                     AND x.pricing_model_id = v_pricing_model_id
               ELSE x.usage_meter_id = v_meter.id AND x.is_default AND x.type = 'usage'
             END) pr ON true;
  IF v_ok <> v_n OR v_total <> v_n THEN
    RETURN;
  END IF;

  -- What the group starts from: the grants it may take from (those record_usage_event()
  -- would allocate, soonest-expiring first), the grants valid now, the period's totals.
  SELECT coalesce(sum(amount - consumed) FILTER (
           WHERE granted_at <= v_now AND (expires_at IS NULL OR expires_at > v_now)
             AND consumed < amount AND issued_seq < mb.event_seq + 1), 0),
         coalesce(sum(amount - consumed) FILTER (
           WHERE granted_at <= v_now AND (expires_at IS NULL OR expires_at > v_now)), 0),
         count(*)
    INTO v_remaining, v_valid, v_grants
    FROM credit_grants
   WHERE subscription_id = s.id AND usage_meter_id = v_meter.id;
  SELECT coalesce(sum(used), 0), coalesce(sum(covered), 0), coalesce(sum(uncovered), 0)
    INTO v_used, v_covered, v_uncovered
    FROM usage_totals
   WHERE subscription_id = s.id AND usage_meter_id = v_meter.id
     AND period_start = p.period_start;
  v_period_id := billing_period_id(s.id, p.period_start);

  BEGIN
    -- The events, the period's totals and the lock row's sequence, in one statement. A key
    -- claimed meanwhile by another subscription of the customer raises unique_violation:
    -- everything of this block is undone and the group runs item by item (a replay).
    WITH items AS (
      SELECT (i.item ->> 'pos')::integer AS pos, i.ord,
             (i.item ->> 'event_id')::uuid AS event_id,
             (i.item ->> 'amount')::bigint AS amount,
             i.item ->> 'transaction_id' AS transaction_id,
             CASE WHEN i.item ? 'properties' AND jsonb_typeof(i.item -> 'properties') = 'object'
                  THEN i.item -> 'properties' END AS properties,
             pr.id AS price_id
        FROM jsonb_array_elements(p_items) WITH ORDINALITY AS i(item, ord)
        JOIN LATERAL (
          SELECT x.id FROM prices x
           WHERE CASE i.item ->> 'target_kind'
                   WHEN 'priceId' THEN x.id = (i.item ->> 'target')::uuid
                                       AND x.pricing_model_id = v_pricing_model_id
                   WHEN 'priceSlug' THEN x.slug = i.item ->> 'target'
                                         AND x.pricing_model_id = v_pricing_model_id
                   ELSE x.usage_meter_id = v_meter.id AND x.is_default AND x.type = 'usage'
                 END) pr ON true
    ), allocated AS (
      SELECT it.*, sum(it.amount) OVER w AS running,
             least(v_remaining, sum(it.amount) OVER w)
               - least(v_remaining, sum(it.amount) OVER w - it.amount) AS covered
        FROM items it
      WINDOW w AS (ORDER BY it.ord)
    ), written AS (
      INSERT INTO usage_events (id, customer_id, subscription_id, usage_meter_id, price_id,
                                billing_period_id, period_start, period_end, amount, consumed,
                                covered, seq, transaction_id, usage_date, properties,
                                properties_given, usage_date_given)
      SELECT a.event_id, s.customer_id, s.id, v_meter.id, a.price_id, v_period_id,
             p.period_start, p.period_end, a.amount, a.amount, a.covered,
             mb.event_seq + a.ord, a.transaction_id, v_now,
             coalesce(a.properties, '{}'::jsonb), a.properties IS NOT NULL, false
        FROM allocated a
      RETURNING *
    ), totals AS (
      INSERT INTO usage_totals AS t (subscription_id, usage_meter_id, period_start, price_id,
                                     customer_id, period_end, used, covered, uncovered)
      SELECT s.id, v_meter.id, p.period_start, a.price_id, s.customer_id, p.period_end,
             sum(a.amount), sum(a.covered), sum(a.amount - a.covered)
        FROM allocated a
       GROUP BY a.price_id
      ON CONFLICT (subscription_id, usage_meter_id, period_start, price_id)
      DO UPDATE SET used = t.used + excluded.used, covered = t.covered + excluded.covered,
                    uncovered = t.uncovered + excluded.uncovered
    ), seq_bump AS (
      UPDATE meter_balances SET event_seq = event_seq + v_n
       WHERE subscription_id = s.id AND usage_meter_id = v_meter.id
    )
    SELECT array_agg(a.pos ORDER BY a.ord),
           array_agg(jsonb_build_object(
             'status', 'recorded',
             'event', _usage_event_json(ROW(e.*)::usage_events),
             'balance', jsonb_build_object(
               'subscription_id', s.id, 'usage_meter_id', v_meter.id,
               'available_balance', v_valid - v_uncovered - a.running,
               'used_balance', v_used + a.running,
               'balance_limit', CASE WHEN v_grants > 0 THEN v_valid + v_covered END,
               'period_start', p.period_start, 'period_end', p.period_end),
             'pricing_model_id', v_pricing_model_id) ORDER BY a.ord),
           sum(a.covered)
      INTO v_positions, v_results, v_total
      FROM allocated a JOIN written e ON e.id = a.event_id;

    -- The credits taken, from the grants in record_usage_event()'s order.
    v_left := v_total;
    FOR g IN
      SELECT id, amount - consumed AS remaining FROM credit_grants
       WHERE subscription_id = s.id AND usage_meter_id = v_meter.id
         AND granted_at <= v_now AND (expires_at IS NULL OR expires_at > v_now)
         AND consumed < amount AND issued_seq < mb.event_seq + 1
       ORDER BY expires_at ASC NULLS LAST, granted_at, id
    LOOP
      EXIT WHEN v_left <= 0;
      v_take := least(v_left, g.remaining);
      UPDATE credit_grants SET consumed = consumed + v_take WHERE id = g.id;
      v_left := v_left - v_take;
    END LOOP;
  EXCEPTION WHEN unique_violation THEN
    RETURN;
  END;

  RETURN QUERY SELECT x.pos, x.res FROM unnest(v_positions, v_results) AS x(pos, res);
END;
$$;

CREATE OR REPLACE FUNCTION record_usage_events(
  p_items jsonb,
  p_caller_customer_id uuid,
  p_backdating interval,
  p_future_tolerance interval)
RETURNS TABLE (item_position integer, result jsonb)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  grp record;
  it record;
BEGIN
  -- Groups of (subscription, meter) in 0003's order; the meter is resolved only to group.
  FOR grp IN
    WITH items AS (
      SELECT x.ordinality::integer AS pos, x.item,
             coalesce((x.item ->> 'subscription_id')::uuid,
                      (SELECT cs.id FROM subscriptions cs
                        WHERE cs.customer_id = p_caller_customer_id
                          AND cs.status IN ('trialing', 'active', 'past_due', 'unpaid',
                                            'cancellation_scheduled')
                        ORDER BY cs.created_at DESC, cs.id DESC LIMIT 1)) AS sub_id
        FROM jsonb_array_elements(p_items) WITH ORDINALITY AS x(item, ordinality)
    ), resolved AS (
      SELECT i.pos, i.item, i.sub_id,
             CASE i.item ->> 'target_kind'
               WHEN 'usageMeterSlug' THEN (SELECT m.id FROM usage_meters m
                                            WHERE m.pricing_model_id = c.pricing_model_id
                                              AND m.slug = i.item ->> 'target')
               WHEN 'usageMeterId' THEN (SELECT m.id FROM usage_meters m
                                          WHERE m.pricing_model_id = c.pricing_model_id
                                            AND m.id = (i.item ->> 'target')::uuid)
               WHEN 'priceSlug' THEN (SELECT pr.usage_meter_id FROM prices pr
                                       WHERE pr.pricing_model_id = c.pricing_model_id
                                         AND pr.slug = i.item ->> 'target')
               WHEN 'priceId' THEN (SELECT pr.usage_meter_id FROM prices pr
                                     WHERE pr.pricing_model_id = c.pricing_model_id
                                       AND pr.id = (i.item ->> 'target')::uuid)
             END AS meter_id
        FROM items i
        LEFT JOIN subscriptions s ON s.id = i.sub_id
        LEFT JOIN customers c ON c.id = s.customer_id
    )
    SELECT r.sub_id, r.meter_id, count(*) AS n,
           jsonb_agg(r.item || jsonb_build_object('pos', r.pos) ORDER BY r.pos) AS items
      FROM resolved r
     GROUP BY r.sub_id, r.meter_id
     ORDER BY r.sub_id NULLS FIRST, r.meter_id NULLS FIRST
  LOOP
    IF grp.n > 1 AND grp.sub_id IS NOT NULL AND grp.meter_id IS NOT NULL THEN
      RETURN QUERY
        SELECT * FROM _record_usage_group(grp.items, p_caller_customer_id, grp.sub_id,
                                          grp.meter_id);
      IF FOUND THEN
        CONTINUE;
      END IF;
    END IF;
    FOR it IN SELECT x.item FROM jsonb_array_elements(grp.items) AS x(item) LOOP
      item_position := (it.item ->> 'pos')::integer;
      result := record_usage_event(
        (it.item ->> 'event_id')::uuid,
        p_caller_customer_id,
        (it.item ->> 'subscription_id')::uuid,
        it.item ->> 'target_kind',
        it.item ->> 'target',
        (it.item ->> 'amount')::bigint,
        it.item ->> 'transaction_id',
        (it.item ->> 'usage_date')::timestamptz,
        CASE WHEN it.item ? 'properties' AND jsonb_typeof(it.item -> 'properties') = 'object'
             THEN it.item -> 'properties' END,
        coalesce((it.item ->> 'require_balance')::boolean, false),
        p_backdating,
        p_future_tolerance);
      RETURN NEXT;
    END LOOP;
  END LOOP;
END;
$$;
