"""Orgs, apps, credentials and usage."""

from __future__ import annotations

import argparse
from typing import Any

from tkcloud_api.cli.common import command, emit, group, run, service
from tkcloud_api.container import Container
from tkcloud_api.settings import Settings
from tkcloud_application.tenancy.operations import CreatedApp
from tkcloud_domain.errors import ValidationFailed
from tkcloud_domain.plans import Plan
from tkcloud_domain.tenancy import App, Environment, IssuedCredential, Org


def org_dict(org: Org) -> dict[str, Any]:
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


def app_dict(app: App) -> dict[str, Any]:
    return {
        "org_id": app.org_id,
        "app_id": app.id,
        "name": app.name,
        "environment": app.environment.value,
        "active": app.active,
        "created_at": app.created_at.isoformat(),
    }


def credential_dict(issued: IssuedCredential) -> dict[str, Any]:
    return {"credential_id": issued.credential.id, "token": issued.token, "secret": issued.secret}


def sdk_config(settings: Settings, org_id: str, app_id: str, issued: IssuedCredential) -> str:
    return (
        f"  endpoint: {settings.resolved_public_url}\n"
        f"  org_id:   {org_id}\n"
        f"  app_id:   {app_id}\n"
        f"  token:    {issued.token}\n"
        f"  secret:   {issued.secret}\n"
        "The token and secret are shown only this once: store them now.\n"
        f"Events go to POST {settings.resolved_public_url}/v1/ingest/{org_id}/{app_id}"
    )


def _tenancy(settings: Settings, call: Any) -> Any:
    """Run `call(tenancy_operations)` in the container."""

    async def work(container: Container) -> Any:
        return await call(await service(container, "tenancy"))

    return run(settings, work)


def org_create(args: argparse.Namespace, settings: Settings) -> int:
    org: Org = _tenancy(settings, lambda t: t.create_org(args.name, Plan(args.plan)))
    return emit(args, org_dict(org), org.id)


def org_list(args: argparse.Namespace, settings: Settings) -> int:
    orgs: list[Org] = _tenancy(settings, lambda t: t.list_orgs())
    lines = [f"{o.id}  {o.plan.value:<10}  {o.name}" for o in orgs] or ["no orgs"]
    return emit(args, {"items": [org_dict(o) for o in orgs]}, "\n".join(lines))


def org_show(args: argparse.Namespace, settings: Settings) -> int:
    org: Org = _tenancy(settings, lambda t: t.get_org(args.org_id))
    data = org_dict(org)
    return emit(args, data, "\n".join(f"{k}: {v}" for k, v in data.items()))


def org_set_plan(args: argparse.Namespace, settings: Settings) -> int:
    org: Org = _tenancy(
        settings,
        lambda t: t.set_plan(
            args.org_id,
            Plan(args.plan),
            custom_events_per_month=args.custom_quota,
            custom_retention_days=args.custom_retention_days,
        ),
    )
    return emit(args, org_dict(org), f"{org.id} is now on {org.plan.value}")


def app_create(args: argparse.Namespace, settings: Settings) -> int:
    created: CreatedApp = _tenancy(
        settings, lambda t: t.create_app(args.org, args.name, Environment(args.environment))
    )
    data = {**app_dict(created.app), **credential_dict(created.issued)}
    text = f"Created {created.app.environment.value} app {created.app.name}.\n" + sdk_config(
        settings, created.app.org_id, created.app.id, created.issued
    )
    return emit(args, data, text)


def app_list(args: argparse.Namespace, settings: Settings) -> int:
    apps: list[App] = _tenancy(settings, lambda t: t.list_apps(args.org))
    lines = [f"{a.id}  {a.environment.value:<10}  {a.name}" for a in apps] or ["no apps"]
    return emit(args, {"items": [app_dict(a) for a in apps]}, "\n".join(lines))


def app_promote(args: argparse.Namespace, settings: Settings) -> int:
    if not args.yes:
        raise ValidationFailed(
            "promotion deletes the app's staging events and cannot be undone: add --yes"
        )
    app, deleted = _tenancy(settings, lambda t: t.promote_app(args.app_id))
    text = f"{app.name} is in production; {deleted} staging event(s) deleted"
    return emit(args, {**app_dict(app), "staging_events_deleted": deleted}, text)


def credentials_rotate(args: argparse.Namespace, settings: Settings) -> int:
    issued: IssuedCredential = _tenancy(settings, lambda t: t.rotate_credentials(args.app_id))
    hours = settings.rotation_grace_hours
    text = (
        f"New credentials for {args.app_id} (the old ones keep working for {hours:g} h):\n"
        f"  token:  {issued.token}\n  secret: {issued.secret}"
    )
    return emit(args, {"app_id": args.app_id, **credential_dict(issued)}, text)


def credentials_revoke(args: argparse.Namespace, settings: Settings) -> int:
    count: int = _tenancy(settings, lambda t: t.revoke_credentials(args.app_id))
    text = f"Revoked {count} credential(s) of {args.app_id}; its SDKs can no longer send."
    return emit(args, {"app_id": args.app_id, "revoked": count}, text)


def usage(args: argparse.Namespace, settings: Settings) -> int:
    rows = _tenancy(settings, lambda t: t.usage(args.org, args.month))
    items = [
        {"org_id": r.org_id, "app_id": r.app_id, "environment": r.environment.value,
         "month": r.month, "events": r.events}
        for r in rows
    ]  # fmt: skip
    lines = [
        f"{r.month}  {r.org_id}  {r.app_id}  {r.environment.value:<10}  {r.events}" for r in rows
    ]
    return emit(args, {"items": items}, "\n".join(lines) or "no apps")


def register(sub: Any) -> Any:
    """Adds `org`, `app` and `usage`; returns the `org` group for more org commands."""
    org = group(sub, "org", "orgs (tenants)")
    p = command(org, "create", org_create, "create an org; prints its org_id")
    p.add_argument("--name", required=True)
    p.add_argument("--plan", choices=[p.value for p in Plan], default=Plan.FREE.value)
    command(org, "list", org_list, "list every org")
    p = command(org, "show", org_show, "show one org and its limits")
    p.add_argument("org_id")
    p = command(org, "set-plan", org_set_plan, "change an org's plan at once")
    p.add_argument("org_id")
    p.add_argument("plan", choices=[p.value for p in Plan])
    p.add_argument("--custom-quota", type=int, help="events per month (enterprise)")
    p.add_argument("--custom-retention-days", type=int, help="retention (enterprise)")

    app = group(sub, "app", "apps and their credentials")
    p = command(app, "create", app_create, "create an app; prints its credentials once")
    p.add_argument("--org", required=True)
    p.add_argument("--name", required=True)
    p.add_argument(
        "--environment", choices=[e.value for e in Environment], default=Environment.STAGING.value
    )
    p = command(app, "list", app_list, "list an org's apps")
    p.add_argument("--org", required=True)
    p = command(app, "promote", app_promote, "staging -> production (deletes staging events)")
    p.add_argument("app_id")
    p.add_argument("--yes", action="store_true", help="confirm: the staging events are deleted")
    creds = group(app, "credentials", "rotate or revoke")
    p = command(creds, "rotate", credentials_rotate, "new credentials; old ones get a grace period")
    p.add_argument("app_id")
    p = command(creds, "revoke", credentials_revoke, "revoke every credential of the app now")
    p.add_argument("app_id")

    p = command(sub, "usage", usage, "events this month per app")
    p.add_argument("--org")
    p.add_argument("--month", help="YYYY-MM (default: this month)")
    return org
