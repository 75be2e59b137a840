-- Recording one usage event: target, ownership, dates, idempotency, requireBalance,
-- grant consumption and the balance after it, in one statement.
--
-- Shard-local (gateway/storage/distribution.py): the customer is the first argument, never
-- NULL (the gateway resolves it before the call), and every statement filters and joins by
-- customer_id. No statement that reads a customer's tables calls a function that reads them
-- too (on a shard that would be a distributed query inside a shard's query): such functions
-- are called in assignments of their own.
--
-- The one current definition of each function below. Edit it here, then make a migration
-- with `alembic revision --autogenerate` (docs/architecture.md).

CREATE OR REPLACE FUNCTION public._usage_event_json(e usage_events) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
  SELECT jsonb_build_object(
    'id', e.id, 'customer_id', e.customer_id, 'subscription_id', e.subscription_id,
    'usage_meter_id', e.usage_meter_id, 'price_id', e.price_id,
    'billing_period_id', e.billing_period_id, 'amount', e.amount,
    'transaction_id', e.transaction_id, 'usage_date', e.usage_date,
    'properties', e.properties, 'created_at', e.created_at,
    'voided_at', e.voided_at, 'void_reason', e.void_reason)
$$;

CREATE OR REPLACE FUNCTION public._usage_error(p_code text, p_message text, p_field text[])
RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
  SELECT jsonb_build_object('status', 'error', 'code', p_code, 'message', p_message,
                            'field', to_jsonb(p_field))
$$;

CREATE OR REPLACE FUNCTION public._usage_replay(e usage_events, p_subscription_id uuid, p_price_id uuid,
                                         p_amount bigint, p_usage_date timestamptz,
                                         p_properties jsonb)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
BEGIN
  -- p_price_id is NULL when the request named a meter: its default price may have changed.
  IF e.subscription_id = p_subscription_id
     AND (p_price_id IS NULL OR e.price_id = p_price_id) AND e.amount = p_amount
     AND (p_usage_date IS NULL OR e.usage_date = p_usage_date)
     AND e.properties = coalesce(p_properties, '{}'::jsonb) THEN
    RETURN jsonb_build_object('status', 'replayed', 'event', _usage_event_json(e));
  END IF;
  RETURN _usage_error('IDEMPOTENCY_CONFLICT',
                      'transactionId ' || e.transaction_id
                        || ' was already recorded with a different payload',
                      ARRAY['input', 'transactionId'])
         || jsonb_build_object('event', _usage_event_json(e));
END;
$$;

CREATE OR REPLACE FUNCTION public.record_usage_event(
  p_customer_id uuid,
  p_event_id uuid,
  p_caller_customer_id uuid,
  p_subscription_id uuid,
  p_target_kind text,
  p_target text,
  p_amount bigint,
  p_transaction_id text,
  p_usage_date timestamptz,
  p_properties jsonb,
  p_require_balance boolean,
  p_backdating interval,
  p_future_tolerance interval)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_variable
DECLARE
  v_now timestamptz := now();
  s subscriptions%ROWTYPE;
  v_pricing_model_id uuid;
  v_price prices%ROWTYPE;
  v_meter usage_meters%ROWTYPE;
  v_existing usage_events%ROWTYPE;
  v_event usage_events%ROWTYPE;
  v_date timestamptz;
  p record;
  v_seq bigint;
  v_issued timestamptz;
  v_replay_price uuid;
  v_consume bigint;
  v_hash text;
  v_available bigint;
  v_left bigint;
  v_take bigint;
  v_grant_ids uuid[] := '{}';
  v_takes bigint[] := '{}';
  g record;
  v_target_field text[] := ARRAY['input', 'target', p_target_kind];
  v_balance jsonb;
  v_reserved bigint;
BEGIN
  IF p_customer_id IS NULL THEN
    RAISE EXCEPTION 'record_usage_event: the customer must be given';
  END IF;
  -- The subscription, of the customer (a customer session's own: the gateway passes it as
  -- p_customer_id; anything else is answered like a missing subscription).
  IF p_caller_customer_id IS NOT NULL AND p_caller_customer_id <> p_customer_id THEN
    RETURN _usage_error('NOT_FOUND', 'no subscription ' || coalesce(p_subscription_id::text, ''),
                        ARRAY['input', 'subscriptionId']);
  END IF;
  IF p_subscription_id IS NULL THEN
    SELECT * INTO s FROM subscriptions
     WHERE customer_id = p_customer_id
       AND status IN ('trialing', 'active', 'past_due', 'unpaid', 'cancellation_scheduled')
     ORDER BY created_at DESC, id DESC LIMIT 1;
    IF NOT FOUND THEN
      RETURN _usage_error('NO_CURRENT_SUBSCRIPTION', 'the customer has no current subscription',
                          ARRAY['input', 'subscriptionId']);
    END IF;
  ELSE
    SELECT * INTO s FROM subscriptions
     WHERE customer_id = p_customer_id AND id = p_subscription_id;
    IF NOT FOUND THEN
      RETURN _usage_error('NOT_FOUND', 'no subscription ' || p_subscription_id,
                          ARRAY['input', 'subscriptionId']);
    END IF;
  END IF;
  SELECT pricing_model_id INTO v_pricing_model_id FROM customers WHERE id = p_customer_id;

  -- The target: a price, or a meter resolved to its default price.
  IF p_target_kind IN ('usageMeterId', 'usageMeterSlug') THEN
    IF p_target_kind = 'usageMeterId' THEN
      SELECT * INTO v_meter FROM usage_meters
       WHERE id = p_target::uuid AND pricing_model_id = v_pricing_model_id;
    ELSE
      SELECT * INTO v_meter FROM usage_meters
       WHERE slug = p_target AND pricing_model_id = v_pricing_model_id;
    END IF;
    IF NOT FOUND THEN
      RETURN _usage_error('NOT_FOUND', 'no usage meter ' || p_target || ' in the customer''s pricing model',
                          v_target_field);
    END IF;
    SELECT * INTO v_price FROM prices
     WHERE usage_meter_id = v_meter.id AND is_default AND type = 'usage';
  ELSE
    IF p_target_kind = 'priceId' THEN
      SELECT * INTO v_price FROM prices
       WHERE id = p_target::uuid AND pricing_model_id = v_pricing_model_id;
    ELSE
      SELECT * INTO v_price FROM prices
       WHERE slug = p_target AND pricing_model_id = v_pricing_model_id;
    END IF;
    IF NOT FOUND THEN
      RETURN _usage_error('NOT_FOUND', 'no price ' || p_target || ' in the customer''s pricing model',
                          v_target_field);
    END IF;
    IF v_price.type <> 'usage' THEN
      RETURN _usage_error('INVALID_INPUT', 'price ' || v_price.slug || ' is not a usage price',
                          v_target_field);
    END IF;
    IF p_caller_customer_id IS NOT NULL AND NOT v_price.is_default THEN
      RETURN _usage_error('FORBIDDEN',
                          'a customer session may only target a meter or its default price',
                          v_target_field);
    END IF;
    SELECT * INTO v_meter FROM usage_meters WHERE id = v_price.usage_meter_id;
  END IF;

  -- Idempotency, fast path: a retry of a recorded event is answered before anything else. A
  -- retry that names a meter is a replay even if the meter's default price changed since.
  v_replay_price := CASE WHEN p_target_kind IN ('priceId', 'priceSlug') THEN v_price.id END;
  SELECT * INTO v_existing FROM usage_events
   WHERE customer_id = p_customer_id AND usage_meter_id = v_meter.id
     AND transaction_id = p_transaction_id;
  IF FOUND THEN
    RETURN _usage_replay(v_existing, s.id, v_replay_price, p_amount, p_usage_date, p_properties)
           || jsonb_build_object('pricing_model_id', v_pricing_model_id, 'balance',
                (SELECT to_jsonb(b) FROM usage_balance(p_customer_id, s.id, v_meter.id, v_now) b));
  END IF;

  IF NOT v_price.active THEN
    RETURN _usage_error('INVALID_INPUT', 'price ' || v_price.slug || ' is archived',
                        v_target_field);
  END IF;

  IF s.status NOT IN ('trialing', 'active', 'past_due', 'unpaid', 'cancellation_scheduled') THEN
    RETURN _usage_error('NO_CURRENT_SUBSCRIPTION',
                        'subscription ' || s.id || ' is ' || s.status || ', not current',
                        ARRAY['input', 'subscriptionId']);
  END IF;

  v_date := coalesce(p_usage_date, v_now);
  IF v_date < s.start_date THEN
    RETURN _usage_error('INVALID_INPUT', 'usageDate is before the subscription started',
                        ARRAY['input', 'usageDate']);
  ELSIF v_date > v_now + p_future_tolerance THEN
    RETURN _usage_error('INVALID_INPUT', 'usageDate is too far in the future',
                        ARRAY['input', 'usageDate']);
  ELSIF v_date < v_now - p_backdating THEN
    RETURN _usage_error('INVALID_INPUT', 'usageDate is older than the backdating window',
                        ARRAY['input', 'usageDate']);
  ELSIF p_caller_customer_id IS NOT NULL
        AND v_date < (SELECT cp.period_start
                        FROM billing_period(s.start_date, s.interval_unit, s.interval_count,
                                            v_now) cp) THEN
    RETURN _usage_error('INVALID_INPUT',
                        'a customer session may only date usage inside the current billing period',
                        ARRAY['input', 'usageDate']);
  END IF;

  IF v_meter.aggregation_type = 'count_distinct_properties'
     AND (p_properties IS NULL OR p_properties = '{}'::jsonb) THEN
    RETURN _usage_error('INVALID_INPUT',
                        'meter ' || v_meter.slug || ' counts distinct properties: properties must not be empty',
                        ARRAY['input', 'properties']);
  END IF;

  SELECT * INTO p FROM billing_period(s.start_date, s.interval_unit, s.interval_count, v_date);

  -- Serialise writers of this (subscription, meter): the row lock is held to commit. The row
  -- also remembers the latest period whose recurring grants were issued: the upsert leaves it
  -- as it was, so RETURNING gives the value before this event, read under the lock (one
  -- statement: Citus refuses a subquery in an INSERT's RETURNING, PostgreSQL 15 has no
  -- RETURNING OLD). A new row starts with none.
  INSERT INTO meter_balances AS mb (customer_id, subscription_id, usage_meter_id, event_seq)
  VALUES (p_customer_id, s.id, v_meter.id, 1)
  ON CONFLICT (customer_id, subscription_id, usage_meter_id)
  DO UPDATE SET event_seq = mb.event_seq + 1
  RETURNING mb.event_seq, mb.grants_period_start INTO v_seq, v_issued;

  -- Issue the period's recurring grants if no event has yet (a backdated event's older
  -- period: again, idempotently; the row keeps the latest period).
  IF v_issued IS DISTINCT FROM p.period_start THEN
    IF v_issued IS NULL OR v_issued < p.period_start THEN
      UPDATE meter_balances SET grants_period_start = p.period_start
       WHERE customer_id = p_customer_id AND subscription_id = s.id
         AND usage_meter_id = v_meter.id;
    END IF;
    INSERT INTO credit_grants (id, customer_id, subscription_id, usage_meter_id, feature_id,
                               source, amount, consumed, granted_at, expires_at, issued_seq)
    SELECT uuid_v7(), p_customer_id, s.id, f.usage_meter_id, f.id, 'every_billing_period',
           f.amount, 0, p.period_start, p.period_end, v_seq - 1
      FROM product_features pf JOIN features f ON f.id = pf.feature_id
     WHERE pf.product_id = s.product_id AND f.usage_meter_id = v_meter.id
       AND f.renewal_frequency = 'every_billing_period'
    ON CONFLICT (customer_id, subscription_id, feature_id, granted_at) DO NOTHING;
  END IF;

  -- What this event consumes.
  IF v_meter.aggregation_type = 'count_distinct_properties' THEN
    v_hash := md5(p_properties::text);
    v_consume := CASE WHEN EXISTS (
        SELECT 1 FROM usage_distinct_keys k
         WHERE k.customer_id = p_customer_id AND k.subscription_id = s.id
           AND k.usage_meter_id = v_meter.id AND k.period_start = p.period_start
           AND k.properties_hash = v_hash) THEN 0 ELSE 1 END;
  ELSE
    v_consume := p_amount;
  END IF;

  -- Plan the allocation: soonest-expiring grants first, never-expiring last.
  v_left := v_consume;
  v_available := 0;
  FOR g IN
    SELECT id, amount - consumed AS remaining FROM credit_grants
     WHERE customer_id = p_customer_id AND subscription_id = s.id AND usage_meter_id = v_meter.id
       AND granted_at <= v_date AND (expires_at IS NULL OR expires_at > v_date)
       AND consumed < amount AND issued_seq < v_seq
     ORDER BY expires_at ASC NULLS LAST, granted_at, id
  LOOP
    v_available := v_available + g.remaining;
    IF v_left > 0 THEN
      v_take := least(v_left, g.remaining);
      v_grant_ids := v_grant_ids || g.id;
      v_takes := v_takes || v_take;
      v_left := v_left - v_take;
    END IF;
  END LOOP;

  IF p_require_balance THEN
    v_available := v_available - coalesce((
      SELECT sum(t.uncovered) FROM usage_totals t
       WHERE t.customer_id = p_customer_id AND t.subscription_id = s.id
         AND t.usage_meter_id = v_meter.id AND t.period_start = p.period_start), 0);
    -- Reservations: open holds are not available (reservations.sql).
    v_reserved := usage_reserved(p_customer_id, s.id, v_meter.id, v_now);
    v_available := v_available - v_reserved;
    IF v_available < v_consume THEN
      RETURN _usage_error('INSUFFICIENT_BALANCE',
                          'meter ' || v_meter.slug || ' has ' || v_available
                            || ' available, ' || v_consume || ' required',
                          ARRAY['input', 'amount'])
             || jsonb_build_object('meter_id', v_meter.id, 'meter_slug', v_meter.slug,
                                   'available', v_available, 'required', v_consume,
                                   'pricing_model_id', v_pricing_model_id,
                                   'product_id', s.product_id);
    END IF;
  END IF;

  -- Claim the key and write the event. A concurrent claim on another subscription (which
  -- holds another lock) is resolved by the unique constraint: we wait for it and replay.
  INSERT INTO usage_events (id, customer_id, subscription_id, usage_meter_id, price_id,
                            billing_period_id, period_start, period_end, amount, consumed,
                            covered, seq, transaction_id, usage_date, properties,
                            properties_given, usage_date_given, take_grant_ids, take_amounts)
  VALUES (p_event_id, p_customer_id, s.id, v_meter.id, v_price.id,
          billing_period_id(s.id, p.period_start), p.period_start, p.period_end, p_amount,
          v_consume, v_consume - v_left, v_seq, p_transaction_id, v_date,
          coalesce(p_properties, '{}'::jsonb), p_properties IS NOT NULL, p_usage_date IS NOT NULL,
          v_grant_ids, v_takes)
  ON CONFLICT (customer_id, usage_meter_id, transaction_id) DO NOTHING
  RETURNING * INTO v_event;
  IF NOT FOUND THEN
    SELECT * INTO v_existing FROM usage_events
     WHERE customer_id = p_customer_id AND usage_meter_id = v_meter.id
       AND transaction_id = p_transaction_id;
    RETURN _usage_replay(v_existing, s.id, v_replay_price, p_amount, p_usage_date, p_properties)
           || jsonb_build_object('pricing_model_id', v_pricing_model_id, 'balance',
                (SELECT to_jsonb(b) FROM usage_balance(p_customer_id, s.id, v_meter.id, v_now) b));
  END IF;

  -- Move the balance.
  IF v_meter.aggregation_type = 'count_distinct_properties' AND v_consume > 0 THEN
    INSERT INTO usage_distinct_keys (customer_id, subscription_id, usage_meter_id,
                                     period_start, properties_hash)
    VALUES (p_customer_id, s.id, v_meter.id, p.period_start, v_hash);
  END IF;
  FOR i IN 1 .. coalesce(cardinality(v_grant_ids), 0) LOOP
    UPDATE credit_grants SET consumed = consumed + v_takes[i]
     WHERE customer_id = p_customer_id AND id = v_grant_ids[i];
  END LOOP;
  INSERT INTO usage_totals AS t (customer_id, subscription_id, usage_meter_id, period_start,
                                 price_id, period_end, used, covered, uncovered)
  VALUES (p_customer_id, s.id, v_meter.id, p.period_start, v_price.id, p.period_end,
          v_consume, v_consume - v_left, v_left)
  ON CONFLICT (customer_id, subscription_id, usage_meter_id, period_start, price_id)
  DO UPDATE SET used = t.used + excluded.used, covered = t.covered + excluded.covered,
                uncovered = t.uncovered + excluded.uncovered;

  -- The balance after the event. In the usual case (the event is in the current period) it is
  -- computed from rows this statement just wrote: the period's recurring grants exist, and the
  -- product's one-time grants were issued with the subscription, so usage_balance()'s virtual
  -- grants and feature look-ups are not needed. Otherwise usage_balance() answers.
  IF v_now >= p.period_start AND v_now < p.period_end THEN
    v_reserved := usage_reserved(p_customer_id, s.id, v_meter.id, v_now);  -- reservations
    SELECT jsonb_build_object(
             'subscription_id', s.id, 'usage_meter_id', v_meter.id,
             'available_balance', gr.remaining - t.uncovered - v_reserved,
             'used_balance', t.used,
             'balance_limit', CASE WHEN gr.grants > 0 THEN gr.remaining + t.covered END,
             'reserved_balance', v_reserved,
             'period_start', p.period_start, 'period_end', p.period_end,
             'pricing_model_id', v_pricing_model_id)
      INTO v_balance
      FROM (SELECT coalesce(sum(cg.amount - cg.consumed) FILTER (
                     WHERE cg.granted_at <= v_now
                       AND (cg.expires_at IS NULL OR cg.expires_at > v_now)), 0) AS remaining,
                   count(*) AS grants
              FROM credit_grants cg
             WHERE cg.customer_id = p_customer_id AND cg.subscription_id = s.id
               AND cg.usage_meter_id = v_meter.id) gr,
           (SELECT coalesce(sum(ut.used), 0) AS used, coalesce(sum(ut.covered), 0) AS covered,
                   coalesce(sum(ut.uncovered), 0) AS uncovered
              FROM usage_totals ut
             WHERE ut.customer_id = p_customer_id AND ut.subscription_id = s.id
               AND ut.usage_meter_id = v_meter.id AND ut.period_start = p.period_start) t;
  ELSE
    SELECT to_jsonb(b) INTO v_balance
      FROM usage_balance(p_customer_id, s.id, v_meter.id, v_now) b;
  END IF;
  PERFORM evaluate_usage_alerts(p_customer_id, s.id, v_meter.id, v_balance);  -- alerts hook (alerts.sql)
  RETURN jsonb_build_object('status', 'recorded', 'event', _usage_event_json(v_event),
                            'balance', v_balance, 'pricing_model_id', v_pricing_model_id);
END;
$$;
