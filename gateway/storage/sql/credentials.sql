-- Credentials cached by every gateway process (gateway.callers.auth): the triggers below
-- announce every change that could end a credential, in the transaction that makes it, on
-- channel gateway_credentials: 'key:<key_hash>' for a key updated (revoked) or deleted,
-- 'customer:<id>' for a customer deleted or whose sessions_revoked_before was set, and ''
-- (drop everything) for a TRUNCATE. Whatever makes the change (the CLI, GraphQL, plain SQL)
-- notifies. PostgreSQL sends one notification per distinct payload per transaction.
--
-- The one current definition of each function and trigger below. Edit it here, then make a
-- migration with `alembic revision --autogenerate` (docs/architecture.md).

CREATE OR REPLACE FUNCTION public.notify_credentials_changed() RETURNS trigger
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  -- On Citus the trigger runs on the tables' shards, named <table>_<shard id>.
  v_key boolean := TG_TABLE_NAME ~ '^api_keys(_[0-9]+)?$';
  v_worker boolean := false;
BEGIN
  -- On Citus, api_keys is a reference table: a change writes its copy on every node in one
  -- two-phase transaction, and a prepared transaction cannot NOTIFY. The coordinator's copy
  -- (written in the coordinator's own transaction) announces it; the workers' stay silent.
  -- (EXECUTE: on one PostgreSQL there is no citus_is_coordinator() to plan.)
  IF v_key AND to_regproc('citus_is_coordinator') IS NOT NULL THEN
    EXECUTE 'SELECT NOT citus_is_coordinator()' INTO v_worker;
    IF v_worker THEN
      RETURN NULL;
    END IF;
  END IF;
  IF TG_OP = 'TRUNCATE' THEN
    PERFORM pg_notify('gateway_credentials', '');
  ELSIF v_key THEN
    PERFORM pg_notify('gateway_credentials', 'key:' || OLD.key_hash);
  ELSE
    PERFORM pg_notify('gateway_credentials', 'customer:' || OLD.id);
  END IF;
  RETURN NULL;
END;
$$;

CREATE TRIGGER api_keys_notify_credentials AFTER UPDATE OR DELETE ON public.api_keys
FOR EACH ROW EXECUTE FUNCTION public.notify_credentials_changed();

CREATE TRIGGER api_keys_notify_truncate AFTER TRUNCATE ON public.api_keys
FOR EACH STATEMENT EXECUTE FUNCTION public.notify_credentials_changed();

CREATE TRIGGER customers_notify_credentials
AFTER UPDATE OF sessions_revoked_before OR DELETE ON public.customers
FOR EACH ROW EXECUTE FUNCTION public.notify_credentials_changed();

CREATE TRIGGER customers_notify_truncate AFTER TRUNCATE ON public.customers
FOR EACH STATEMENT EXECUTE FUNCTION public.notify_credentials_changed();
