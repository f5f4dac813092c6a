"""Orgs, members, invites, API keys and org usage."""

from __future__ import annotations

from litestar import Controller, delete, get, patch, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, SkipValidation

from tkcloud_api.http.dashboard.pagination import Cursor, Limit, paginate
from tkcloud_api.http.dashboard.schemas import (
    ApiKeyOut,
    ApiKeyRequest,
    AppUsageOut,
    InviteOut,
    InviteRequest,
    IssuedApiKeyOut,
    MemberOut,
    NameBody,
    OrgOut,
    OrgUsageOut,
    Page,
    RoleBody,
    TokenBody,
)
from tkcloud_application.dashboard.api_keys import ApiKeys
from tkcloud_application.dashboard.apps import AppManagement
from tkcloud_application.dashboard.invitations import Invitations
from tkcloud_application.dashboard.organisations import Organisations
from tkcloud_domain.identity import Principal

Caller = NamedDependency[SkipValidation[Principal]]
Orgs = NamedDependency[SkipValidation[Organisations]]
Invites = NamedDependency[SkipValidation[Invitations]]
Keys = NamedDependency[SkipValidation[ApiKeys]]
Apps = NamedDependency[SkipValidation[AppManagement]]


class OrgController(Controller):
    path = "/api/v1/orgs"
    tags = ["orgs"]

    @get("/", summary="The caller's orgs")
    async def list_orgs(
        self, principal: Caller, organisations: Orgs, limit: Limit = 50, cursor: Cursor = None
    ) -> Page[OrgOut]:
        items, next_cursor = paginate(
            [OrgOut.of(v) for v in await organisations.mine(principal)],
            lambda o: o.org_id, limit, cursor,
        )  # fmt: skip
        return Page(items, next_cursor)

    @post("/", summary="Create an org; the caller becomes its owner")
    async def create_org(
        self, principal: Caller, organisations: Orgs, data: JSONBody[NameBody]
    ) -> OrgOut:
        return OrgOut.of(await organisations.create(principal, data.name))

    @get("/{org_id:str}", summary="One org")
    async def get_org(
        self, principal: Caller, organisations: Orgs, org_id: FromPath[str]
    ) -> OrgOut:
        return OrgOut.of(await organisations.get(principal, org_id))

    @patch("/{org_id:str}", summary="Rename an org (admin)")
    async def rename_org(
        self,
        principal: Caller,
        organisations: Orgs,
        org_id: FromPath[str],
        data: JSONBody[NameBody],
    ) -> OrgOut:
        return OrgOut.of(await organisations.rename(principal, org_id, data.name))

    # --- members ----------------------------------------------------------------------------

    @get("/{org_id:str}/members", summary="Members and their roles")
    async def list_members(
        self, principal: Caller, organisations: Orgs, org_id: FromPath[str],
        limit: Limit = 50, cursor: Cursor = None,
    ) -> Page[MemberOut]:  # fmt: skip
        members = [MemberOut.of(m) for m in await organisations.members(principal, org_id)]
        items, next_cursor = paginate(members, lambda m: m.user_id, limit, cursor)
        return Page(items, next_cursor)

    @patch("/{org_id:str}/members/{user_id:str}", summary="Change a member's role (admin)")
    async def change_role(
        self,
        principal: Caller,
        organisations: Orgs,
        org_id: FromPath[str],
        user_id: FromPath[str],
        data: JSONBody[RoleBody],
    ) -> MemberOut:
        return MemberOut.of(await organisations.change_role(principal, org_id, user_id, data.role))

    @delete("/{org_id:str}/members/{user_id:str}", summary="Remove a member (admin) or leave")
    async def remove_member(
        self, principal: Caller, organisations: Orgs, org_id: FromPath[str], user_id: FromPath[str]
    ) -> None:
        await organisations.remove_member(principal, org_id, user_id)

    # --- invites ----------------------------------------------------------------------------

    @get("/{org_id:str}/invites", summary="Invites, newest first")
    async def list_invites(
        self, principal: Caller, invitations: Invites, state: State, org_id: FromPath[str],
        limit: Limit = 50, cursor: Cursor = None,
    ) -> Page[InviteOut]:  # fmt: skip
        now = state.clock.now()
        invites = [InviteOut.of(i, now) for i in await invitations.for_org(principal, org_id)]
        items, next_cursor = paginate(invites, lambda i: i.invite_id, limit, cursor)
        return Page(items, next_cursor)

    @post("/{org_id:str}/invites", summary="Invite an email address (admin); mails a link")
    async def create_invite(
        self, principal: Caller, invitations: Invites, state: State, org_id: FromPath[str],
        data: JSONBody[InviteRequest],
    ) -> InviteOut:  # fmt: skip
        invite = await invitations.invite(principal, org_id, data.email, data.role)
        return InviteOut.of(invite, state.clock.now())

    @delete("/{org_id:str}/invites/{invite_id:str}", summary="Revoke an invite (admin)")
    async def revoke_invite(
        self,
        principal: Caller,
        invitations: Invites,
        org_id: FromPath[str],
        invite_id: FromPath[str],
    ) -> None:
        await invitations.revoke(principal, org_id, invite_id)

    # --- API keys ---------------------------------------------------------------------------

    @get("/{org_id:str}/api-keys", summary="API keys (admin)")
    async def list_keys(
        self, principal: Caller, api_keys: Keys, org_id: FromPath[str],
        limit: Limit = 50, cursor: Cursor = None,
    ) -> Page[ApiKeyOut]:  # fmt: skip
        keys = [ApiKeyOut.of(k) for k in await api_keys.for_org(principal, org_id)]
        items, next_cursor = paginate(keys, lambda k: k.key_id, limit, cursor)
        return Page(items, next_cursor)

    @post("/{org_id:str}/api-keys", summary="Create an API key (admin); its secret is shown once")
    async def create_key(
        self,
        principal: Caller,
        api_keys: Keys,
        org_id: FromPath[str],
        data: JSONBody[ApiKeyRequest],
    ) -> IssuedApiKeyOut:
        issued = await api_keys.create(principal, org_id, data.name, data.scopes)
        return IssuedApiKeyOut(ApiKeyOut.of(issued.key), issued.secret)

    @delete("/{org_id:str}/api-keys/{key_id:str}", summary="Revoke an API key (admin)")
    async def revoke_key(
        self, principal: Caller, api_keys: Keys, org_id: FromPath[str], key_id: FromPath[str]
    ) -> None:
        await api_keys.revoke(principal, org_id, key_id)

    # --- usage ------------------------------------------------------------------------------

    @get("/{org_id:str}/usage", summary="Events this month against the plan's quota")
    async def org_usage(self, principal: Caller, apps: Apps, org_id: FromPath[str]) -> OrgUsageOut:
        usage = await apps.org_usage(principal, org_id)
        a = usage.allowance
        return OrgUsageOut(
            a.month, a.events_this_month, a.events_limit, a.events_remaining,
            [AppUsageOut.of(u) for u in usage.apps],
        )  # fmt: skip


class InviteResponseController(Controller):
    path = "/api/v1/invites"
    tags = ["orgs"]

    @post("/accept", summary="Accept an invite (signed in with the invited address)")
    async def accept(
        self, principal: Caller, invitations: Invites, data: JSONBody[TokenBody]
    ) -> dict[str, str]:
        membership = await invitations.accept(principal, data.token)
        return {"org_id": membership.org_id, "role": membership.role.value}

    @post("/decline", summary="Decline an invite", status_code=200)
    async def decline(
        self, principal: Caller, invitations: Invites, data: JSONBody[TokenBody]
    ) -> dict[str, str]:
        await invitations.decline(principal, data.token)
        return {"status": "declined"}
