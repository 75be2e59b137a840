-- Recording a batch of usage events: grouped by (subscription, meter) in input order;
-- steady groups written by one set-based statement, the rest item by item.
--
-- A call names its customers (p_customers) and every item, group and statement carries its
-- customer: each table is read and written only through `customer_id = <the group's>` AND
-- `customer_id = ANY(p_customers)`. On one PostgreSQL a batch of many customers is one call
-- (the set-based statement's fixed cost is paid once per batch, not once per customer); on
-- Citus the gateway calls once per customer, p_customers of one element, and a plan with that
-- constant array bound is routed to the customer's shard (gateway/storage/distribution.py).
--
-- The one current definition of each function below. Edit it here, then make a migration
-- with `alembic revision --autogenerate` (docs/architecture.md).

-- p_groups: [{customer, sub, meter, positions: [pos, ...]}, ...] in lock order; the items are
-- p_items -> (pos - 1). (Positions, not copies of the items: each level of jsonb an item is
-- rebuilt into costs as much as reading it, and the groups were three levels deep.)
-- Generic plans: a custom plan of the write statement costs more to plan than to run. But a
-- generic plan cannot prune by a parameter array: where the customers' rows are split (Citus
-- loaded, or the tables partitioned by customer) the function plans custom instead, its own
-- SET clause confining that choice to the call. No JIT: its estimate (a hundred items per
-- group, whatever the group) can pass jit_above_cost, and compiling costs a hundred times
-- more than running it.
-- Answers: record_usage_event()'s JSON for the last item of each group. Another item of the
-- group is answered by what differs from that one: {status: 'recorded', same_group_as: <the
-- last item's position>, price_id, properties (NULL for none), available_balance,
-- used_balance}; the rest of its answer (its group's ids, period, limit, hold, the batch's
-- now()) is the last item's, and its id, amount and key are the item's own (the caller sent
-- them). A full answer has some 30 values to turn into jsonb and then into text: with bench
-- 2's 25 groups of 4 events, answering this way cut the instructions per event by a tenth.
-- While an alert exists every item gets the full answer, because the alerts hook reads every
-- event's balance.
-- (Comments stay outside the signature: alembic-utils folds it onto one line.)
CREATE OR REPLACE FUNCTION public._record_usage_steady(
  p_customers uuid[],
  p_groups jsonb,
  p_items jsonb,
  p_caller_customer_id uuid,
  OUT recorded_positions integer[],
  OUT recorded_results jsonb[])
RETURNS record
LANGUAGE plpgsql VOLATILE SET plan_cache_mode = force_generic_plan SET jit = off AS $$
#variable_conflict use_column
DECLARE
  v_now timestamptz := now();
  v_whole boolean;
  v_locked text[] := '{}';
  lk record;
BEGIN
  IF p_groups IS NULL OR jsonb_array_length(p_groups) = 0 THEN
    RETURN;
  END IF;
  IF current_setting('citus.version', true) IS NOT NULL
     OR EXISTS (SELECT FROM pg_class WHERE oid = 'usage_events'::regclass AND relkind = 'p') THEN
    PERFORM set_config('plan_cache_mode', 'force_custom_plan', true);  -- (see above)
  END IF;
  -- record_usage_event()'s (subscription, meter) locks, taken in the batch's order. Only the
  -- groups whose row this locked are written below: a row that did not exist here (no event
  -- yet) may be committed by another writer before the statement below reads it, and read
  -- unlocked it is a stale start (the sequence numbers, the balance, the grants' credit) for
  -- events written beside that writer's. Such a group goes item by item, where
  -- record_usage_event() waits for the row's lock.
  FOR lk IN
    SELECT mb.customer_id, mb.subscription_id, mb.usage_meter_id
      FROM meter_balances mb
      JOIN (SELECT (g ->> 'customer')::uuid AS customer_id, (g ->> 'sub')::uuid AS sub_id,
                   (g ->> 'meter')::uuid AS meter_id
              FROM jsonb_array_elements(p_groups) AS g) k
        ON mb.customer_id = k.customer_id AND mb.subscription_id = k.sub_id
       AND mb.usage_meter_id = k.meter_id
     WHERE mb.customer_id = ANY (p_customers)
     ORDER BY mb.customer_id, mb.subscription_id, mb.usage_meter_id
       FOR UPDATE OF mb
  LOOP
    v_locked := v_locked || (lk.customer_id || ':' || lk.subscription_id || ':' || lk.usage_meter_id);
  END LOOP;
  -- Every answer in full while an alert exists (see above). An alert created after this
  -- point is evaluated by the hook below on each group's last balance.
  v_whole := EXISTS (SELECT 1 FROM usage_alerts a WHERE a.deleted_at IS NULL);

  BEGIN
    WITH grp AS (
      SELECT g.ord AS gord, (g.value ->> 'customer')::uuid AS customer_id,
             (g.value ->> 'sub')::uuid AS sub_id,
             (g.value ->> 'meter')::uuid AS meter_id, g.value -> 'positions' AS positions
        FROM jsonb_array_elements(p_groups) WITH ORDINALITY AS g(value, ord)
    ), callers AS MATERIALIZED (  -- the call's customers, read once, not once per group
      -- (joined to each group, customers was scanned again per group where it is small)
      SELECT c.id, c.pricing_model_id FROM customers c WHERE c.id = ANY (p_customers)
    ), ctx AS (             -- groups whose subscription, meter and lock row allow it
      SELECT grp.gord, grp.sub_id, grp.meter_id, grp.positions, s.customer_id,
             c.pricing_model_id, mb.event_seq, bp.period_start, bp.period_end,
             billing_period_id(grp.sub_id, bp.period_start) AS period_id,  -- once per group
             (grp.positions ->> -1)::integer AS last_pos
        FROM grp
        JOIN subscriptions s ON s.customer_id = grp.customer_id
                            AND s.customer_id = ANY (p_customers) AND s.id = grp.sub_id
        JOIN callers c ON c.id = grp.customer_id
        JOIN usage_meters m ON m.id = grp.meter_id AND m.pricing_model_id = c.pricing_model_id
        JOIN meter_balances mb ON mb.customer_id = grp.customer_id
                              AND mb.customer_id = ANY (p_customers)
                              AND mb.subscription_id = s.id AND mb.usage_meter_id = m.id
        CROSS JOIN LATERAL billing_period(s.start_date, s.interval_unit, s.interval_count,
                                          v_now) bp
       WHERE (p_caller_customer_id IS NULL OR grp.customer_id = p_caller_customer_id)
         AND grp.customer_id || ':' || grp.sub_id || ':' || grp.meter_id = ANY (v_locked)
         AND s.status IN ('trialing', 'active', 'past_due', 'unpaid', 'cancellation_scheduled')
         AND v_now >= s.start_date
         AND m.aggregation_type = 'sum'
         AND mb.grants_period_start = bp.period_start
    ), items AS (           -- their items, the target resolved, each item checked
      SELECT ctx.gord, i.ord, i.pos,
             (i.item ->> 'event_id')::uuid AS event_id,
             (i.item ->> 'amount')::bigint AS amount,
             i.item ->> 'transaction_id' AS transaction_id,
             CASE WHEN i.item ? 'properties' AND jsonb_typeof(i.item -> 'properties') = 'object'
                  THEN i.item -> 'properties' END AS properties,
             pr.id AS price_id,
             coalesce(i.item ->> 'usage_date' IS NULL
               AND NOT coalesce((i.item ->> 'require_balance')::boolean, false)
               AND pr.active AND pr.type = 'usage' AND pr.usage_meter_id = ctx.meter_id
               AND (p_caller_customer_id IS NULL OR pr.is_default
                    OR i.item ->> 'target_kind' IN ('usageMeterId', 'usageMeterSlug')),
               false) AS ok
               -- No look-up of the item's key: a key already recorded (a replay, a conflict)
               -- fails the insert below with unique_violation, which rolls the statement back
               -- and leaves the whole batch to record_usage_event(), item by item. A probe
               -- per item here was planned on the primary key (customer_id, id) whatever its
               -- form (the redundant customer_id conditions made both indexes look alike):
               -- a scan of the customer's whole history per item.
        FROM ctx
        CROSS JOIN LATERAL (SELECT x.p::integer AS pos, x.ord, p_items -> (x.p::integer - 1) AS item
                              FROM jsonb_array_elements_text(ctx.positions)
                                   WITH ORDINALITY AS x(p, ord)) i
        -- The item's price: one index probe per item, by the form of its target. (One
        -- WHERE CASE ... END over the three forms used no index: each item scanned every
        -- price of every pricing model, 4.8 ms per event with 20,000 prices.)
        LEFT JOIN LATERAL (
          SELECT x.id, x.active, x.type, x.usage_meter_id, x.is_default FROM prices x
           WHERE i.item ->> 'target_kind' = 'priceId'
             AND x.id = (i.item ->> 'target')::uuid AND x.pricing_model_id = ctx.pricing_model_id
          UNION ALL
          SELECT x.id, x.active, x.type, x.usage_meter_id, x.is_default FROM prices x
           WHERE i.item ->> 'target_kind' = 'priceSlug'
             AND x.slug = i.item ->> 'target' AND x.pricing_model_id = ctx.pricing_model_id
          UNION ALL
          SELECT x.id, x.active, x.type, x.usage_meter_id, x.is_default FROM prices x
           WHERE coalesce(i.item ->> 'target_kind', '') NOT IN ('priceId', 'priceSlug')
             AND x.usage_meter_id = ctx.meter_id AND x.is_default AND x.type = 'usage') pr ON true
    ), batch_keys AS (      -- every key of the batch (any group that could record)
      SELECT grp.gord, s.customer_id, grp.meter_id,
             p_items -> (x.p::integer - 1) ->> 'transaction_id' AS tx
        FROM grp
        JOIN subscriptions s ON s.customer_id = grp.customer_id
                            AND s.customer_id = ANY (p_customers) AND s.id = grp.sub_id
        CROSS JOIN LATERAL jsonb_array_elements_text(grp.positions) AS x(p)
    ), shared AS (          -- groups with a key used twice in the batch
      SELECT DISTINCT k.gord
        FROM batch_keys k
        JOIN (SELECT customer_id, meter_id, tx FROM batch_keys
               GROUP BY customer_id, meter_id, tx HAVING count(*) > 1) d
          ON d.customer_id = k.customer_id AND d.meter_id = k.meter_id AND d.tx = k.tx
    ), steady AS (          -- and what each steady group starts from
      SELECT ctx.gord, ctx.sub_id, ctx.meter_id, ctx.customer_id, ctx.pricing_model_id,
             ctx.event_seq, ctx.period_start, ctx.period_end, ctx.period_id, ctx.last_pos,
             gr.remaining, gr.valid, gr.grants, tt.used0, tt.covered0, tt.uncovered0,
             rs.reserved
        FROM ctx
        -- the grants record_usage_event() would allocate from, those valid now (the
        -- balance's), and all of them (whether the meter has a limit)
        CROSS JOIN LATERAL (
          SELECT coalesce(sum(cg.amount - cg.consumed) FILTER (
                   WHERE cg.granted_at <= v_now
                     AND (cg.expires_at IS NULL OR cg.expires_at > v_now)
                     AND cg.consumed < cg.amount AND cg.issued_seq < ctx.event_seq + 1), 0)
                   AS remaining,
                 coalesce(sum(cg.amount - cg.consumed) FILTER (
                   WHERE cg.granted_at <= v_now
                     AND (cg.expires_at IS NULL OR cg.expires_at > v_now)), 0) AS valid,
                 count(*) AS grants
            FROM credit_grants cg
           WHERE cg.customer_id = ctx.customer_id AND cg.customer_id = ANY (p_customers)
             AND cg.subscription_id = ctx.sub_id AND cg.usage_meter_id = ctx.meter_id) gr
        CROSS JOIN LATERAL (
          SELECT coalesce(sum(ut.used), 0) AS used0, coalesce(sum(ut.covered), 0) AS covered0,
                 coalesce(sum(ut.uncovered), 0) AS uncovered0
            FROM usage_totals ut
           WHERE ut.customer_id = ctx.customer_id AND ut.customer_id = ANY (p_customers)
             AND ut.subscription_id = ctx.sub_id
             AND ut.usage_meter_id = ctx.meter_id AND ut.period_start = ctx.period_start) tt
        -- Reservations: open holds are not available (usage_reserved() of reservations.sql,
        -- written out: a function reading a customer's table is not called inside a
        -- statement that reads them).
        CROSS JOIN LATERAL (
          SELECT coalesce(sum(r.amount), 0)::bigint AS reserved FROM usage_reservations r
           WHERE r.customer_id = ctx.customer_id AND r.customer_id = ANY (p_customers)
             AND r.subscription_id = ctx.sub_id
             AND r.usage_meter_id = ctx.meter_id AND r.status = 'held'
             AND r.expires_at > v_now) rs
       WHERE NOT EXISTS (SELECT 1 FROM shared WHERE shared.gord = ctx.gord)
         AND NOT EXISTS (SELECT 1 FROM items WHERE items.gord = ctx.gord AND NOT items.ok)
    ), allocated AS (
      SELECT it.pos, it.ord, it.event_id, it.amount, it.transaction_id, it.properties,
             it.price_id, st.*,
             sum(it.amount) OVER w AS running,
             least(st.remaining, sum(it.amount) OVER w)
               - least(st.remaining, sum(it.amount) OVER w - it.amount) AS covered
        FROM items it
        JOIN steady st ON st.gord = it.gord
      WINDOW w AS (PARTITION BY it.gord ORDER BY it.ord)
    ), laid AS MATERIALIZED (  -- each steady group's grants in allocation order, laid end to
      -- end: grant k covers [cum_start, cum_end) of its group's credits. Computed once and read
      -- by item_takes and takes. (Each joined its own window over the grants before; the
      -- generic plan put item_takes' window inside a nested loop, computed again for every
      -- item: with 25 groups of 4 events, a fifth of the statement's instructions.)
      SELECT st.gord, cg.customer_id, cg.id, row_number() OVER w AS rank,
             cg.amount - cg.consumed AS left_over,
             sum(cg.amount - cg.consumed) OVER w - (cg.amount - cg.consumed) AS cum_start,
             sum(cg.amount - cg.consumed) OVER w AS cum_end
        FROM steady st
        JOIN credit_grants cg
          ON cg.customer_id = st.customer_id AND cg.customer_id = ANY (p_customers)
         AND cg.subscription_id = st.sub_id
         AND cg.usage_meter_id = st.meter_id
         AND cg.granted_at <= v_now AND (cg.expires_at IS NULL OR cg.expires_at > v_now)
         AND cg.consumed < cg.amount AND cg.issued_seq < st.event_seq + 1
      WINDOW w AS (PARTITION BY st.gord
                   ORDER BY cg.expires_at ASC NULLS LAST, cg.granted_at, cg.id)
    ), item_takes AS (      -- what each item took from which grant (a void gives it back):
      -- its covered credits are [lo, hi) of its group's grants laid end to end
      SELECT a.event_id, array_agg(w.id ORDER BY w.rank) AS grant_ids,
             array_agg((least(a.hi, w.cum_end) - greatest(a.lo, w.cum_start))::bigint
                       ORDER BY w.rank) AS takes
        FROM (SELECT al.gord, al.event_id,
                     least(al.remaining, al.running - al.amount) AS lo,
                     least(al.remaining, al.running) AS hi
                FROM allocated al WHERE al.covered > 0) a
        JOIN laid w ON w.gord = a.gord AND w.cum_start < a.hi AND w.cum_end > a.lo
       GROUP BY a.event_id
    ), written AS (
      INSERT INTO usage_events (id, customer_id, subscription_id, usage_meter_id, price_id,
                                billing_period_id, period_start, period_end, amount, consumed,
                                covered, seq, transaction_id, usage_date, properties,
                                properties_given, usage_date_given, take_grant_ids, take_amounts)
      SELECT a.event_id, a.customer_id, a.sub_id, a.meter_id, a.price_id,
             a.period_id, a.period_start, a.period_end,
             a.amount, a.amount, a.covered, a.event_seq + a.ord, a.transaction_id, v_now,
             coalesce(a.properties, '{}'::jsonb), a.properties IS NOT NULL, false,
             coalesce(tk.grant_ids, '{}'::uuid[]), coalesce(tk.takes, '{}'::bigint[])
        FROM allocated a
        LEFT JOIN item_takes tk ON tk.event_id = a.event_id
    ), totals AS (
      INSERT INTO usage_totals AS t (customer_id, subscription_id, usage_meter_id, period_start,
                                     price_id, period_end, used, covered, uncovered)
      SELECT a.customer_id, a.sub_id, a.meter_id, a.period_start, a.price_id, a.period_end,
             sum(a.amount), sum(a.covered), sum(a.amount - a.covered)
        FROM allocated a
       GROUP BY a.customer_id, a.sub_id, a.meter_id, a.period_start, a.price_id, a.period_end
      ON CONFLICT (customer_id, subscription_id, usage_meter_id, period_start, price_id)
      DO UPDATE SET used = t.used + excluded.used, covered = t.covered + excluded.covered,
                    uncovered = t.uncovered + excluded.uncovered
    ), seq_bump AS (
      UPDATE meter_balances mb SET event_seq = mb.event_seq + n.events
        FROM (SELECT customer_id, sub_id, meter_id, count(*) AS events FROM allocated
               GROUP BY customer_id, sub_id, meter_id) n
       WHERE mb.customer_id = n.customer_id AND mb.customer_id = ANY (p_customers)
         AND mb.subscription_id = n.sub_id
         AND mb.usage_meter_id = n.meter_id
    ), takes AS (           -- each group's covered credits, from its grants in order
      SELECT w.customer_id, w.id, least(w.left_over, greatest(0, c.total - w.cum_start)) AS take
        FROM (SELECT gord, sum(covered) AS total FROM allocated GROUP BY gord) c
        JOIN laid w ON w.gord = c.gord
    ), consumed AS (
      UPDATE credit_grants cg SET consumed = cg.consumed + t.take
        FROM takes t
       WHERE cg.customer_id = t.customer_id AND cg.customer_id = ANY (p_customers)
         AND cg.id = t.id AND t.take > 0
    )
    -- The answers are built from what was written, not read back from `written` (a join
    -- of two CTEs is planned without statistics). The event's JSON is _usage_event_json()'s;
    -- created_at is the column's default, now(). All but a group's last item answer by what
    -- differs from it (see above).
    SELECT array_agg(a.pos ORDER BY a.pos),
           array_agg(CASE WHEN v_whole OR a.pos = a.last_pos THEN jsonb_build_object(
             'status', 'recorded',
             'event', jsonb_build_object(
               'id', a.event_id, 'customer_id', a.customer_id, 'subscription_id', a.sub_id,
               'usage_meter_id', a.meter_id, 'price_id', a.price_id,
               'billing_period_id', a.period_id,
               'amount', a.amount, 'transaction_id', a.transaction_id, 'usage_date', v_now,
               'properties', coalesce(a.properties, '{}'::jsonb), 'created_at', v_now,
               'voided_at', NULL, 'void_reason', NULL),
             'balance', jsonb_build_object(
               'subscription_id', a.sub_id, 'usage_meter_id', a.meter_id,
               'available_balance', a.valid - a.uncovered0 - a.running - a.reserved,
               'used_balance', a.used0 + a.running,
               'balance_limit', CASE WHEN a.grants > 0 THEN a.valid + a.covered0 END,
               'reserved_balance', a.reserved,
               'period_start', a.period_start, 'period_end', a.period_end,
               'pricing_model_id', a.pricing_model_id),
             'pricing_model_id', a.pricing_model_id)
           ELSE jsonb_build_object(
             'status', 'recorded', 'same_group_as', a.last_pos, 'price_id', a.price_id,
             'properties', a.properties,
             'available_balance', a.valid - a.uncovered0 - a.running - a.reserved,
             'used_balance', a.used0 + a.running) END ORDER BY a.pos)
      INTO recorded_positions, recorded_results
      FROM allocated a;
  EXCEPTION WHEN unique_violation THEN  -- a key recorded before, or meanwhile: item by item
    RETURN;
  END;
  PERFORM evaluate_usage_alerts_batch(p_customers, recorded_results);  -- alerts hook (alerts.sql): once per group
END;
$$;

-- A batch of the customers p_customers: each item names its customer (customer_id; an item
-- without one is the customer of a one-customer call). Results by position in p_items.
-- p_lock_timeout, when given, bounds every lock wait of the call (the rest of its transaction):
-- group commit gives a short one, so that a batch meeting a row locked elsewhere fails fast
-- and its events are sent alone (gateway.billing.group_commit), not held behind that row.
CREATE OR REPLACE FUNCTION public.record_usage_batch(
  p_customers uuid[],
  p_items jsonb,
  p_caller_customer_id uuid,
  p_backdating interval,
  p_future_tolerance interval,
  p_lock_timeout interval)
RETURNS TABLE (item_position integer, result jsonb)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  v_groups jsonb;
  v_steady jsonb;
  v_foreign boolean;
  v_plan_mode text := current_setting('plan_cache_mode');
  v_done integer[] := '{}';
  v_results jsonb[] := '{}';
  v_steady_results jsonb[];
  grp record;
  it record;
BEGIN
  IF coalesce(cardinality(p_customers), 0) = 0 OR array_position(p_customers, NULL) IS NOT NULL
  THEN
    RAISE EXCEPTION 'record_usage_batch: the customers must be given';
  END IF;
  IF p_lock_timeout IS NOT NULL THEN
    PERFORM set_config('lock_timeout', (extract(epoch FROM p_lock_timeout) * 1000)::bigint || 'ms',
                       true);
  END IF;
  -- The grouping statement with its generic plan: left to choose, PostgreSQL planned it afresh
  -- on every call (its custom plans looked cheaper), and that planning was 6.5% of the
  -- backend's time in bench 2's batch of 100; with the generic plan a batch of 100 costs about
  -- a tenth less, one of 16 about an eighth (paired runs). Set for this statement only (the
  -- caller's mode again below, for the item-by-item path), and not where the customers' rows
  -- are split (_record_usage_steady() says why).
  IF current_setting('citus.version', true) IS NULL
     AND NOT EXISTS (SELECT FROM pg_class WHERE oid = 'usage_events'::regclass AND relkind = 'p')
  THEN
    PERFORM set_config('plan_cache_mode', 'force_generic_plan', true);
  END IF;
  -- Groups of (customer, subscription, meter) in 0003's order; the meter is resolved only to
  -- group.
  WITH items AS (
    SELECT x.ordinality::integer AS pos, x.item, x.cust,
           coalesce((x.item ->> 'subscription_id')::uuid,
                    (SELECT cs.id FROM subscriptions cs
                      WHERE cs.customer_id = x.cust AND cs.customer_id = ANY (p_customers)
                        AND cs.status IN ('trialing', 'active', 'past_due', 'unpaid',
                                          'cancellation_scheduled')
                      ORDER BY cs.created_at DESC, cs.id DESC LIMIT 1)) AS sub_id
      FROM (SELECT e.item, e.ordinality,
                   coalesce((e.item ->> 'customer_id')::uuid,
                            CASE WHEN cardinality(p_customers) = 1 THEN p_customers[1] END)
                     AS cust
              FROM jsonb_array_elements(p_items) WITH ORDINALITY AS e(item, ordinality)) x
  ), resolved AS (
    SELECT i.pos, i.item, i.cust, i.sub_id,
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
      LEFT JOIN subscriptions s ON s.customer_id = i.cust AND s.customer_id = ANY (p_customers)
                               AND s.id = i.sub_id
      LEFT JOIN customers c ON c.id = i.cust AND c.id = ANY (p_customers)
                           AND c.id = s.customer_id
  )
  SELECT jsonb_agg(g.grp ORDER BY g.cust, g.sub_id NULLS FIRST, g.meter_id NULLS FIRST),
         jsonb_agg(g.grp ORDER BY g.cust, g.sub_id NULLS FIRST, g.meter_id NULLS FIRST)
           FILTER (WHERE g.sub_id IS NOT NULL AND g.meter_id IS NOT NULL),
         bool_or(g.foreign_item)
    INTO v_groups, v_steady, v_foreign
    FROM (SELECT r.cust, r.sub_id, r.meter_id,
                 jsonb_build_object('customer', r.cust, 'sub', r.sub_id, 'meter', r.meter_id,
                                    'positions', jsonb_agg(r.pos ORDER BY r.pos)) AS grp,
                 bool_or(r.cust IS NULL OR r.cust <> ALL (p_customers)) AS foreign_item
            FROM resolved r
           GROUP BY r.cust, r.sub_id, r.meter_id) g;
  PERFORM set_config('plan_cache_mode', v_plan_mode, true);
  IF v_foreign THEN
    RAISE EXCEPTION 'record_usage_batch: an item names no customer of the call';
  END IF;

  -- The steady statement costs about as much as two events item by item (measured): it
  -- serves batches of three or more. Its answers come as two arrays, returned in one RETURN
  -- QUERY (a loop of RETURN NEXT over its rows cost about 7% of bench 2's batch).
  IF jsonb_array_length(p_items) >= 3 THEN
    SELECT s.recorded_positions, s.recorded_results INTO v_done, v_steady_results
      FROM _record_usage_steady(p_customers, v_steady, p_items, p_caller_customer_id) s;
    v_done := coalesce(v_done, '{}');
    RETURN QUERY SELECT x.pos, x.res FROM unnest(v_done, v_steady_results) AS x(pos, res);
  END IF;

  PERFORM set_config('gateway.alerts_deferred', 'on', true);  -- alerts hook: once per group, below
  FOR grp IN
    SELECT g.value FROM jsonb_array_elements(v_groups) WITH ORDINALITY AS g(value, ord)
     ORDER BY g.ord
  LOOP
    CONTINUE WHEN (grp.value -> 'positions' ->> 0)::integer = ANY (v_done);
    FOR it IN
      SELECT x.p::integer AS pos, p_items -> (x.p::integer - 1) AS item
        FROM jsonb_array_elements_text(grp.value -> 'positions') WITH ORDINALITY AS x(p, ord)
       ORDER BY x.ord
    LOOP
      item_position := it.pos;
      result := record_usage_event(
        (grp.value ->> 'customer')::uuid,
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
      v_results := v_results || result;  -- alerts hook
      RETURN NEXT;
    END LOOP;
  END LOOP;
  PERFORM set_config('gateway.alerts_deferred', 'off', true);  -- alerts hook
  IF cardinality(v_results) > 0 THEN
    PERFORM evaluate_usage_alerts_batch(p_customers, v_results);  -- alerts hook (alerts.sql): once per group
  END IF;
END;
$$;

-- One customer's batch: record_usage_batch() of that customer alone (the call Citus can
-- delegate to the customer's node by p_customer_id).
CREATE OR REPLACE FUNCTION public.record_usage_events(
  p_customer_id uuid,
  p_items jsonb,
  p_caller_customer_id uuid,
  p_backdating interval,
  p_future_tolerance interval)
RETURNS TABLE (item_position integer, result jsonb)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
  IF p_customer_id IS NULL THEN
    RAISE EXCEPTION 'record_usage_events: the customer must be given';
  END IF;
  RETURN QUERY SELECT * FROM record_usage_batch(ARRAY[p_customer_id], p_items,
                                                p_caller_customer_id, p_backdating,
                                                p_future_tolerance, NULL);
END;
$$;
