"""`Authentication` over the fakes: email magic links (single use, 15 minutes, rate-limited per
address and per client IP), GitHub sign-in (state and PKCE, create / link / refuse), browser
sessions and their CSRF token, API keys, logout and the operator helpers (no I/O)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest

from tests.fakes.mail import FakeMailer, first_link
from tests.fakes.storage import FakeDatabase, FakeTenancyUnitOfWork
from tests.fakes.system import FakeClock
from tkcloud_adapters.memory.limits import InProcessRateLimiter
from tkcloud_adapters.system import RandomIdGenerator
from tkcloud_application.identity.authentication import (
    Authentication,
    SessionGrant,
    safe_redirect,
)
from tkcloud_domain.errors import (
    Forbidden,
    InvalidLink,
    NotConfigured,
    NotFound,
    RateLimited,
    SignInFailed,
    Unauthenticated,
    ValidationFailed,
)
from tkcloud_domain.identity import (
    ApiKey,
    ApiKeyScope,
    GitHubIdentity,
    KeyPrincipal,
    User,
    UserPrincipal,
)

PUBLIC_URL = "https://api.tk.example"
DASHBOARD_URL = "https://dash.tk.example"
CALLBACK_URL = f"{PUBLIC_URL}/api/v1/auth/github/callback"
AUTHORIZE_URL = "https://github.example/login/oauth/authorize"
SESSION_TTL = timedelta(days=14)
IP = "203.0.113.7"
ORG = "550e8400-e29b-41d4-a716-446655440000"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class FakeGitHub:
    """An `OAuthProvider`: hands out a fixed authorization URL and, for any code, the configured
    identity (or refuses the code when there is none)."""

    account: GitHubIdentity | None = None
    authorizations: list[dict[str, str]] = field(default_factory=list)
    exchanges: list[dict[str, str]] = field(default_factory=list)

    def authorization_url(self, *, state: str, code_verifier: str, redirect_uri: str) -> str:
        self.authorizations.append(
            {"state": state, "code_verifier": code_verifier, "redirect_uri": redirect_uri}
        )
        return f"{AUTHORIZE_URL}?state={state}"

    async def identity(self, *, code: str, code_verifier: str, redirect_uri: str) -> GitHubIdentity:
        self.exchanges.append(
            {"code": code, "code_verifier": code_verifier, "redirect_uri": redirect_uri}
        )
        if self.account is None:
            raise SignInFailed("GitHub refused the code")
        return self.account


@dataclass
class World:
    db: FakeDatabase = field(default_factory=FakeDatabase)
    clock: FakeClock = field(default_factory=FakeClock)
    mailer: FakeMailer = field(default_factory=FakeMailer)
    limiter: InProcessRateLimiter = field(default_factory=InProcessRateLimiter)
    github: FakeGitHub | None = field(default_factory=FakeGitHub)

    def __post_init__(self) -> None:
        self.auth = Authentication(
            uow=lambda: FakeTenancyUnitOfWork(self.db),
            ids=RandomIdGenerator(),
            clock=self.clock,
            rate_limiter=self.limiter,
            mailer=self.mailer,
            oauth=self.github,
            public_url=PUBLIC_URL,
            dashboard_url=DASHBOARD_URL,
            session_ttl=SESSION_TTL,
        )

    @property
    def gh(self) -> FakeGitHub:
        assert self.github is not None
        return self.github

    async def link_token(self, email: str, ip: str = IP) -> str:
        """Request a magic link and read its token out of the mail, as the user would."""
        await self.auth.request_magic_link(email, ip)
        url = first_link(self.mailer.sent[-1].text)
        return parse_qs(urlsplit(url).query)["token"][0]

    async def sign_in(self, email: str = "alice@example.com") -> SessionGrant:
        return await self.auth.verify_magic_link(await self.link_token(email))

    async def github_state(self, redirect_to: str | None = None) -> str:
        await self.auth.start_github(redirect_to)
        return self.gh.authorizations[-1]["state"]

    def add_user(self, email: str, github_id: int | None = None) -> User:
        user = User(
            id=f"usr_{len(self.db.users):020d}",
            email=email,
            display_name=email.partition("@")[0],
            created_at=self.clock.now(),
            github_id=github_id,
            github_login=None if github_id is None else f"gh{github_id}",
        )
        self.db.users[user.id] = user
        return user

    def add_key(self, secret: str = "tkk_" + "k" * 43, *, revoked: bool = False) -> ApiKey:
        key = ApiKey(
            id=f"key_{len(self.db.api_keys):020d}",
            org_id=ORG,
            name="CI",
            scopes=(ApiKeyScope.ANALYTICS_READ,),
            token_hash=sha256(secret),
            hint=secret[:8],
            created_by=None,
            created_at=self.clock.now(),
            revoked_at=self.clock.now() if revoked else None,
        )
        self.db.api_keys[key.id] = key
        return key


def account(
    github_id: int = 4242,
    email: str | None = "alice@example.com",
    *,
    login: str = "alice-gh",
    name: str | None = "Alice Liddell",
) -> GitHubIdentity:
    return GitHubIdentity(id=github_id, login=login, name=name, verified_email=email)


# --- magic link: request -------------------------------------------------------------------------


async def test_a_magic_link_is_mailed_to_the_normalised_address_with_a_link_holding_the_token() -> (
    None
):
    w = World()
    await w.auth.request_magic_link("  Alice@Example.COM ", IP)

    [mail] = w.mailer.sent
    assert mail.to == "alice@example.com"
    assert mail.kind == "magic_link"
    url = first_link(mail.text)
    assert url.startswith(f"{DASHBOARD_URL}/auth/magic-link?token=")
    token = parse_qs(urlsplit(url).query)["token"][0]
    [link] = w.db.magic_links.values()
    assert link.email == "alice@example.com"
    assert link.token_hash == sha256(token)
    assert link.created_at == w.clock.now()
    assert link.expires_at == w.clock.now() + timedelta(minutes=15)
    assert link.used_at is None
    assert link.id.startswith("mlk_")


async def test_the_link_token_is_stored_only_as_its_sha256() -> None:
    w = World()
    token = await w.link_token("alice@example.com")
    assert len(token) >= 43  # 256 random bits
    assert token not in repr(w.db)
    assert [link.token_hash for link in w.db.magic_links.values()] == [sha256(token)]


async def test_every_request_mails_a_different_token() -> None:
    w = World()
    first = await w.link_token("alice@example.com")
    second = await w.link_token("alice@example.com")
    assert first != second
    assert len(w.db.magic_links) == 2


@pytest.mark.parametrize(
    "email", ["", "   ", "alice", "@example.com", "alice@", "alice@localhost", "a b@example.com"]
)
async def test_an_invalid_address_is_a_validation_error_and_nothing_is_sent_or_stored(
    email: str,
) -> None:
    w = World()
    with pytest.raises(ValidationFailed) as raised:
        await w.auth.request_magic_link(email, IP)
    assert raised.value.details == {"field": "email"}
    assert w.mailer.sent == []
    assert w.db.magic_links == {}


async def test_the_answer_is_the_same_for_an_existing_and_an_unknown_address() -> None:
    w = World()
    await w.sign_in("alice@example.com")
    w.mailer.sent.clear()

    existing = await w.auth.request_magic_link("alice@example.com", IP)
    unknown = await w.auth.request_magic_link("bob@example.com", IP)

    assert existing is None
    assert unknown is None
    alice_mail, bob_mail = w.mailer.sent
    assert (alice_mail.subject, alice_mail.kind) == (bob_mail.subject, bob_mail.kind)
    alice_text = alice_mail.text.replace(first_link(alice_mail.text), "<link>")
    bob_text = bob_mail.text.replace(first_link(bob_mail.text), "<link>")
    assert alice_text == bob_text
    assert [u.email for u in w.db.users.values()] == ["alice@example.com"]  # no user for bob yet


# --- magic link: rate limits ---------------------------------------------------------------------


async def test_the_sixth_link_for_one_address_in_15_minutes_is_rate_limited() -> None:
    w = World()
    await w.auth.request_magic_link("alice@example.com", "198.51.100.1")
    w.clock.advance(100)
    for i, spelling in enumerate(["ALICE@example.com", "alice@EXAMPLE.com", " alice@example.com"]):
        await w.auth.request_magic_link(spelling, f"198.51.100.{i + 2}")
    await w.auth.request_magic_link("alice@example.com", "198.51.100.9")

    with pytest.raises(RateLimited) as raised:
        await w.auth.request_magic_link("Alice@Example.com", "198.51.100.10")
    # The oldest of the five leaves the 900-second window 800 seconds from now.
    assert raised.value.retry_after == 800
    assert len(w.mailer.sent) == 5
    assert len(w.db.magic_links) == 5


async def test_the_address_limit_frees_up_when_the_oldest_link_leaves_the_window() -> None:
    w = World()
    for _ in range(5):
        await w.auth.request_magic_link("alice@example.com", IP)
    with pytest.raises(RateLimited):
        await w.auth.request_magic_link("alice@example.com", IP)
    w.clock.advance(899)
    with pytest.raises(RateLimited) as raised:
        await w.auth.request_magic_link("alice@example.com", IP)
    assert raised.value.retry_after == 1
    w.clock.advance(1)
    await w.auth.request_magic_link("alice@example.com", IP)
    assert len(w.mailer.sent) == 6


async def test_the_address_limit_does_not_hold_back_other_addresses() -> None:
    w = World()
    for _ in range(5):
        await w.auth.request_magic_link("alice@example.com", IP)
    await w.auth.request_magic_link("bob@example.com", IP)
    assert w.mailer.sent[-1].to == "bob@example.com"


async def test_the_twenty_first_link_from_one_ip_in_15_minutes_is_rate_limited() -> None:
    w = World()
    for i in range(20):
        await w.auth.request_magic_link(f"user{i}@example.com", IP)

    with pytest.raises(RateLimited) as raised:
        await w.auth.request_magic_link("user20@example.com", IP)
    assert raised.value.retry_after == 900
    assert len(w.mailer.sent) == 20

    await w.auth.request_magic_link("user20@example.com", "198.51.100.1")  # another client
    assert w.mailer.sent[-1].to == "user20@example.com"


# --- magic link: verify --------------------------------------------------------------------------


async def test_verifying_a_link_creates_the_user_with_the_lowercased_email_and_a_session() -> None:
    w = World()
    token = await w.link_token("Alice@Example.com")
    w.clock.advance(30)

    grant = await w.auth.verify_magic_link(token)

    now = w.clock.now()
    user = grant.user
    assert (user.email, user.display_name, user.created_at) == ("alice@example.com", "alice", now)
    assert user.id.startswith("usr_")
    assert (user.github_id, user.github_login) == (None, None)
    assert w.db.users == {user.id: user}
    session = grant.session
    assert w.db.sessions == {session.id: session}
    assert session.id.startswith("ses_")
    assert session.user_id == user.id
    assert session.token_hash == sha256(grant.token)
    assert session.csrf_hash == sha256(grant.csrf_token)
    assert (session.created_at, session.expires_at) == (now, now + SESSION_TTL)
    assert grant.token != grant.csrf_token
    assert grant.token not in repr(w.db)
    assert grant.csrf_token not in repr(w.db)
    assert grant.redirect_to == "/"
    [link] = w.db.magic_links.values()
    assert link.used_at == now


async def test_a_second_link_for_the_same_address_signs_in_the_same_user() -> None:
    w = World()
    first = await w.sign_in("alice@example.com")
    second = await w.sign_in("ALICE@example.com")
    assert second.user == first.user
    assert len(w.db.users) == 1
    assert len(w.db.sessions) == 2
    assert first.token != second.token


async def test_a_link_works_only_once() -> None:
    w = World()
    token = await w.link_token("alice@example.com")
    await w.auth.verify_magic_link(token)
    with pytest.raises(InvalidLink):
        await w.auth.verify_magic_link(token)
    assert len(w.db.sessions) == 1


async def test_an_unknown_token_is_an_invalid_link() -> None:
    w = World()
    await w.link_token("alice@example.com")
    with pytest.raises(InvalidLink):
        await w.auth.verify_magic_link("not-the-token")
    assert (w.db.users, w.db.sessions) == ({}, {})


@pytest.mark.parametrize(("seconds", "works"), [(15 * 60 - 1, True), (15 * 60, False)])
async def test_a_link_expires_exactly_15_minutes_after_it_was_sent(
    seconds: int, works: bool
) -> None:
    w = World()
    token = await w.link_token("alice@example.com")
    w.clock.advance(seconds)
    if works:
        assert (await w.auth.verify_magic_link(token)).user.email == "alice@example.com"
    else:
        with pytest.raises(InvalidLink):
            await w.auth.verify_magic_link(token)
        assert w.db.users == {}


@pytest.mark.parametrize(
    ("redirect_to", "expected"),
    [(None, "/"), ("/apps/123?tab=usage", "/apps/123?tab=usage"), ("//evil.example", "/")],
)
async def test_verify_keeps_only_a_same_site_redirect(
    redirect_to: str | None, expected: str
) -> None:
    w = World()
    token = await w.link_token("alice@example.com")
    grant = await w.auth.verify_magic_link(token, redirect_to)
    assert grant.redirect_to == expected


# --- GitHub --------------------------------------------------------------------------------------


async def test_start_github_stores_the_state_and_pkce_verifier_and_returns_the_providers_url() -> (
    None
):
    w = World()
    url = await w.auth.start_github("/apps?x=1")

    [asked] = w.gh.authorizations
    assert url == f"{AUTHORIZE_URL}?state={asked['state']}"
    assert asked["redirect_uri"] == CALLBACK_URL
    stored = w.db.oauth_states[asked["state"]]
    assert stored.code_verifier == asked["code_verifier"]
    assert 43 <= len(stored.code_verifier) <= 128  # RFC 7636
    assert len(stored.state) >= 43
    assert stored.redirect_to == "/apps?x=1"
    assert stored.expires_at == w.clock.now() + timedelta(minutes=10)


async def test_every_github_start_gets_its_own_state_and_verifier() -> None:
    w = World()
    await w.auth.start_github(None)
    await w.auth.start_github(None)
    first, second = w.gh.authorizations
    assert first["state"] != second["state"]
    assert first["code_verifier"] != second["code_verifier"]


@pytest.mark.parametrize("redirect_to", [None, "https://evil.example/", "//evil.example"])
async def test_start_github_keeps_only_a_same_site_redirect(redirect_to: str | None) -> None:
    w = World()
    state = await w.github_state(redirect_to)
    assert w.db.oauth_states[state].redirect_to == "/"


async def test_finish_github_creates_the_user_from_the_verified_email_and_opens_a_session() -> None:
    w = World()
    state = await w.github_state("/apps")
    verifier = w.gh.authorizations[-1]["code_verifier"]
    w.gh.account = account(4242, "alice@example.com", login="alice-gh", name="Alice Liddell")

    grant = await w.auth.finish_github(state, "the-code")

    assert w.gh.exchanges == [
        {"code": "the-code", "code_verifier": verifier, "redirect_uri": CALLBACK_URL}
    ]
    user = grant.user
    assert (user.email, user.display_name, user.github_id, user.github_login) == (
        "alice@example.com",
        "Alice Liddell",
        4242,
        "alice-gh",
    )
    assert w.db.users == {user.id: user}
    assert w.db.sessions == {grant.session.id: grant.session}
    assert grant.session.token_hash == sha256(grant.token)
    assert grant.redirect_to == "/apps"
    assert w.db.oauth_states == {}


async def test_a_github_user_without_a_name_is_named_after_the_login() -> None:
    w = World()
    state = await w.github_state()
    w.gh.account = account(name=None, login="octo")
    grant = await w.auth.finish_github(state, "code")
    assert grant.user.display_name == "octo"


async def test_a_github_state_works_only_once() -> None:
    w = World()
    state = await w.github_state()
    w.gh.account = account()
    await w.auth.finish_github(state, "code")
    with pytest.raises(SignInFailed):
        await w.auth.finish_github(state, "code")
    assert len(w.gh.exchanges) == 1
    assert len(w.db.sessions) == 1


async def test_an_unknown_github_state_is_refused_without_asking_github() -> None:
    w = World()
    await w.github_state()
    w.gh.account = account()
    with pytest.raises(SignInFailed):
        await w.auth.finish_github("forged-state", "code")
    assert w.gh.exchanges == []
    assert (w.db.users, w.db.sessions) == ({}, {})


async def test_a_github_state_expires_after_10_minutes() -> None:
    w = World()
    state = await w.github_state()
    w.gh.account = account()
    w.clock.advance(600)
    with pytest.raises(SignInFailed):
        await w.auth.finish_github(state, "code")
    assert w.gh.exchanges == []
    assert w.db.oauth_states == {}


async def test_a_state_is_used_up_even_when_github_refuses_the_code() -> None:
    w = World()
    state = await w.github_state()
    with pytest.raises(SignInFailed):
        await w.auth.finish_github(state, "bad-code")  # no account: the provider refuses
    w.gh.account = account()
    with pytest.raises(SignInFailed):
        await w.auth.finish_github(state, "good-code")
    assert len(w.gh.exchanges) == 1
    assert w.db.oauth_states == {}


async def test_a_github_account_without_a_verified_email_is_refused_and_creates_nothing() -> None:
    w = World()
    state = await w.github_state()
    w.gh.account = account(email=None)
    with pytest.raises(SignInFailed, match="verified email"):
        await w.auth.finish_github(state, "code")
    assert (w.db.users, w.db.sessions) == ({}, {})


async def test_github_sign_in_links_the_existing_user_with_the_same_email() -> None:
    w = World()
    existing = (await w.sign_in("alice@example.com")).user
    state = await w.github_state()
    w.gh.account = account(4242, "alice@example.com", login="alice-gh")

    grant = await w.auth.finish_github(state, "code")

    assert grant.user.id == existing.id
    assert list(w.db.users) == [existing.id]
    linked = w.db.users[existing.id]
    assert (linked.github_id, linked.github_login) == (4242, "alice-gh")
    assert linked.email == "alice@example.com"
    assert w.db.sessions[grant.session.id].user_id == existing.id


async def test_github_sign_in_links_the_existing_user_whose_email_differs_only_in_case() -> None:
    w = World()
    existing = (await w.sign_in("alice@example.com")).user
    state = await w.github_state()
    w.gh.account = account(4242, "Alice@Example.com")

    grant = await w.auth.finish_github(state, "code")

    assert grant.user.id == existing.id
    assert [u.email for u in w.db.users.values()] == ["alice@example.com"]


async def test_github_sign_in_is_refused_when_the_email_belongs_to_a_user_of_another_account() -> (
    None
):
    w = World()
    owner = w.add_user("alice@example.com", github_id=1)
    state = await w.github_state()
    w.gh.account = account(2, "alice@example.com")

    with pytest.raises(SignInFailed, match="another GitHub account"):
        await w.auth.finish_github(state, "code")

    assert w.db.users == {owner.id: owner}  # not relinked, no second user
    assert w.db.sessions == {}


async def test_a_returning_github_user_is_found_by_github_id_even_with_a_new_email() -> None:
    w = World()
    state = await w.github_state()
    w.gh.account = account(4242, "alice@example.com")
    first = await w.auth.finish_github(state, "code")

    state = await w.github_state()
    w.gh.account = account(4242, "alice@new-job.example")
    again = await w.auth.finish_github(state, "code")

    assert again.user.id == first.user.id
    assert [u.email for u in w.db.users.values()] == ["alice@example.com"]
    assert len(w.db.sessions) == 2


async def test_github_sign_in_without_a_provider_is_not_configured() -> None:
    w = World(github=None)
    with pytest.raises(NotConfigured):
        await w.auth.start_github("/")
    with pytest.raises(NotConfigured):
        await w.auth.finish_github("state", "code")
    assert w.db.oauth_states == {}


# --- safe_redirect -------------------------------------------------------------------------------

SAME_SITE = ["/", "/apps", "/apps/123?tab=usage#top", "/a//b"]
OFF_SITE = [
    "//evil.example",
    "//evil.example/path",
    "http://evil.example",
    "https://evil.example/x",
    "\\\\evil.example",
    "/\\evil.example",
    "\\/evil.example",
    "javascript:alert(1)",
    "apps",
    "evil.example",
]


@pytest.mark.parametrize("target", SAME_SITE)
def test_safe_redirect_keeps_a_relative_path(target: str) -> None:
    assert safe_redirect(target) == target


@pytest.mark.parametrize("target", [None, "", *OFF_SITE])
def test_safe_redirect_replaces_anything_else_with_the_root(target: str | None) -> None:
    assert safe_redirect(target) == "/"


@pytest.mark.parametrize("target", [None, *SAME_SITE, *OFF_SITE])
def test_a_safe_redirect_resolves_on_the_dashboards_own_host(target: str | None) -> None:
    resolved = urljoin(f"{DASHBOARD_URL}/", safe_redirect(target))
    assert urlsplit(resolved).netloc == urlsplit(DASHBOARD_URL).netloc


@pytest.mark.parametrize("target", ["/\t/evil.example", "/\n/evil.example", "/\r/evil.example"])
def test_a_redirect_with_a_tab_or_newline_does_not_leave_the_dashboard(target: str) -> None:
    resolved = urljoin(f"{DASHBOARD_URL}/", safe_redirect(target))
    assert urlsplit(resolved).netloc == urlsplit(DASHBOARD_URL).netloc


# --- sessions ------------------------------------------------------------------------------------


async def test_a_live_session_token_gives_its_user_and_session() -> None:
    w = World()
    grant = await w.sign_in()
    principal = await w.auth.session_principal(grant.token)
    assert principal == UserPrincipal(user=grant.user, session=grant.session)


async def test_a_session_ends_at_its_expiry() -> None:
    w = World()
    grant = await w.sign_in()
    w.clock.set(grant.session.expires_at - timedelta(seconds=1))
    await w.auth.session_principal(grant.token)
    w.clock.set(grant.session.expires_at)
    with pytest.raises(Unauthenticated):
        await w.auth.session_principal(grant.token)


@pytest.mark.parametrize("token", ["", "not-a-session-token"])
async def test_an_unknown_session_token_is_unauthenticated(token: str) -> None:
    w = World()
    await w.sign_in()
    with pytest.raises(Unauthenticated):
        await w.auth.session_principal(token)


async def test_the_csrf_token_is_not_a_session_token() -> None:
    w = World()
    grant = await w.sign_in()
    with pytest.raises(Unauthenticated):
        await w.auth.session_principal(grant.csrf_token)


# --- CSRF ----------------------------------------------------------------------------------------


async def test_the_sessions_own_csrf_token_passes() -> None:
    w = World()
    grant = await w.sign_in()
    principal = await w.auth.session_principal(grant.token)
    w.auth.check_csrf(principal, grant.csrf_token)  # does not raise


@pytest.mark.parametrize("sent", [None, "", "wrong", "the-session-token", "another-sessions-csrf"])
async def test_a_missing_or_wrong_csrf_token_is_forbidden(sent: str | None) -> None:
    w = World()
    grant = await w.sign_in()
    other = await w.sign_in()
    principal = await w.auth.session_principal(grant.token)
    if sent == "the-session-token":
        sent = grant.token
    elif sent == "another-sessions-csrf":
        sent = other.csrf_token
    with pytest.raises(Forbidden):
        w.auth.check_csrf(principal, sent)


async def test_an_api_key_needs_no_csrf_token() -> None:
    w = World()
    w.add_key("tkk_the-key")
    principal = await w.auth.key_principal("tkk_the-key")
    w.auth.check_csrf(principal, None)  # does not raise


async def test_an_operator_side_user_principal_without_a_session_needs_no_csrf_token() -> None:
    w = World()
    user = w.add_user("ops@example.com")
    w.auth.check_csrf(UserPrincipal(user=user, session=None), None)  # does not raise


# --- API keys ------------------------------------------------------------------------------------


async def test_a_key_gives_its_key_principal_and_records_the_use() -> None:
    w = World()
    key = w.add_key("tkk_the-key")
    w.clock.advance(30)
    principal = await w.auth.key_principal("tkk_the-key")
    assert isinstance(principal, KeyPrincipal)
    assert principal.key.id == key.id
    assert w.db.api_keys[key.id].last_used_at == w.clock.now()


@pytest.mark.parametrize("sent", ["tkk_unknown", "", "tkk_the-key "])
async def test_an_unknown_key_is_unauthenticated(sent: str) -> None:
    w = World()
    w.add_key("tkk_the-key")
    with pytest.raises(Unauthenticated):
        await w.auth.key_principal(sent)


async def test_a_revoked_key_is_unauthenticated_and_not_touched() -> None:
    w = World()
    key = w.add_key("tkk_the-key", revoked=True)
    with pytest.raises(Unauthenticated):
        await w.auth.key_principal("tkk_the-key")
    assert w.db.api_keys[key.id].last_used_at is None


async def test_last_used_is_written_at_most_once_a_minute() -> None:
    w = World()
    key = w.add_key("tkk_the-key")
    t0 = w.clock.now()
    await w.auth.key_principal("tkk_the-key")
    assert w.db.api_keys[key.id].last_used_at == t0

    w.clock.advance(59)
    await w.auth.key_principal("tkk_the-key")
    assert w.db.api_keys[key.id].last_used_at == t0

    w.clock.advance(1)
    await w.auth.key_principal("tkk_the-key")
    assert w.db.api_keys[key.id].last_used_at == t0 + timedelta(seconds=60)


# --- logout --------------------------------------------------------------------------------------


async def test_logout_ends_this_session_only() -> None:
    w = World()
    here = await w.sign_in()
    elsewhere = await w.sign_in()
    w.clock.advance(5)

    await w.auth.logout(await w.auth.session_principal(here.token))

    assert w.db.sessions[here.session.id].revoked_at == w.clock.now()
    with pytest.raises(Unauthenticated):
        await w.auth.session_principal(here.token)
    assert (await w.auth.session_principal(elsewhere.token)).session == elsewhere.session


async def test_logout_without_a_session_changes_nothing() -> None:
    w = World()
    grant = await w.sign_in()
    await w.auth.logout(UserPrincipal(user=grant.user, session=None))
    assert w.db.sessions[grant.session.id].revoked_at is None


async def test_logout_everywhere_ends_every_live_session_of_the_user_and_counts_them() -> None:
    w = World()
    first, second, third = [await w.sign_in("alice@example.com") for _ in range(3)]
    bob = await w.sign_in("bob@example.com")
    await w.auth.logout(await w.auth.session_principal(first.token))

    count = await w.auth.logout_everywhere(await w.auth.session_principal(second.token))

    assert count == 2  # the one already ended is not counted
    for grant in (second, third):
        with pytest.raises(Unauthenticated):
            await w.auth.session_principal(grant.token)
    assert (await w.auth.session_principal(bob.token)).user == bob.user


async def test_end_sessions_signs_a_user_out_everywhere_and_counts_the_sessions() -> None:
    w = World()
    grants = [await w.sign_in("alice@example.com") for _ in range(2)]
    bob = await w.sign_in("bob@example.com")

    assert await w.auth.end_sessions(grants[0].user.id) == 2
    assert await w.auth.end_sessions(grants[0].user.id) == 0
    for grant in grants:
        with pytest.raises(Unauthenticated):
            await w.auth.session_principal(grant.token)
    await w.auth.session_principal(bob.token)


async def test_end_sessions_of_an_unknown_user_ends_nothing() -> None:
    w = World()
    await w.sign_in()
    assert await w.auth.end_sessions("usr_unknown") == 0


# --- operator helpers ----------------------------------------------------------------------------


async def test_user_by_email_finds_the_user_whatever_the_case() -> None:
    w = World()
    user = (await w.sign_in("alice@example.com")).user
    assert await w.auth.user_by_email("  ALICE@example.com ") == user


@pytest.mark.parametrize("email", ["bob@example.com", "not an address", ""])
async def test_user_by_email_of_an_unknown_or_invalid_address_is_not_found(email: str) -> None:
    w = World()
    await w.sign_in("alice@example.com")
    with pytest.raises(NotFound):
        await w.auth.user_by_email(email)
