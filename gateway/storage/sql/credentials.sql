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
BEGIN
  IF TG_OP = 'TRUNCATE' THEN
    PERFORM pg_notify('gateway_credentials', '');
  ELSIF TG_TABLE_NAME = 'api_keys' THEN
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
