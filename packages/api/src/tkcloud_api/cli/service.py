"""Running the service: serve, db upgrade, keygen, demo."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from tkcloud_api.cli.common import command, emit, group, run, service
from tkcloud_api.cli.tenancy import sdk_config
from tkcloud_api.container import Container, build_container, resolve_secret_key
from tkcloud_api.settings import Settings, SettingsError, load_settings
from tkcloud_application.tenancy.operations import TenancyOperations


def serve(args: argparse.Namespace, settings: Settings) -> int:
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
    if settings.auto_migrate:
        build_container(settings).migrate()
    if args.demo:
        print(demo_text(settings))
    storage = (
        "SQLite " + settings.resolved_database_url.split(":///", 1)[1]
        if settings.embedded_database
        else "Postgres"
    )
    caches = "Redis" if settings.redis_url else "in-process caches"
    if not settings.embedded_database and not settings.smtp_url:
        print(
            "warning: TKCLOUD_SMTP_URL is not set: sign-in links and invites go to the "
            "outbox table (`tkcloud mail outbox`), not to anyone's inbox",
            file=sys.stderr,
        )
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


def db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    build_container(settings).migrate()
    return emit(args, {"status": "ok", "revision": "head"}, "database is at the latest revision")


def keygen(args: argparse.Namespace, settings: Settings) -> int:
    key = build_container(settings).generate_key()()
    return emit(args, {"secret_key": key}, key)


def demo(args: argparse.Namespace, settings: Settings) -> int:
    print(demo_text(settings))
    return 0


def demo_text(settings: Settings) -> str:
    async def work(container: Container) -> Any:
        tenancy: TenancyOperations = await service(container, "tenancy")
        org = await tenancy.create_org("Demo")
        return org, await tenancy.create_app(org.id, "demo-app")

    org, created = run(settings, work)
    return "Demo org and app created. Configure the telemetry-kit SDK with:\n" + sdk_config(
        settings, org.id, created.app.id, created.issued
    )


def retention_run(args: argparse.Namespace, settings: Settings) -> int:
    async def work(container: Container) -> Any:
        return await (await service(container, "retention")).run()

    done = run(settings, work)
    purges = done.purges
    items = [
        {"org_id": p.org_id, "app_id": p.app_id, "retention_days": p.retention_days,
         "older_than": p.older_than.isoformat(), "deleted": p.deleted}
        for p in purges
    ]  # fmt: skip
    total = sum(p.deleted for p in purges)
    text = f"Deleted {total} event(s) past their retention in {len(purges)} app(s)"
    if done.dropped:
        text += f"; dropped partition(s) {', '.join(done.dropped)}"
    if done.prepared:
        text += f"; made partition(s) {', '.join(done.prepared)}"
    document = {
        "items": items,
        "deleted": total,
        "partitions_dropped": done.dropped,
        "partitions_made": done.prepared,
    }
    return emit(args, document, text)


def analytics_rebuild(args: argparse.Namespace, settings: Settings) -> int:
    async def work(container: Container) -> Any:
        return await (await service(container, "rollups")).rebuild(args.org, args.app)

    rebuilt = run(settings, work)
    items = [{"org_id": r.org_id, "app_id": r.app_id, "events": r.events} for r in rebuilt]
    total = sum(r.events for r in rebuilt)
    text = f"Rebuilt the rollups of {len(rebuilt)} app(s) from {total} stored event(s)"
    return emit(args, {"items": items, "events": total}, text)


def register(sub: Any) -> None:
    p = command(sub, "serve", serve, "run the service (embedded by default)", json_flag=False)
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--workers", type=int, help="worker processes (needs TKCLOUD_REDIS_URL)")
    p.add_argument("--demo", action="store_true", help="create a demo org and app first")
    command(group(sub, "db", "database schema"), "upgrade", db_upgrade, "apply pending migrations")
    command(sub, "keygen", keygen, "print a new TKCLOUD_SECRET_KEY")
    retention = group(sub, "retention", "data retention per plan")
    command(
        retention,
        "run",
        retention_run,
        "delete events older than their plan keeps (the server runs this hourly)",
    )
    analytics = group(sub, "analytics", "analytics rollups")
    p = command(
        analytics,
        "rebuild",
        analytics_rebuild,
        "recompute the rollups from the stored events (every app, one org's, or one app's)",
    )
    p.add_argument("--org", help="only this org's apps")
    p.add_argument("--app", help="only this app")
    command(
        sub, "demo", demo, "create a demo org and app, print the SDK configuration", json_flag=False
    )
