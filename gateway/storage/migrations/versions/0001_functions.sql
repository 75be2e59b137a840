-- Functions of the initial schema. The usage-event hot path is one statement:
-- `SELECT record_usage_event(...)` claims the idempotency key, writes the event and moves the
-- balance in the statement's own transaction, so a client never sees one without the other.

-- Time-ordered UUIDs (version 7) without a global sequence; works on PostgreSQL 13 and later.
CREATE OR REPLACE FUNCTION uuid_v7() RETURNS uuid
LANGUAGE sql VOLATILE AS $$
  SELECT encode(
    set_bit(set_bit(
      overlay(uuid_send(gen_random_uuid())
              PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
              FROM 1 FOR 6),
      52, 1), 53, 1),
    'hex')::uuid
$$;

-- The billing period of a subscription that contains `p_at`: periods follow the price's
-- interval from the anchor (start date), each computed from the anchor so month arithmetic
-- clamps to the month's end (Jan 31 + 1 month = Feb 28/29, + 2 months = Mar 31). UTC.
CREATE OR REPLACE FUNCTION billing_period(
  p_anchor timestamptz, p_unit text, p_count integer, p_at timestamptz,
  OUT period_index integer, OUT period_start timestamptz, OUT period_end timestamptz)
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
  a timestamp := p_anchor AT TIME ZONE 'UTC';
  t timestamp := p_at AT TIME ZONE 'UTC';
  step interval;
  months integer;
  k integer;
BEGIN
  step := CASE p_unit
    WHEN 'day' THEN make_interval(days => p_count)
    WHEN 'week' THEN make_interval(weeks => p_count)
    WHEN 'month' THEN make_interval(months => p_count)
    WHEN 'year' THEN make_interval(years => p_count)
  END;
  IF step IS NULL THEN
    RAISE EXCEPTION 'unknown interval unit %', p_unit;
  END IF;
  IF t < a THEN
    k := 0;
  ELSIF p_unit IN ('day', 'week') THEN
    k := floor(extract(epoch FROM t - a) / extract(epoch FROM step))::integer;
  ELSE
    months := p_count * CASE p_unit WHEN 'year' THEN 12 ELSE 1 END;
    k := (((extract(year FROM t) - extract(year FROM a)) * 12
           + extract(month FROM t) - extract(month FROM a))::integer) / months;
    WHILE k > 0 AND a + k * step > t LOOP
      k := k - 1;
    END LOOP;
    WHILE a + (k + 1) * step <= t LOOP
      k := k + 1;
    END LOOP;
  END IF;
  period_index := k;
  period_start := (a + k * step) AT TIME ZONE 'UTC';
  period_end := (a + (k + 1) * step) AT TIME ZONE 'UTC';
END;
$$;

-- Deterministic id of a billing period: periods are derived, not stored.
CREATE OR REPLACE FUNCTION billing_period_id(p_subscription_id uuid, p_period_start timestamptz)
RETURNS uuid LANGUAGE sql IMMUTABLE STRICT AS $$
  SELECT md5(p_subscription_id::text || '/' || extract(epoch FROM p_period_start)::text)::uuid
$$;

-- The balance of one meter on one subscription as of `p_at`. Reads only grants (a handful of
-- rows per subscription) and the period's usage totals: its cost does not grow with history.
-- No row when the meter has neither grants nor usage on the subscription.
CREATE OR REPLACE FUNCTION usage_balance(p_subscription_id uuid, p_meter_id uuid,
                                         p_at timestamptz DEFAULT now())
RETURNS TABLE (subscription_id uuid, usage_meter_id uuid, available_balance bigint,
               used_balance bigint, balance_limit bigint, period_start timestamptz,
               period_end timestamptz)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_variable
DECLARE
  s subscriptions%ROWTYPE;
  p record;
  v_remaining bigint;
  v_virtual bigint;
  v_used bigint;
  v_covered bigint;
  v_uncovered bigint;
  v_has_grants boolean;
BEGIN
  SELECT * INTO s FROM subscriptions WHERE subscriptions.id = p_subscription_id;
  IF NOT FOUND THEN
    RETURN;
  END IF;
  SELECT * INTO p FROM billing_period(s.start_date, s.interval_unit, s.interval_count, p_at);

  SELECT coalesce(sum(g.amount - g.consumed), 0) INTO v_remaining
    FROM credit_grants g
   WHERE g.subscription_id = s.id AND g.usage_meter_id = p_meter_id
     AND g.granted_at <= p_at AND (g.expires_at IS NULL OR g.expires_at > p_at);

  -- Recurring grants of the current period that no event has materialised yet.
  SELECT coalesce(sum(f.amount), 0) INTO v_virtual
    FROM product_features pf JOIN features f ON f.id = pf.feature_id
   WHERE pf.product_id = s.product_id AND f.usage_meter_id = p_meter_id
     AND f.renewal_frequency = 'every_billing_period'
     AND p.period_start <= p_at
     AND NOT EXISTS (SELECT 1 FROM credit_grants g
                      WHERE g.subscription_id = s.id AND g.feature_id = f.id
                        AND g.granted_at = p.period_start);

  v_has_grants := EXISTS (SELECT 1 FROM credit_grants g
                           WHERE g.subscription_id = s.id AND g.usage_meter_id = p_meter_id)
               OR EXISTS (SELECT 1 FROM product_features pf JOIN features f ON f.id = pf.feature_id
                           WHERE pf.product_id = s.product_id AND f.usage_meter_id = p_meter_id);

  IF NOT v_has_grants AND NOT EXISTS (
      SELECT 1 FROM meter_balances mb
       WHERE mb.subscription_id = s.id AND mb.usage_meter_id = p_meter_id) THEN
    RETURN;
  END IF;

  SELECT coalesce(sum(t.used), 0), coalesce(sum(t.covered), 0), coalesce(sum(t.uncovered), 0)
    INTO v_used, v_covered, v_uncovered
    FROM usage_totals t
   WHERE t.subscription_id = s.id AND t.usage_meter_id = p_meter_id
     AND t.period_start = p.period_start;

  subscription_id := s.id;
  usage_meter_id := p_meter_id;
  available_balance := v_remaining + v_virtual - v_uncovered;
  used_balance := v_used;
  balance_limit := CASE WHEN v_has_grants THEN v_remaining + v_virtual + v_covered END;
  period_start := p.period_start;
  period_end := p.period_end;
  RETURN NEXT;
END;
$$;

CREATE OR REPLACE FUNCTION _usage_event_json(e usage_events) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
  SELECT jsonb_build_object(
    'id', e.id, 'customer_id', e.customer_id, 'subscription_id', e.subscription_id,
    'usage_meter_id', e.usage_meter_id, 'price_id', e.price_id,
    'billing_period_id', e.billing_period_id, 'amount', e.amount,
    'transaction_id', e.transaction_id, 'usage_date', e.usage_date,
    'properties', e.properties, 'created_at', e.created_at)
$$;

CREATE OR REPLACE FUNCTION _usage_error(p_code text, p_message text, p_field text[])
RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
  SELECT jsonb_build_object('status', 'error', 'code', p_code, 'message', p_message,
                            'field', to_jsonb(p_field))
$$;

-- Replay or conflict for an event already recorded under the same key.
CREATE OR REPLACE FUNCTION _usage_replay(e usage_events, p_subscription_id uuid, p_price_id uuid,
                                         p_amount bigint, p_usage_date timestamptz,
                                         p_properties jsonb)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
BEGIN
  IF e.subscription_id = p_subscription_id AND e.price_id = p_price_id AND e.amount = p_amount
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

-- Record one usage event. Errors come back as data ({"status": "error", "code": ...}).
--   p_caller_customer_id: the customer of a session token (NULL for a secret key). A customer
--     caller may omit the subscription (its newest current one is used) and may only target a
--     meter or that meter's current default price.
--   p_target_kind: priceId | priceSlug | usageMeterId | usageMeterSlug.
CREATE OR REPLACE FUNCTION record_usage_event(
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
BEGIN
  -- The subscription.
  IF p_subscription_id IS NULL THEN
    SELECT * INTO s FROM subscriptions
     WHERE customer_id = p_caller_customer_id
       AND status IN ('trialing', 'active', 'past_due', 'unpaid', 'cancellation_scheduled')
     ORDER BY created_at DESC, id DESC LIMIT 1;
    IF NOT FOUND THEN
      RETURN _usage_error('NO_CURRENT_SUBSCRIPTION', 'the customer has no current subscription',
                          ARRAY['input', 'subscriptionId']);
    END IF;
  ELSE
    SELECT * INTO s FROM subscriptions WHERE id = p_subscription_id;
    IF NOT FOUND OR (p_caller_customer_id IS NOT NULL AND s.customer_id <> p_caller_customer_id) THEN
      RETURN _usage_error('NOT_FOUND', 'no subscription ' || p_subscription_id,
                          ARRAY['input', 'subscriptionId']);
    END IF;
  END IF;
  SELECT pricing_model_id INTO v_pricing_model_id FROM customers WHERE id = s.customer_id;

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
    IF NOT v_price.active THEN
      RETURN _usage_error('INVALID_INPUT', 'price ' || v_price.slug || ' is archived',
                          v_target_field);
    END IF;
    IF p_caller_customer_id IS NOT NULL AND NOT v_price.is_default THEN
      RETURN _usage_error('FORBIDDEN',
                          'a customer session may only target a meter or its default price',
                          v_target_field);
    END IF;
    SELECT * INTO v_meter FROM usage_meters WHERE id = v_price.usage_meter_id;
  END IF;

  -- Idempotency, fast path: a retry of a recorded event is answered before anything else.
  SELECT * INTO v_existing FROM usage_events
   WHERE customer_id = s.customer_id AND usage_meter_id = v_meter.id
     AND transaction_id = p_transaction_id;
  IF FOUND THEN
    RETURN _usage_replay(v_existing, s.id, v_price.id, p_amount, p_usage_date, p_properties)
           || jsonb_build_object('pricing_model_id', v_pricing_model_id, 'balance',
                (SELECT to_jsonb(b) FROM usage_balance(s.id, v_meter.id, v_now) b));
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
  END IF;

  IF v_meter.aggregation_type = 'count_distinct_properties'
     AND (p_properties IS NULL OR p_properties = '{}'::jsonb) THEN
    RETURN _usage_error('INVALID_INPUT',
                        'meter ' || v_meter.slug || ' counts distinct properties: properties must not be empty',
                        ARRAY['input', 'properties']);
  END IF;

  SELECT * INTO p FROM billing_period(s.start_date, s.interval_unit, s.interval_count, v_date);

  -- Serialise writers of this (subscription, meter): the row lock is held to commit.
  INSERT INTO meter_balances AS mb (subscription_id, usage_meter_id, customer_id, event_seq)
  VALUES (s.id, v_meter.id, s.customer_id, 1)
  ON CONFLICT (subscription_id, usage_meter_id)
  DO UPDATE SET event_seq = mb.event_seq + 1
  RETURNING mb.event_seq INTO v_seq;

  -- Issue the period's recurring grants if no event has yet.
  INSERT INTO credit_grants (id, customer_id, subscription_id, usage_meter_id, feature_id, source,
                             amount, consumed, granted_at, expires_at)
  SELECT uuid_v7(), s.customer_id, s.id, f.usage_meter_id, f.id, 'every_billing_period',
         f.amount, 0, p.period_start, p.period_end
    FROM product_features pf JOIN features f ON f.id = pf.feature_id
   WHERE pf.product_id = s.product_id AND f.usage_meter_id = v_meter.id
     AND f.renewal_frequency = 'every_billing_period'
  ON CONFLICT (subscription_id, feature_id, granted_at) DO NOTHING;

  -- What this event consumes.
  IF v_meter.aggregation_type = 'count_distinct_properties' THEN
    v_hash := md5(p_properties::text);
    v_consume := CASE WHEN EXISTS (
        SELECT 1 FROM usage_distinct_keys k
         WHERE k.subscription_id = s.id AND k.usage_meter_id = v_meter.id
           AND k.period_start = p.period_start AND k.properties_hash = v_hash) THEN 0 ELSE 1 END;
  ELSE
    v_consume := p_amount;
  END IF;

  -- Plan the allocation: soonest-expiring grants first, never-expiring last.
  v_left := v_consume;
  v_available := 0;
  FOR g IN
    SELECT id, amount - consumed AS remaining FROM credit_grants
     WHERE subscription_id = s.id AND usage_meter_id = v_meter.id
       AND granted_at <= v_date AND (expires_at IS NULL OR expires_at > v_date)
       AND consumed < amount
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
       WHERE t.subscription_id = s.id AND t.usage_meter_id = v_meter.id
         AND t.period_start = p.period_start), 0);
    IF v_available < p_amount THEN
      RETURN _usage_error('INSUFFICIENT_BALANCE',
                          'meter ' || v_meter.slug || ' has ' || v_available
                            || ' available, ' || p_amount || ' required',
                          ARRAY['input', 'amount'])
             || jsonb_build_object('meter_id', v_meter.id, 'meter_slug', v_meter.slug,
                                   'available', v_available, 'required', p_amount,
                                   'pricing_model_id', v_pricing_model_id,
                                   'product_id', s.product_id);
    END IF;
  END IF;

  -- Claim the key and write the event. A concurrent claim on another subscription (which
  -- holds another lock) is resolved by the unique constraint: we wait for it and replay.
  INSERT INTO usage_events (id, customer_id, subscription_id, usage_meter_id, price_id,
                            billing_period_id, period_start, period_end, amount, consumed,
                            covered, seq, transaction_id, usage_date, properties,
                            properties_given, usage_date_given)
  VALUES (p_event_id, s.customer_id, s.id, v_meter.id, v_price.id,
          billing_period_id(s.id, p.period_start), p.period_start, p.period_end, p_amount,
          v_consume, v_consume - v_left, v_seq, p_transaction_id, v_date,
          coalesce(p_properties, '{}'::jsonb), p_properties IS NOT NULL, p_usage_date IS NOT NULL)
  ON CONFLICT (customer_id, usage_meter_id, transaction_id) DO NOTHING
  RETURNING * INTO v_event;
  IF NOT FOUND THEN
    SELECT * INTO v_existing FROM usage_events
     WHERE customer_id = s.customer_id AND usage_meter_id = v_meter.id
       AND transaction_id = p_transaction_id;
    RETURN _usage_replay(v_existing, s.id, v_price.id, p_amount, p_usage_date, p_properties)
           || jsonb_build_object('pricing_model_id', v_pricing_model_id, 'balance',
                (SELECT to_jsonb(b) FROM usage_balance(s.id, v_meter.id, v_now) b));
  END IF;

  -- Move the balance.
  IF v_meter.aggregation_type = 'count_distinct_properties' AND v_consume > 0 THEN
    INSERT INTO usage_distinct_keys (subscription_id, usage_meter_id, period_start,
                                     properties_hash, customer_id)
    VALUES (s.id, v_meter.id, p.period_start, v_hash, s.customer_id);
  END IF;
  IF cardinality(v_grant_ids) > 0 THEN
    UPDATE credit_grants cg SET consumed = cg.consumed + x.take
      FROM unnest(v_grant_ids, v_takes) AS x(id, take)
     WHERE cg.id = x.id;
  END IF;
  INSERT INTO usage_totals AS t (subscription_id, usage_meter_id, period_start, price_id,
                                 customer_id, period_end, used, covered, uncovered)
  VALUES (s.id, v_meter.id, p.period_start, v_price.id, s.customer_id, p.period_end,
          v_consume, v_consume - v_left, v_left)
  ON CONFLICT (subscription_id, usage_meter_id, period_start, price_id)
  DO UPDATE SET used = t.used + excluded.used, covered = t.covered + excluded.covered,
                uncovered = t.uncovered + excluded.uncovered;

  SELECT to_jsonb(b) INTO v_balance FROM usage_balance(s.id, v_meter.id, v_now) b;
  RETURN jsonb_build_object('status', 'recorded', 'event', _usage_event_json(v_event),
                            'balance', v_balance, 'pricing_model_id', v_pricing_model_id);
END;
$$;

-- A batch: items in order of (subscription, target) so that concurrent batches lock
-- (subscription, meter) rows in one order; results come back keyed by input position.
-- Items are independent: an item's error is data and does not affect the others.
CREATE OR REPLACE FUNCTION record_usage_events(
  p_items jsonb,
  p_caller_customer_id uuid,
  p_backdating interval,
  p_future_tolerance interval)
RETURNS TABLE (item_position integer, result jsonb)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  it record;
BEGIN
  FOR it IN
    SELECT x.ordinality::integer AS pos, x.item
      FROM jsonb_array_elements(p_items) WITH ORDINALITY AS x(item, ordinality)
     ORDER BY x.item ->> 'subscription_id' NULLS FIRST, x.item ->> 'target_kind',
              x.item ->> 'target', x.ordinality
  LOOP
    item_position := it.pos;
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
END;
$$;
