"""People and programs: users, members, invites, API keys, the development mail outbox.

Commands act as an operator (every right in every org), through the same use cases as the API.
"""

from __future__ import annotations

import argparse
from typing import Any

from tkcloud_api.cli.common import command, emit, group, run, service
from tkcloud_api.container import Container
from tkcloud_api.settings import Settings
from tkcloud_application.dashboard.organisations import Member
from tkcloud_domain.identity import ApiKeyScope, OperatorPrincipal, Role

OPERATOR = OperatorPrincipal()


def _member_dict(m: Member) -> dict[str, Any]:
    return {
        "user_id": m.user.id,
        "email": m.user.email,
        "role": m.membership.role.value,
        "joined_at": m.membership.created_at.isoformat(),
    }


def user_show(args: argparse.Namespace, settings: Settings) -> int:
    async def work(c: Container) -> Any:
        user = await (await service(c, "authentication")).user_by_email(args.email)
        orgs = await (await service(c, "organisations")).mine(OPERATOR)
        memberships = []
        for view in orgs:
            for m in await (await service(c, "organisations")).members(OPERATOR, view.org.id):
                if m.user.id == user.id:
                    memberships.append(
                        {
                            "org_id": view.org.id,
                            "org": view.org.name,
                            "role": m.membership.role.value,
                        }
                    )
        return user, memberships

    user, memberships = run(settings, work)
    data = {
        "user_id": user.id, "email": user.email, "display_name": user.display_name,
        "github_login": user.github_login, "created_at": user.created_at.isoformat(),
        "orgs": memberships,
    }  # fmt: skip
    lines = [f"{k}: {v}" for k, v in data.items() if k != "orgs"]
    lines += [f"  {m['role']:<9} {m['org_id']}  {m['org']}" for m in memberships]
    return emit(args, data, "\n".join(lines))


def user_sign_out(args: argparse.Namespace, settings: Settings) -> int:
    async def work(c: Container) -> int:
        auth = await service(c, "authentication")
        return int(await auth.end_sessions((await auth.user_by_email(args.email)).id))

    count = run(settings, work)
    return emit(args, {"sessions_revoked": count}, f"Ended {count} session(s) of {args.email}")


def members_list(args: argparse.Namespace, settings: Settings) -> int:
    async def work(c: Container) -> list[Member]:
        return list(await (await service(c, "organisations")).members(OPERATOR, args.org_id))

    members = run(settings, work)
    lines = [f"{m.membership.role.value:<9} {m.user.email}" for m in members] or ["no members"]
    return emit(args, {"items": [_member_dict(m) for m in members]}, "\n".join(lines))


def members_add(args: argparse.Namespace, settings: Settings) -> int:
    async def work(c: Container) -> Member:
        orgs = await service(c, "organisations")
        return await orgs.add_member(OPERATOR, args.org_id, args.email, Role(args.role))  # type: ignore[no-any-return]

    member = run(settings, work)
    return emit(
        args, _member_dict(member), f"{member.user.email} is {member.membership.role.value}"
    )


def members_set_role(args: argparse.Namespace, settings: Settings) -> int:
    async def work(c: Container) -> Member:
        user = await (await service(c, "authentication")).user_by_email(args.email)
        orgs = await service(c, "organisations")
        return await orgs.change_role(OPERATOR, args.org_id, user.id, Role(args.role))  # type: ignore[no-any-return]

    member = run(settings, work)
    return emit(
        args, _member_dict(member), f"{member.user.email} is {member.membership.role.value}"
    )


def members_remove(args: argparse.Namespace, settings: Settings) -> int:
    async def work(c: Container) -> None:
        user = await (await service(c, "authentication")).user_by_email(args.email)
        await (await service(c, "organisations")).remove_member(OPERATOR, args.org_id, user.id)

    run(settings, work)
    return emit(args, {"removed": args.email}, f"{args.email} removed from {args.org_id}")


def invite_create(args: argparse.Namespace, settings: Settings) -> int:
    async def work(c: Container) -> Any:
        invites = await service(c, "invitations")
        return await invites.invite(OPERATOR, args.org_id, args.email, Role(args.role))

    invite = run(settings, work)
    data = {"invite_id": invite.id, "email": invite.email, "role": invite.role.value,
            "expires_at": invite.expires_at.isoformat()}  # fmt: skip
    return emit(
        args, data, f"Invited {invite.email} as {invite.role.value} ({invite.id}); mail sent"
    )


def invite_list(args: argparse.Namespace, settings: Settings) -> int:
    async def work(c: Container) -> Any:
        return await (await service(c, "invitations")).for_org(OPERATOR, args.org_id), c.clock()

    invites, clock = run(settings, work)
    now = clock.now()
    items = [
        {"invite_id": i.id, "email": i.email, "role": i.role.value, "status": i.status(now).value}
        for i in invites
    ]
    lines = [f"{i['invite_id']}  {i['status']:<8}  {i['role']:<8}  {i['email']}" for i in items]
    return emit(args, {"items": items}, "\n".join(lines) or "no invites")


def invite_revoke(args: argparse.Namespace, settings: Settings) -> int:
    async def work(c: Container) -> None:
        await (await service(c, "invitations")).revoke(OPERATOR, args.org_id, args.invite_id)

    run(settings, work)
    return emit(args, {"revoked": args.invite_id}, f"Revoked {args.invite_id}")


def apikey_create(args: argparse.Namespace, settings: Settings) -> int:
    async def work(c: Container) -> Any:
        keys = await service(c, "api_keys")
        scopes = [ApiKeyScope(s) for s in args.scope or [ApiKeyScope.ANALYTICS_READ.value]]
        return await keys.create(OPERATOR, args.org_id, args.name, scopes)

    issued = run(settings, work)
    data = {
        "key_id": issued.key.id,
        "scopes": [s.value for s in issued.key.scopes],
        "secret": issued.secret,
    }
    text = f"API key {issued.key.id} ({', '.join(data['scopes'])}), shown once:\n  {issued.secret}"
    return emit(args, data, text)


def apikey_list(args: argparse.Namespace, settings: Settings) -> int:
    async def work(c: Container) -> Any:
        return await (await service(c, "api_keys")).for_org(OPERATOR, args.org_id)

    keys = run(settings, work)
    items = [
        {"key_id": k.id, "name": k.name, "scopes": [s.value for s in k.scopes], "hint": k.hint,
         "revoked": k.revoked_at is not None}
        for k in keys
    ]  # fmt: skip
    lines = [f"{i['key_id']}  {i['hint']}…  {','.join(i['scopes']):<20}  {i['name']}"
             + ("  (revoked)" if i["revoked"] else "") for i in items]  # fmt: skip
    return emit(args, {"items": items}, "\n".join(lines) or "no API keys")


def apikey_revoke(args: argparse.Namespace, settings: Settings) -> int:
    async def work(c: Container) -> None:
        await (await service(c, "api_keys")).revoke(OPERATOR, args.org_id, args.key_id)

    run(settings, work)
    return emit(args, {"revoked": args.key_id}, f"Revoked {args.key_id}")


def mail_outbox(args: argparse.Namespace, settings: Settings) -> int:
    async def work(c: Container) -> Any:
        to = args.to.strip().lower() if args.to else None
        return await (await service(c, "outbox")).recent(limit=args.limit, to=to)

    mails = run(settings, work)
    items = [
        {"id": m.id, "kind": m.message.kind, "to": m.message.to, "subject": m.message.subject,
         "text": m.message.text, "created_at": m.created_at.isoformat()}
        for m in mails
    ]  # fmt: skip
    text = "\n\n".join(
        f"--- {m['created_at']}  {m['kind']}\nTo: {m['to']}\nSubject: {m['subject']}\n\n{m['text']}"
        for m in items
    )
    if settings.smtp_url:
        text = "(SMTP is configured: new mail goes to the SMTP server, not here)\n" + text
    return emit(args, {"items": items}, text or "the outbox is empty")


def register(sub: Any, org: Any) -> None:
    user = group(sub, "user", "users")
    p = command(user, "show", user_show, "a user and their orgs")
    p.add_argument("email")
    p = command(user, "sign-out", user_sign_out, "end every session of a user")
    p.add_argument("email")

    members = group(org, "members", "an org's members")
    p = command(members, "list", members_list, "members and roles")
    p.add_argument("org_id")
    for name, handler, help_text in (
        ("add", members_add, "add someone (creating the user) with a role"),
        ("set-role", members_set_role, "change a member's role"),
    ):
        p = command(members, name, handler, help_text)
        p.add_argument("org_id")
        p.add_argument("email")
        p.add_argument("role", choices=[r.value for r in Role])
    p = command(members, "remove", members_remove, "remove a member")
    p.add_argument("org_id")
    p.add_argument("email")

    invite = group(sub, "invite", "invites by email")
    p = command(invite, "create", invite_create, "invite an address (mails a link)")
    p.add_argument("org_id")
    p.add_argument("email")
    p.add_argument(
        "--role", choices=[r.value for r in Role if r is not Role.OWNER], default="observer"
    )
    p = command(invite, "list", invite_list, "an org's invites")
    p.add_argument("org_id")
    p = command(invite, "revoke", invite_revoke, "revoke a pending invite")
    p.add_argument("org_id")
    p.add_argument("invite_id")

    apikey = group(sub, "apikey", "org API keys for programs")
    p = command(apikey, "create", apikey_create, "create a key; its secret is shown once")
    p.add_argument("org_id")
    p.add_argument("--name", required=True)
    p.add_argument("--scope", action="append", choices=[s.value for s in ApiKeyScope])
    p = command(apikey, "list", apikey_list, "an org's keys")
    p.add_argument("org_id")
    p = command(apikey, "revoke", apikey_revoke, "revoke a key")
    p.add_argument("org_id")
    p.add_argument("key_id")

    mail = group(sub, "mail", "mail")
    p = command(mail, "outbox", mail_outbox, "mail the development mailer kept (newest first)")
    p.add_argument("--to")
    p.add_argument("--limit", type=int, default=20)
