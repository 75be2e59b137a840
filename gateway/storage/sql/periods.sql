-- Billing periods, derived from a subscription's anchor and interval (no cron job).
--
-- The one current definition of each function below. Edit it here, then make a migration
-- with `alembic revision --autogenerate` (docs/architecture.md).

CREATE OR REPLACE FUNCTION public.billing_period(
  p_anchor timestamptz, p_unit text, p_count integer, p_at timestamptz,
  OUT period_index integer, OUT period_start timestamptz, OUT period_end timestamptz)
RETURNS record LANGUAGE plpgsql IMMUTABLE STRICT AS $$
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

CREATE OR REPLACE FUNCTION public.billing_period_id(p_subscription_id uuid, p_period_start timestamptz)
RETURNS uuid LANGUAGE sql IMMUTABLE STRICT AS $$
  SELECT md5(p_subscription_id::text || '/' || extract(epoch FROM p_period_start)::text)::uuid
$$;
