"""`tkcloud`: run the service and manage it. Every command that reports has `--json`."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from tkcloud_api.container import build_container, resolve_secret_key, settle
from tkcloud_api.settings import Settings, SettingsError, load_settings
from tkcloud_application.tenancy.operations import CreatedApp, TenancyOperations
from tkcloud_domain.errors import DomainError
from tkcloud_domain.plans import Plan
from tkcloud_domain.tenancy import App, Environment, IssuedCredential, Org

Handler = Callable[[argparse.Namespace, Settings], int]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    try:
        settings = load_settings()
        handler: Handler = args.handler
        return handler(args, settings)
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except DomainError as exc:
        if getattr(args, "json", False):
            print(json.dumps({"error": {"code": exc.code, "message": exc.message}}))
        else:
            print(f"error: {exc.message} ({exc.code})", file=sys.stderr)
        return 1


# --- plumbing ---------------------------------------------------------------------------------


def _with_tenancy(settings: Settings, work: Callable[[TenancyOperations], Awaitable[Any]]) -> Any:
    container = build_container(settings)
    if settings.auto_migrate:
        container.migrate()

    async def run() -> Any:
        await settle(container.init_resources())
        try:
            return await work(await settle(container.tenancy()))
        finally:
            await settle(container.shutdown_resources())

    return asyncio.run(run())


def _emit(args: argparse.Namespace, data: dict[str, Any], text: str) -> int:
    print(json.dumps(data, indent=2) if args.json else text)
    return 0


def _org_dict(org: Org) -> dict[str, Any]:
    limits = org.limits
    return {
        "org_id": org.id,
        "name": org.name,
        "slug": org.slug,
        "plan": org.plan.value,
        "region": org.region,
        "requests_per_minute": limits.requests_per_minute,
        "events_per_month": limits.events_per_month,
        "retention_days": limits.retention_days,
        "created_at": org.created_at.isoformat(),
    }


def _app_dict(app: App) -> dict[str, Any]:
    return {
        "org_id": app.org_id,
        "app_id": app.id,
        "name": app.name,
        "environment": app.environment.value,
        "active": app.active,
        "created_at": app.created_at.isoformat(),
    }


def _sdk_config(settings: Settings, org_id: str, app_id: str, issued: IssuedCredential) -> str:
    return (
        f"  endpoint: {settings.resolved_public_url}\n"
        f"  org_id:   {org_id}\n"
        f"  app_id:   {app_id}\n"
        f"  token:    {issued.token}\n"
        f"  secret:   {issued.secret}\n"
        "The token and secret are shown only this once: store them now.\n"
        f"Events go to POST {settings.resolved_public_url}/v1/ingest/{org_id}/{app_id}"
    )


def _credential_dict(issued: IssuedCredential) -> dict[str, Any]:
    return {
        "credential_id": issued.credential.id,
        "token": issued.token,
        "secret": issued.secret,
    }


# --- commands ---------------------------------------------------------------------------------


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    host = args.host or settings.host
    port = args.port or settings.port
    workers = args.workers or settings.workers
    if workers > 1 and not settings.redis_url:
        raise SettingsError(
            "TKCLOUD_REDIS_URL: required for --workers > 1, so nonces, rate limits and quotas "
            "are shared by every worker"
        )
    # Workers re-read the environment: give them exactly what this process resolved.
    os.environ["TKCLOUD_HOST"] = host
    os.environ["TKCLOUD_PORT"] = str(port)
    os.environ["TKCLOUD_DATA_DIR"] = str(Path(settings.data_dir).resolve())
    if not settings.database_url:
        os.environ["TKCLOUD_DATABASE_URL"] = settings.resolved_database_url
    settings = load_settings()
    resolve_secret_key(settings)  # fail before listening, and create the embedded key once
    container = build_container(settings)
    if settings.auto_migrate:
        container.migrate()
    if args.demo:
        print(_demo_text(settings))
    storage = (
        "SQLite " + settings.resolved_database_url.split(":///", 1)[1]
        if settings.embedded_database
        else "Postgres"
    )
    caches = "Redis" if settings.redis_url else "in-process caches"
    print(
        f"telemetry-kit cloud listening on http://{host}:{port} "
        f"({storage}, {caches}, {workers} worker{'s' if workers > 1 else ''})",
        flush=True,
    )
    uvicorn.run(
        "tkcloud_api.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=settings.log_level.lower(),
        access_log=settings.access_log,
        server_header=False,
    )
    return 0


def _db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    build_container(settings).migrate()
    return _emit(args, {"status": "ok", "revision": "head"}, "database is at the latest revision")


def _keygen(args: argparse.Namespace, settings: Settings) -> int:
    key = build_container(settings).generate_key()()
    return _emit(args, {"secret_key": key}, key)


def _org_create(args: argparse.Namespace, settings: Settings) -> int:
    org: Org = _with_tenancy(settings, lambda t: t.create_org(args.name, Plan(args.plan)))
    return _emit(args, _org_dict(org), org.id)


def _org_list(args: argparse.Namespace, settings: Settings) -> int:
    orgs: list[Org] = _with_tenancy(settings, lambda t: t.list_orgs())
    lines = [f"{o.id}  {o.plan.value:<10}  {o.name}" for o in orgs] or ["no orgs"]
    return _emit(args, {"items": [_org_dict(o) for o in orgs]}, "\n".join(lines))


def _org_show(args: argparse.Namespace, settings: Settings) -> int:
    org: Org = _with_tenancy(settings, lambda t: t.get_org(args.org_id))
    data = _org_dict(org)
    return _emit(args, data, "\n".join(f"{k}: {v}" for k, v in data.items()))


def _org_set_plan(args: argparse.Namespace, settings: Settings) -> int:
    org: Org = _with_tenancy(
        settings,
        lambda t: t.set_plan(
            args.org_id,
            Plan(args.plan),
            custom_events_per_month=args.custom_quota,
            custom_retention_days=args.custom_retention_days,
        ),
    )
    return _emit(args, _org_dict(org), f"{org.id} is now on {org.plan.value}")


def _app_create(args: argparse.Namespace, settings: Settings) -> int:
    created: CreatedApp = _with_tenancy(
        settings,
        lambda t: t.create_app(args.org, args.name, Environment(args.environment)),
    )
    data = {**_app_dict(created.app), **_credential_dict(created.issued)}
    text = f"Created {created.app.environment.value} app {created.app.name}.\n" + _sdk_config(
        settings, created.app.org_id, created.app.id, created.issued
    )
    return _emit(args, data, text)


def _app_list(args: argparse.Namespace, settings: Settings) -> int:
    apps: list[App] = _with_tenancy(settings, lambda t: t.list_apps(args.org))
    lines = [f"{a.id}  {a.environment.value:<10}  {a.name}" for a in apps] or ["no apps"]
    return _emit(args, {"items": [_app_dict(a) for a in apps]}, "\n".join(lines))


def _credentials_rotate(args: argparse.Namespace, settings: Settings) -> int:
    issued: IssuedCredential = _with_tenancy(settings, lambda t: t.rotate_credentials(args.app_id))
    hours = settings.rotation_grace_hours
    text = (
        f"New credentials for {args.app_id} (the old ones keep working for {hours:g} h):\n"
        f"  token:  {issued.token}\n  secret: {issued.secret}"
    )
    return _emit(args, {"app_id": args.app_id, **_credential_dict(issued)}, text)


def _credentials_revoke(args: argparse.Namespace, settings: Settings) -> int:
    count: int = _with_tenancy(settings, lambda t: t.revoke_credentials(args.app_id))
    return _emit(
        args,
        {"app_id": args.app_id, "revoked": count},
        f"Revoked {count} credential(s) of {args.app_id}; its SDKs can no longer send.",
    )


def _usage(args: argparse.Namespace, settings: Settings) -> int:
    rows = _with_tenancy(settings, lambda t: t.usage(args.org, args.month))
    items = [
        {
            "org_id": r.org_id,
            "app_id": r.app_id,
            "environment": r.environment.value,
            "month": r.month,
            "events": r.events,
        }
        for r in rows
    ]
    lines = [
        f"{r.month}  {r.org_id}  {r.app_id}  {r.environment.value:<10}  {r.events}" for r in rows
    ]
    return _emit(args, {"items": items}, "\n".join(lines) or "no apps")


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    print(_demo_text(settings))
    return 0


def _demo_text(settings: Settings) -> str:
    async def work(t: TenancyOperations) -> tuple[Org, CreatedApp]:
        org = await t.create_org("Demo")
        return org, await t.create_app(org.id, "demo-app")

    org, created = _with_tenancy(settings, work)
    return "Demo org and app created. Configure the telemetry-kit SDK with:\n" + _sdk_config(
        settings, org.id, created.app.id, created.issued
    )


# --- the parser -------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tkcloud", description="telemetry-kit cloud")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    def command(
        parent: Any, name: str, handler: Handler, help_text: str, *, json_flag: bool = True
    ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        if json_flag:
            p.add_argument("--json", action="store_true", help="machine-readable output")
        return p

    serve = command(sub, "serve", _serve, "run the service (embedded by default)", json_flag=False)
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int, help="worker processes (needs TKCLOUD_REDIS_URL)")
    serve.add_argument("--demo", action="store_true", help="create a demo org and app first")

    db = sub.add_parser("db", help="database schema").add_subparsers(metavar="COMMAND")
    command(db, "upgrade", _db_upgrade, "apply every pending migration")

    command(sub, "keygen", _keygen, "print a new TKCLOUD_SECRET_KEY")
    command(
        sub,
        "demo",
        _demo,
        "create a demo org and app and print the SDK configuration",
        json_flag=False,
    )

    org = sub.add_parser("org", help="orgs (tenants)").add_subparsers(metavar="COMMAND")
    p = command(org, "create", _org_create, "create an org; prints its org_id")
    p.add_argument("--name", required=True)
    p.add_argument("--plan", choices=[p.value for p in Plan], default=Plan.FREE.value)
    command(org, "list", _org_list, "list every org")
    p = command(org, "show", _org_show, "show one org and its limits")
    p.add_argument("org_id")
    p = command(org, "set-plan", _org_set_plan, "change an org's plan at once")
    p.add_argument("org_id")
    p.add_argument("plan", choices=[p.value for p in Plan])
    p.add_argument("--custom-quota", type=int, help="events per month (enterprise)")
    p.add_argument("--custom-retention-days", type=int, help="retention (enterprise)")

    app = sub.add_parser("app", help="apps and their credentials").add_subparsers(metavar="COMMAND")
    p = command(app, "create", _app_create, "create an app; prints its credentials once")
    p.add_argument("--org", required=True)
    p.add_argument("--name", required=True)
    p.add_argument(
        "--environment", choices=[e.value for e in Environment], default=Environment.STAGING.value
    )
    p = command(app, "list", _app_list, "list an org's apps")
    p.add_argument("--org", required=True)
    creds = app.add_parser("credentials", help="rotate or revoke").add_subparsers(metavar="COMMAND")
    p = command(
        creds, "rotate", _credentials_rotate, "issue new credentials; old ones get a grace period"
    )
    p.add_argument("app_id")
    p = command(creds, "revoke", _credentials_revoke, "revoke every credential of the app now")
    p.add_argument("app_id")

    p = command(sub, "usage", _usage, "events this month per app")
    p.add_argument("--org")
    p.add_argument("--month", help="YYYY-MM (default: this month)")
    return parser


if __name__ == "__main__":
    raise SystemExit(main())
