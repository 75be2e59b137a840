-- Reservations: holds on a meter's balance (reserveUsage), settled by one usage event
-- (finalizeUsageReservation) or given back (releaseUsageReservation).
--
-- A hold counts against availableBalance while its status is 'held' and expires_at lies
-- ahead: an expired hold is freed on every read at once, with no job having run. The sweep
-- only rewrites such rows to 'expired' so the partial index of held rows stays small.
--
-- Shard-local like usage.sql: the customer is the first argument (never NULL) and every
-- statement filters by it (gateway/storage/distribution.py). The sweep is the merchant's
-- tidy-up across all customers.
--
-- The one current definition of each function below. Edit it here, then make a migration
-- with `alembic revision --autogenerate` (docs/architecture.md).

-- What open holds keep from a (subscription, meter) at a moment: every reader subtracts it.
CREATE OR REPLACE FUNCTION public.usage_reserved(p_customer_id uuid, p_subscription_id uuid,
                                          p_meter_id uuid, p_at timestamptz)
RETURNS bigint LANGUAGE sql STABLE AS $$
  SELECT coalesce(sum(r.amount), 0)::bigint FROM usage_reservations r
   WHERE r.customer_id = p_customer_id AND r.subscription_id = p_subscription_id AND r.usage_meter_id = p_meter_id
     AND r.status = 'held' AND r.expires_at > p_at
$$;

-- PL/pgSQL, not SQL: Citus cannot plan a SQL function's statement on a distributed table
-- with the function's parameters in it. The event is read into a variable of the table's row
-- type first: on a shard, a row read from the shard has the shard's type.
CREATE OR REPLACE FUNCTION public._usage_reservation_json(r usage_reservations, p_at timestamptz)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
  e usage_events%ROWTYPE;
  v_event jsonb;
BEGIN
  IF r.usage_event_id IS NOT NULL THEN
    SELECT * INTO e FROM usage_events x
     WHERE x.customer_id = r.customer_id AND x.id = r.usage_event_id;
    IF FOUND THEN
      v_event := _usage_event_json(e);
    END IF;
  END IF;
  RETURN jsonb_build_object(
    'id', r.id, 'customer_id', r.customer_id, 'subscription_id', r.subscription_id,
    'usage_meter_id', r.usage_meter_id, 'price_id', r.price_id, 'amount', r.amount,
    'transaction_id', r.transaction_id,
    'status', CASE WHEN r.status = 'held' AND r.expires_at <= p_at THEN 'expired'
                   ELSE r.status END,
    'expires_at', r.expires_at, 'usage_event_id', r.usage_event_id, 'usage_event', v_event);
END;
$$;

-- A repeat of a hold's transactionId: a replay when it asks for the same hold, else refused.
CREATE OR REPLACE FUNCTION public._usage_reservation_replay(r usage_reservations,
                                                     p_subscription_id uuid, p_price_id uuid,
                                                     p_amount bigint, p_pricing_model_id uuid)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
  v_event usage_events%ROWTYPE;
BEGIN
  -- p_price_id is NULL when the request named a meter (as for usage events).
  IF r.subscription_id = p_subscription_id AND r.amount = p_amount
     AND (p_price_id IS NULL OR r.price_id = p_price_id) THEN
    RETURN jsonb_build_object('status', 'replayed',
                              'reservation', _usage_reservation_json(r, now()),
                              'pricing_model_id', p_pricing_model_id, 'balance',
      (SELECT to_jsonb(b)
         FROM usage_balance(r.customer_id, r.subscription_id, r.usage_meter_id, now()) b));
  END IF;
  SELECT * INTO v_event FROM usage_events
   WHERE customer_id = r.customer_id AND id = r.usage_event_id;
  IF FOUND THEN
    RETURN _usage_error('IDEMPOTENCY_CONFLICT',
                        'transactionId ' || r.transaction_id
                          || ' was already reserved with a different payload',
                        ARRAY['input', 'transactionId'])
           || jsonb_build_object('event', _usage_event_json(v_event));
  END IF;
  RETURN _usage_error('INVALID_INPUT',
                      'transactionId ' || r.transaction_id
                        || ' is held by a reservation with a different payload',
                      ARRAY['input', 'transactionId']);
END;
$$;

CREATE OR REPLACE FUNCTION public.reserve_usage(
  p_customer_id uuid,
  p_reservation_id uuid,
  p_caller_customer_id uuid,
  p_subscription_id uuid,
  p_target_kind text,
  p_target text,
  p_amount bigint,
  p_transaction_id text,
  p_expires_in interval)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_variable
DECLARE
  v_balance jsonb;
  v_now timestamptz := now();
  s subscriptions%ROWTYPE;
  v_pricing_model_id uuid;
  v_price prices%ROWTYPE;
  v_meter usage_meters%ROWTYPE;
  v_existing usage_reservations%ROWTYPE;
  v_reservation usage_reservations%ROWTYPE;
  v_event usage_events%ROWTYPE;
  p record;
  v_seq bigint;
  v_issued timestamptz;
  v_available bigint;
  v_replay_price uuid;
  v_target_field text[] := ARRAY['input', 'target', p_target_kind];
BEGIN
  IF p_customer_id IS NULL THEN
    RAISE EXCEPTION 'reserve_usage: the customer must be given';
  END IF;
  -- The subscription and the target, exactly as record_usage_event() resolves them.
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

  -- Idempotency, fast path: a retry is answered from the hold it made, before anything
  -- else (like a retry of an event, even if the subscription ended since).
  v_replay_price := CASE WHEN p_target_kind IN ('priceId', 'priceSlug') THEN v_price.id END;
  SELECT * INTO v_existing FROM usage_reservations
   WHERE customer_id = p_customer_id AND usage_meter_id = v_meter.id
     AND transaction_id = p_transaction_id;
  IF FOUND THEN
    RETURN _usage_reservation_replay(v_existing, s.id, v_replay_price, p_amount,
                                     v_pricing_model_id);
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
  IF v_now < s.start_date THEN
    RETURN _usage_error('INVALID_INPUT', 'the subscription has not started',
                        ARRAY['input', 'subscriptionId']);
  END IF;

  SELECT * INTO p FROM billing_period(s.start_date, s.interval_unit, s.interval_count, v_now);

  -- record_usage_event()'s (subscription, meter) lock, without taking a place in the event
  -- order: a hold is decided under the same lock as requireBalance and every other hold.
  -- The row's issued period before this call, read under the lock (record_usage_event()).
  INSERT INTO meter_balances AS mb (customer_id, subscription_id, usage_meter_id, event_seq)
  VALUES (p_customer_id, s.id, v_meter.id, 0)
  ON CONFLICT (customer_id, subscription_id, usage_meter_id)
  DO UPDATE SET event_seq = mb.event_seq
  RETURNING mb.event_seq, mb.grants_period_start INTO v_seq, v_issued;

  -- The period's recurring grants, as the first event of the period would issue them (the
  -- lock row now says they are issued; usable by the next event: its seq is event_seq + 1).
  IF v_issued IS DISTINCT FROM p.period_start THEN
    IF v_issued IS NULL OR v_issued < p.period_start THEN
      UPDATE meter_balances SET grants_period_start = p.period_start
       WHERE customer_id = p_customer_id AND subscription_id = s.id
         AND usage_meter_id = v_meter.id;
    END IF;
    INSERT INTO credit_grants (id, customer_id, subscription_id, usage_meter_id, feature_id,
                               source, amount, consumed, granted_at, expires_at, issued_seq)
    SELECT uuid_v7(), p_customer_id, s.id, f.usage_meter_id, f.id, 'every_billing_period',
           f.amount, 0, p.period_start, p.period_end, v_seq
      FROM product_features pf JOIN features f ON f.id = pf.feature_id
     WHERE pf.product_id = s.product_id AND f.usage_meter_id = v_meter.id
       AND f.renewal_frequency = 'every_billing_period'
    ON CONFLICT (customer_id, subscription_id, feature_id, granted_at) DO NOTHING;
  END IF;

  -- Under the lock: a concurrent retry on this subscription may have made the hold since.
  SELECT * INTO v_existing FROM usage_reservations
   WHERE customer_id = p_customer_id AND usage_meter_id = v_meter.id
     AND transaction_id = p_transaction_id;
  IF FOUND THEN
    RETURN _usage_reservation_replay(v_existing, s.id, v_replay_price, p_amount,
                                     v_pricing_model_id);
  END IF;
  -- A key already spent by a usage event cannot hold anything: its event would be a replay.
  SELECT * INTO v_event FROM usage_events
   WHERE customer_id = p_customer_id AND usage_meter_id = v_meter.id
     AND transaction_id = p_transaction_id;
  IF FOUND THEN
    RETURN _usage_error('IDEMPOTENCY_CONFLICT',
                        'transactionId ' || p_transaction_id || ' was already recorded as usage',
                        ARRAY['input', 'transactionId'])
           || jsonb_build_object('event', _usage_event_json(v_event));
  END IF;

  -- The decision: what is available now, other holds excluded, covers the hold.
  SELECT b.available_balance INTO v_available FROM usage_balance(p_customer_id, s.id, v_meter.id, v_now) b;
  v_available := coalesce(v_available, 0);
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

  -- Another subscription of the customer may claim the key at the same time (it holds
  -- another lock): the unique key decides, and the loser answers from the winner's hold.
  INSERT INTO usage_reservations (id, customer_id, subscription_id, usage_meter_id, price_id,
                                  target_kind, target, amount, transaction_id, status,
                                  expires_at)
  VALUES (p_reservation_id, p_customer_id, s.id, v_meter.id, v_price.id, p_target_kind,
          p_target, p_amount, p_transaction_id, 'held', v_now + p_expires_in)
  ON CONFLICT (customer_id, usage_meter_id, transaction_id) DO NOTHING
  RETURNING * INTO v_reservation;
  IF NOT FOUND THEN
    RETURN _usage_error('INVALID_INPUT',
                        'transactionId ' || p_transaction_id
                          || ' is held by a reservation of another subscription',
                        ARRAY['input', 'transactionId']);
  END IF;

  v_balance := (SELECT to_jsonb(b) FROM usage_balance(p_customer_id, s.id, v_meter.id, v_now) b);
  -- A hold lowers availableBalance.
  PERFORM evaluate_usage_alerts(p_customer_id, s.id, v_meter.id, v_balance);  -- alerts hook (alerts.sql)
  RETURN jsonb_build_object('status', 'reserved',
                            'reservation', _usage_reservation_json(v_reservation, v_now),
                            'pricing_model_id', v_pricing_model_id, 'balance', v_balance);
END;
$$;

CREATE OR REPLACE FUNCTION public.finalize_usage_reservation(
  p_customer_id uuid,
  p_event_id uuid,
  p_caller_customer_id uuid,
  p_reservation_id uuid,
  p_amount bigint,
  p_properties jsonb,
  p_backdating interval,
  p_future_tolerance interval)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_variable
DECLARE
  v_balance jsonb;
  v_now timestamptz := now();
  r usage_reservations%ROWTYPE;
  v_result jsonb;
  v_deferred text := current_setting('gateway.alerts_deferred', true);
BEGIN
  -- Another customer's reservation is answered exactly like a missing one.
  SELECT * INTO r FROM usage_reservations
   WHERE customer_id = p_customer_id AND id = p_reservation_id
     AND (p_caller_customer_id IS NULL OR customer_id = p_caller_customer_id)
     FOR UPDATE;
  IF NOT FOUND THEN
    RETURN _usage_error('NOT_FOUND', 'no reservation ' || p_reservation_id,
                        ARRAY['input', 'reservationId']);
  END IF;
  IF r.status = 'released' THEN
    RETURN _usage_error('INVALID_INPUT',
                        'reservation ' || r.id || ' was released: there is nothing to finalize',
                        ARRAY['input', 'reservationId']);
  END IF;

  -- The event, by record_usage_event()'s rules: a repeat is a replay, another amount or
  -- properties a conflict. The hold was decided when it was made (no requireBalance here:
  -- the work is done), and an expired hold still records. The caller's ownership was
  -- checked above, so the event is recorded as the merchant's (a customer's rules on the
  -- target were applied when the hold was made; the date is now).
  -- Alerts hook: the event's own evaluation is deferred, since it would see the hold still
  -- counted (a balance that never exists once this commits); the one below sees the final.
  PERFORM set_config('gateway.alerts_deferred', 'on', true);
  v_result := record_usage_event(p_customer_id, p_event_id, NULL, r.subscription_id, r.target_kind, r.target,
                                 p_amount, r.transaction_id, NULL, p_properties, false,
                                 p_backdating, p_future_tolerance);
  PERFORM set_config('gateway.alerts_deferred', coalesce(v_deferred, 'off'), true);
  IF v_result ->> 'status' IN ('recorded', 'replayed') AND r.status <> 'finalized' THEN
    UPDATE usage_reservations
       SET status = 'finalized', usage_event_id = (v_result -> 'event' ->> 'id')::uuid,
           settled_at = v_now
     WHERE customer_id = p_customer_id AND id = r.id
    RETURNING * INTO r;
    -- The balance after the event AND the hold's release (the event's own counted the hold).
    v_balance := (SELECT to_jsonb(b)
                    FROM usage_balance(p_customer_id, r.subscription_id, r.usage_meter_id, v_now) b);
    -- Usage recorded and a hold freed: evaluated once, on the final balance.
    PERFORM evaluate_usage_alerts(p_customer_id, r.subscription_id, r.usage_meter_id, v_balance);  -- alerts hook
    v_result := v_result || jsonb_build_object('balance', v_balance);
  END IF;
  RETURN v_result || jsonb_build_object('reservation', _usage_reservation_json(r, v_now));
END;
$$;

CREATE OR REPLACE FUNCTION public.release_usage_reservation(
  p_customer_id uuid,
  p_caller_customer_id uuid,
  p_reservation_id uuid)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_variable
DECLARE
  v_balance jsonb;
  v_freed boolean := false;
  v_now timestamptz := now();
  r usage_reservations%ROWTYPE;
BEGIN
  SELECT * INTO r FROM usage_reservations
   WHERE customer_id = p_customer_id AND id = p_reservation_id
     AND (p_caller_customer_id IS NULL OR customer_id = p_caller_customer_id)
     FOR UPDATE;
  IF NOT FOUND THEN
    RETURN _usage_error('NOT_FOUND', 'no reservation ' || p_reservation_id,
                        ARRAY['input', 'reservationId']);
  END IF;
  IF r.status = 'finalized' THEN
    RETURN _usage_error('INVALID_INPUT',
                        'reservation ' || r.id || ' was finalized: its usage is recorded',
                        ARRAY['input', 'reservationId']);
  END IF;
  -- Held (expired or not) becomes released; released or expired stays as it is.
  IF r.status = 'held' THEN
    UPDATE usage_reservations SET status = 'released', settled_at = v_now
     WHERE customer_id = p_customer_id AND id = r.id
    RETURNING * INTO r;
    v_freed := true;
  END IF;
  v_balance := (SELECT to_jsonb(b)
                  FROM usage_balance(p_customer_id, r.subscription_id, r.usage_meter_id, v_now) b);
  IF v_freed THEN
    -- A freed hold raises availableBalance.
    PERFORM evaluate_usage_alerts(p_customer_id, r.subscription_id, r.usage_meter_id, v_balance);  -- alerts hook
  END IF;
  RETURN jsonb_build_object(
    'status', 'released', 'reservation', _usage_reservation_json(r, v_now),
    'pricing_model_id', (SELECT c.pricing_model_id FROM customers c WHERE c.id = p_customer_id),
    'balance', v_balance);
END;
$$;

-- Tidying only: expired holds already count as freed on every read.
CREATE OR REPLACE FUNCTION public.sweep_usage_reservations(p_customer_id uuid, p_limit integer)
RETURNS integer
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  v_swept integer;
BEGIN
  -- One customer's holds (gateway.reservations.sweep finds the customers): on Citus it runs
  -- on the customer's node, where FOR UPDATE is allowed; PL/pgSQL, not SQL, as Citus plans
  -- no SQL function's statement with its parameters.
  WITH due AS (
    SELECT r.customer_id, r.id FROM usage_reservations r
     WHERE r.customer_id = p_customer_id AND r.status = 'held' AND r.expires_at <= now()
     ORDER BY r.expires_at
     LIMIT p_limit
       FOR UPDATE SKIP LOCKED),
  swept AS (
    UPDATE usage_reservations r SET status = 'expired', settled_at = r.expires_at
      FROM due WHERE r.customer_id = due.customer_id AND r.id = due.id
    RETURNING 1)
  SELECT count(*)::integer INTO v_swept FROM swept;
  RETURN v_swept;
END;
$$;
