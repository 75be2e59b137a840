"""The `billing-gateway` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from gateway.logs import configure, resolve_format
from gateway.settings import Settings, get_settings
from gateway.startup import (
    DATABASE_ERRORS,
    StartupError,
    check_port,
    database_unreachable,
    read_file,
    settings_problems,
)
from gateway.storage.db import Database
from gateway.storage.embedded import EmbeddedPostgres, resolve_database_url

T = TypeVar("T")

logger = logging.getLogger("gateway.cli")
PRICING_FILE = "a pricing setup file (YAML or JSON, Flowglad's setup format)"


def _database(settings: Settings) -> tuple[str, EmbeddedPostgres | None]:
    """The database URL, with migrations applied (starting the embedded server if needed)."""
    from gateway.storage.migrate import upgrade

    server: EmbeddedPostgres | None = None
    try:
        url, server = resolve_database_url(settings.database_url, settings.gateway_data_dir)
        # Behind a transaction-mode pooler, migrations (Alembic's driver prepares its
        # statements) take the direct URL.
        upgrade(settings.gateway_direct_database_url or url)
    except DATABASE_ERRORS as exc:
        if server is not None:
            server.stop()
        raise database_unreachable(settings.database_url, exc) from exc
    return url, server


def _with_db(settings: Settings, work: Callable[[Database], Awaitable[T]]) -> T:
    url, server = _database(settings)

    async def run() -> T:
        db = Database(
            url,
            min_size=1,
            max_size=2,
            prepared_statements=not settings.gateway_transaction_pooling,
        )
        await db.connect()
        try:
            return await work(db)
        finally:
            await db.close()

    try:
        return asyncio.run(run())
    finally:
        if server is not None:
            server.stop()


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(0)


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    from gateway.api.app import create_app
    from gateway.api.server import run_server

    host = args.host or settings.gateway_host
    port = args.port or settings.gateway_port
    check_port(host, port)  # before migrating: a taken port fails at once
    url, server = _database(settings)
    # Production serves no GraphiQL page unless GATEWAY_GRAPHIQL says so (Settings.graphiql);
    # the line is logged once the server answers (gateway.api.server).
    ready = f"{'GraphiQL' if settings.graphiql else 'GraphQL'}: http://{host}:{port}/graphql"
    log_format = resolve_format(settings.gateway_log_format)
    workers = args.workers or settings.gateway_workers
    # uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown; turn that into a normal
    # exit so the embedded server below is stopped too.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit_on_signal)
    try:
        if workers > 1:
            # Worker processes build the app from the environment: hand them the URL.
            os.environ["DATABASE_URL"] = url
            run_server(
                "gateway.api.app:app_from_env",
                host,
                port,
                workers=workers,
                log_format=log_format,
                ready_message=ready,
            )
        else:
            app = create_app(settings, url)
            run_server(app, host, port, log_format=log_format, ready_message=ready)
    finally:
        if server is not None:
            server.stop()
    return 0


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from gateway.demo import run_demo

    return run_demo(settings, args)


def cmd_migrate(settings: Settings, _args: argparse.Namespace) -> int:
    _, server = _database(settings)
    if server is not None:
        server.stop()
    logger.info("database is at the latest migration")
    return 0


def cmd_distribute(settings: Settings, _args: argparse.Namespace) -> int:
    from gateway.storage.distribute import DistributeError, distribute

    url = settings.gateway_direct_database_url or settings.database_url
    if url is None:
        print(
            "distribute: DATABASE_URL is not set (point it at the Citus coordinator);"
            " nothing changed",
            file=sys.stderr,
        )
        return 2
    try:
        summary = asyncio.run(distribute(url, print))
    except DistributeError as exc:
        for line in exc.lines:
            print(line, file=sys.stderr)
        return exc.exit_code
    except DATABASE_ERRORS as exc:
        raise database_unreachable(url, exc) from exc
    print(summary.line())
    return 0


def cmd_pricing_import(settings: Settings, args: argparse.Namespace) -> int:
    from gateway.billing.pricing_setup import setup_pricing_model
    from gateway.errors import UserError

    text = read_file(args.file, PRICING_FILE)
    result = _with_db(settings, lambda db: setup_pricing_model(db, text))
    if isinstance(result, UserError):
        return _refused(result)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"pricing model {result.pricing_model_id} created")
    return 0


def cmd_pricing_export(settings: Settings, args: argparse.Namespace) -> int:
    from gateway.billing.pricing_export import export_pricing_model
    from gateway.errors import UserError

    result = _with_db(settings, lambda db: export_pricing_model(db, args.model_id))
    if isinstance(result, UserError):
        return _refused(result)
    if args.output:
        Path(args.output).write_text(result)
    else:
        sys.stdout.write(result)
    return 0


def cmd_pricing_apply(settings: Settings, args: argparse.Namespace) -> int:
    from gateway.billing.pricing_update import update_pricing_model
    from gateway.errors import UserError

    text = read_file(args.file, PRICING_FILE)
    result = _with_db(
        settings, lambda db: update_pricing_model(db, args.model, text, dry_run=args.dry_run)
    )
    if isinstance(result, UserError):
        return _refused(result)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for change in result.changes:
        print(change)
    what = "would change" if result.dry_run else "changed"
    print(f"pricing model {result.pricing_model_id}: {len(result.changes)} {what}", file=sys.stderr)
    return 0


def _refused(error: Any) -> int:
    print(f"error: {error.message}", file=sys.stderr)
    for problem in error.extra.get("problems", []):
        print(f"  {problem}", file=sys.stderr)
    return 1


def cmd_keys_create(settings: Settings, args: argparse.Namespace) -> int:
    from gateway.callers.auth import create_api_key

    info, key = _with_db(settings, lambda db: create_api_key(db, args.name))
    print(f"created key {info.id} ({info.name}); it is shown only once:")
    print(key)
    return 0


def cmd_keys_list(settings: Settings, _args: argparse.Namespace) -> int:
    from gateway.callers.auth import list_api_keys

    for k in _with_db(settings, list_api_keys):
        state = f"revoked {k.revoked_at.isoformat()}" if k.revoked_at else "active"
        print(f"{k.id}  {k.prefix}...  {k.name}  created {k.created_at.isoformat()}  {state}")
    return 0


def cmd_keys_revoke(settings: Settings, args: argparse.Namespace) -> int:
    from gateway.callers.auth import revoke_api_key

    try:
        key_id = uuid.UUID(args.key_id)
    except ValueError:
        print(f"error: {args.key_id} is not a key id", file=sys.stderr)
        return 2
    if not _with_db(settings, lambda db: revoke_api_key(db, key_id)):
        print(f"error: no active key {key_id}", file=sys.stderr)
        return 1
    print(f"revoked key {key_id}")
    return 0


def cmd_reconcile(settings: Settings, _args: argparse.Namespace) -> int:
    from gateway.billing.reconcile import reconcile

    drifts = _with_db(settings, reconcile)
    for drift in drifts:
        print(f"drift: {drift}")
    if drifts:
        print(f"{len(drifts)} balance(s) drifted from a recomputation", file=sys.stderr)
        return 1
    print("every balance equals a recomputation from events and grants")
    return 0


def cmd_webhooks_replay(settings: Settings, args: argparse.Namespace) -> int:
    from gateway.webhooks.deliveries import replay

    try:
        event_id = uuid.UUID(args.event_id)
    except ValueError:
        print(f"error: {args.event_id} is not an event id", file=sys.stderr)
        return 2
    queued = _with_db(settings, lambda db: replay(db, event_id))
    if queued is None:
        print(f"error: no usage alert event {event_id}", file=sys.stderr)
        return 1
    print(f"queued event {event_id} for {queued} endpoint(s); the gateway's workers send it")
    return 0


def cmd_export_schema(_settings: Settings, args: argparse.Namespace) -> int:
    from schema import SDL_PATH, export_sdl

    target = Path(args.output) if args.output else SDL_PATH
    target.write_text(export_sdl())
    print(f"wrote {target}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="billing-gateway", description=__doc__)
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log what commands do (INFO); without it they log warnings and errors only",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway (applies migrations first)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int, help="worker processes (default GATEWAY_WORKERS)")
    serve.set_defaults(func=cmd_serve)

    demo = sub.add_parser(
        "demo",
        help="serve a demo pricing model, customer and usage on an embedded database of its own",
    )
    demo.add_argument("--host")
    demo.add_argument("--port", type=int)
    demo.add_argument("--data-dir", help="default: GATEWAY_DATA_DIR/demo")
    demo.set_defaults(func=cmd_demo)

    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=cmd_migrate)

    sub.add_parser(
        "distribute",
        help="place the tables and hot functions on a Citus cluster by customer (after migrate)",
    ).set_defaults(func=cmd_distribute)

    pricing = sub.add_parser("pricing", help="pricing models").add_subparsers(
        dest="pricing_command", required=True
    )
    imp = pricing.add_parser("import", help="set up a pricing model from a YAML or JSON file")
    imp.add_argument("file")
    imp.set_defaults(func=cmd_pricing_import)
    exp = pricing.add_parser("export", help="write a pricing model in the setup format (YAML)")
    exp.add_argument("model_id")
    exp.add_argument("--output", help="default: standard output")
    exp.set_defaults(func=cmd_pricing_export)
    apply = pricing.add_parser(
        "apply", help="apply an edited definition to an existing pricing model, by slug"
    )
    apply.add_argument("file")
    apply.add_argument("--model", required=True, help="the pricing model's id")
    apply.add_argument("--dry-run", action="store_true", help="list the changes, write nothing")
    apply.set_defaults(func=cmd_pricing_apply)

    keys = sub.add_parser("keys", help="secret API keys").add_subparsers(
        dest="keys_command", required=True
    )
    create = keys.add_parser("create", help="create a key and print it once")
    create.add_argument("--name", required=True)
    create.set_defaults(func=cmd_keys_create)
    keys.add_parser("list", help="list keys").set_defaults(func=cmd_keys_list)
    revoke = keys.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("key_id")
    revoke.set_defaults(func=cmd_keys_revoke)

    sub.add_parser(
        "reconcile", help="recompute balances from events and grants; exit 1 on drift"
    ).set_defaults(func=cmd_reconcile)

    webhooks = sub.add_parser("webhooks", help="webhook deliveries").add_subparsers(
        dest="webhooks_command", required=True
    )
    replay = webhooks.add_parser(
        "replay", help="send a usage alert event again to every current endpoint of its type"
    )
    replay.add_argument("event_id")
    replay.set_defaults(func=cmd_webhooks_replay)

    export = sub.add_parser("export-schema", help="write the GraphQL SDL")
    export.add_argument("--output")
    export.set_defaults(func=cmd_export_schema)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = get_settings()
    except ValidationError as exc:
        # One line per problem, without pydantic's echo of the input (it holds the secrets).
        for problem in settings_problems(exc):
            print(f"configuration error: {problem}", file=sys.stderr)
        return 2
    # Commands are quiet (warnings and errors) unless -v; servers log their work (INFO).
    serving = args.func in (cmd_serve, cmd_demo)
    configure(
        "INFO" if serving or args.verbose else "WARNING",
        resolve_format(settings.gateway_log_format),
    )
    func: Callable[[Settings, argparse.Namespace], Any] = args.func
    try:
        return int(func(settings, args))
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
