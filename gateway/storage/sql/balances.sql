-- A meter's balance on a subscription, recomputed from grants and the period's totals.
-- Shard-local: every statement names the customer (gateway/storage/distribution.py).
--
-- The one current definition of each function below. Edit it here, then make a migration
-- with `alembic revision --autogenerate` (docs/architecture.md).

CREATE OR REPLACE FUNCTION public.usage_balance(p_customer_id uuid, p_subscription_id uuid,
                                         p_meter_id uuid, p_at timestamptz DEFAULT now())
RETURNS TABLE (subscription_id uuid, usage_meter_id uuid, available_balance bigint,
               used_balance bigint, balance_limit bigint, period_start timestamptz,
               period_end timestamptz, reserved_balance bigint, pricing_model_id uuid)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_variable
DECLARE
  s record;
  p record;
  v_remaining bigint;
  v_virtual bigint;
  v_used bigint;
  v_covered bigint;
  v_uncovered bigint;
  v_has_grants boolean;
  v_reserved bigint;
BEGIN
  -- The customer's pricing model in the same statement (a second one would cost every
  -- balance read a statement): customers and subscriptions are co-located by customer.
  SELECT x.id, x.product_id, x.start_date, x.interval_unit, x.interval_count,
         c.pricing_model_id AS customer_pricing_model
    INTO s FROM subscriptions x JOIN customers c ON c.id = x.customer_id
   WHERE x.customer_id = p_customer_id AND x.id = p_subscription_id AND c.id = p_customer_id;
  IF NOT FOUND THEN
    RETURN;
  END IF;
  SELECT * INTO p FROM billing_period(s.start_date, s.interval_unit, s.interval_count, p_at);

  SELECT coalesce(sum(g.amount - g.consumed), 0) INTO v_remaining
    FROM credit_grants g
   WHERE g.customer_id = p_customer_id AND g.subscription_id = s.id
     AND g.usage_meter_id = p_meter_id AND g.granted_at <= p_at AND (g.expires_at IS NULL OR g.expires_at > p_at);

  -- Recurring grants of the current period that no event has materialised yet.
  SELECT coalesce(sum(f.amount), 0) INTO v_virtual
    FROM product_features pf JOIN features f ON f.id = pf.feature_id
   WHERE pf.product_id = s.product_id AND f.usage_meter_id = p_meter_id
     AND f.renewal_frequency = 'every_billing_period'
     AND p.period_start <= p_at
     AND NOT EXISTS (SELECT 1 FROM credit_grants g
                      WHERE g.customer_id = p_customer_id AND g.subscription_id = s.id
                        AND g.feature_id = f.id
                        AND g.granted_at = p.period_start);

  v_has_grants := EXISTS (SELECT 1 FROM credit_grants g
                           WHERE g.customer_id = p_customer_id AND g.subscription_id = s.id
                             AND g.usage_meter_id = p_meter_id)
               OR EXISTS (SELECT 1 FROM product_features pf JOIN features f ON f.id = pf.feature_id
                           WHERE pf.product_id = s.product_id AND f.usage_meter_id = p_meter_id);

  IF NOT v_has_grants AND NOT EXISTS (
      SELECT 1 FROM meter_balances mb
       WHERE mb.customer_id = p_customer_id AND mb.subscription_id = s.id
         AND mb.usage_meter_id = p_meter_id) THEN
    RETURN;
  END IF;

  SELECT coalesce(sum(t.used), 0), coalesce(sum(t.covered), 0), coalesce(sum(t.uncovered), 0)
    INTO v_used, v_covered, v_uncovered
    FROM usage_totals t
   WHERE t.customer_id = p_customer_id AND t.subscription_id = s.id
     AND t.usage_meter_id = p_meter_id AND t.period_start = p.period_start;

  -- Reservations: open holds, an expired one counting as freed (reservations.sql).
  v_reserved := usage_reserved(p_customer_id, s.id, p_meter_id, p_at);

  subscription_id := s.id;
  usage_meter_id := p_meter_id;
  available_balance := v_remaining + v_virtual - v_uncovered - v_reserved;
  used_balance := v_used;
  balance_limit := CASE WHEN v_has_grants THEN v_remaining + v_virtual + v_covered END;
  period_start := p.period_start;
  period_end := p.period_end;
  reserved_balance := v_reserved;
  pricing_model_id := s.customer_pricing_model;
  RETURN NEXT;
END;
$$;
