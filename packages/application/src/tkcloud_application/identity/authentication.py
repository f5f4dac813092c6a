"""Signing in (GitHub OAuth, email magic link), browser sessions with CSRF tokens, API keys.

Every secret handed out here (session token, CSRF token, link token, key) is random, shown to
its holder once, and stored only as a SHA-256 hash.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from urllib.parse import quote

from tkcloud_application.ports.identity import Mailer, MailMessage, OAuthProvider
from tkcloud_application.ports.ingestion import RateLimiter
from tkcloud_application.ports.system import Clock, IdGenerator
from tkcloud_application.ports.tenancy import TenancyUnitOfWork
from tkcloud_domain.errors import (
    Conflict,
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
    MAGIC_LINK_PREFIX,
    SESSION_PREFIX,
    USER_PREFIX,
    KeyPrincipal,
    MagicLink,
    OAuthState,
    Principal,
    Session,
    User,
    UserPrincipal,
    normalise_email,
)
from tkcloud_domain.tenancy import hash_token

MAGIC_LINK_TTL = timedelta(minutes=15)
OAUTH_STATE_TTL = timedelta(minutes=10)
KEY_TOUCH_INTERVAL = timedelta(minutes=1)
# Sign-in attempts: per address (someone flooding one inbox) and per client IP (enumeration).
MAGIC_LINKS_PER_ADDRESS = (5, 900)
MAGIC_LINKS_PER_IP = (20, 900)


@dataclass(frozen=True, slots=True)
class SessionGrant:
    """A new browser session: the cookie values, shown once."""

    user: User
    session: Session
    token: str
    csrf_token: str
    redirect_to: str = "/"


def safe_redirect(target: str | None) -> str:
    """Only same-site relative paths: never an open redirect to another host. Control
    characters are refused too: browsers drop tabs and newlines, so "/\t/evil" is "//evil"."""
    if (
        not target
        or not target.startswith("/")
        or target.startswith("//")
        or "\\" in target
        or any(ord(c) < 0x20 or ord(c) == 0x7F for c in target)
    ):
        return "/"
    return target


class Authentication:
    def __init__(
        self,
        *,
        uow: Callable[[], TenancyUnitOfWork],
        ids: IdGenerator,
        clock: Clock,
        rate_limiter: RateLimiter,
        mailer: Mailer,
        oauth: OAuthProvider | None,
        public_url: str,
        dashboard_url: str,
        session_ttl: timedelta,
    ) -> None:
        self._uow = uow
        self._ids = ids
        self._clock = clock
        self._rate_limiter = rate_limiter
        self._mailer = mailer
        self._oauth = oauth
        self._callback_url = f"{public_url}/api/v1/auth/github/callback"
        self._dashboard_url = dashboard_url
        self._session_ttl = session_ttl

    # --- GitHub ------------------------------------------------------------------------------

    async def start_github(self, redirect_to: str | None) -> str:
        oauth = self._require_oauth()
        now = self._clock.now()
        state = OAuthState(
            state=self._ids.secret(""),
            code_verifier=self._ids.secret("") + self._ids.secret(""),  # 86 chars: 43-128 allowed
            redirect_to=safe_redirect(redirect_to),
            created_at=now,
            expires_at=now + OAUTH_STATE_TTL,
        )
        async with self._uow() as uow:
            await uow.oauth_states.add(state)
            await uow.commit()
        return oauth.authorization_url(
            state=state.state, code_verifier=state.code_verifier, redirect_uri=self._callback_url
        )

    async def finish_github(self, state: str, code: str) -> SessionGrant:
        oauth = self._require_oauth()
        async with self._uow() as uow:
            pending = await uow.oauth_states.consume(state, self._clock.now())
            await uow.commit()  # consumed even if what follows fails: a state is single use
        if pending is None:
            raise SignInFailed("Unknown, expired or already used sign-in state")
        identity = await oauth.identity(
            code=code, code_verifier=pending.code_verifier, redirect_uri=self._callback_url
        )
        email = normalise_email(identity.verified_email or "")
        if email is None:
            raise SignInFailed("Your GitHub account has no verified email address")
        async with self._uow() as uow:
            user = await uow.users.by_github_id(identity.id)
            if user is None:
                user = await uow.users.by_email(email)
                if user is None:
                    user = replace(
                        self._new_user(email, identity.name or identity.login),
                        github_id=identity.id,
                        github_login=identity.login,
                    )
                    await uow.users.add(user)
                elif user.github_id is not None and user.github_id != identity.id:
                    raise SignInFailed("This email is linked to another GitHub account")
                else:
                    await uow.users.link_github(user.id, identity.id, identity.login)
                    user = replace(user, github_id=identity.id, github_login=identity.login)
            grant = await self._open_session(uow, user, pending.redirect_to)
            await uow.commit()
        return grant

    def _require_oauth(self) -> OAuthProvider:
        if self._oauth is None:
            raise NotConfigured("GitHub sign-in is not configured on this server")
        return self._oauth

    # --- email magic link -----------------------------------------------------------------------

    async def request_magic_link(self, email: str, client_ip: str) -> None:
        """Send a sign-in link. The answer is the same whether or not the address has an
        account, so it tells nobody who is signed up."""
        address = normalise_email(email)
        if address is None:
            raise ValidationFailed("email: not a valid address", details={"field": "email"})
        now = self._clock.now()
        for key, (limit, window) in (
            (f"signin:email:{address}", MAGIC_LINKS_PER_ADDRESS),
            (f"signin:ip:{client_ip}", MAGIC_LINKS_PER_IP),
        ):
            decision = await self._rate_limiter.hit(key, limit, window, now)
            if not decision.allowed:
                raise RateLimited(
                    "Too many sign-in links requested; try again later",
                    retry_after=decision.state.reset_seconds,
                )
        token = self._ids.secret("")
        link = MagicLink(
            id=self._ids.new_id(MAGIC_LINK_PREFIX),
            email=address,
            token_hash=hash_token(token),
            created_at=now,
            expires_at=now + MAGIC_LINK_TTL,
        )
        async with self._uow() as uow:
            await uow.magic_links.add(link)
            await uow.commit()
        url = f"{self._dashboard_url}/auth/magic-link?token={quote(token)}"
        await self._mailer.send(
            MailMessage(
                to=address,
                subject="Your telemetry-kit cloud sign-in link",
                text=(
                    "Sign in to telemetry-kit cloud with this link:\n\n"
                    f"{url}\n\n"
                    "It works once and expires in 15 minutes. If you did not ask for it, "
                    "ignore this message.\n"
                ),
                kind="magic_link",
            )
        )

    async def verify_magic_link(self, token: str, redirect_to: str | None = None) -> SessionGrant:
        async with self._uow() as uow:
            link = await uow.magic_links.consume(hash_token(token), self._clock.now())
            if link is None:
                raise InvalidLink()
            user = await uow.users.by_email(link.email)
            if user is None:
                user = self._new_user(link.email, link.email.partition("@")[0])
                await uow.users.add(user)
            grant = await self._open_session(uow, user, safe_redirect(redirect_to))
            await uow.commit()
        return grant

    # --- sessions, CSRF, keys ---------------------------------------------------------------

    async def session_principal(self, token: str) -> UserPrincipal:
        async with self._uow() as uow:
            session = await uow.sessions.by_token_hash(hash_token(token))
            if session is None or not session.is_live(self._clock.now()):
                raise Unauthenticated("Your session has expired; sign in again")
            user = await uow.users.get(session.user_id)
        if user is None:
            raise Unauthenticated()
        return UserPrincipal(user=user, session=session)

    async def key_principal(self, key: str) -> KeyPrincipal:
        now = self._clock.now()
        async with self._uow() as uow:
            api_key = await uow.api_keys.by_token_hash(hash_token(key))
            if api_key is None or api_key.revoked_at is not None:
                raise Unauthenticated("Unknown or revoked API key")
            # A minute's precision is enough for "last used", and spares a write per request.
            last = api_key.last_used_at
            if last is None or now - last >= KEY_TOUCH_INTERVAL:
                await uow.api_keys.touch(api_key.id, now)
                await uow.commit()
        return KeyPrincipal(key=api_key)

    def check_csrf(self, principal: Principal, csrf_token: str | None) -> None:
        """Unsafe methods from a browser session must echo the session's CSRF token."""
        if not isinstance(principal, UserPrincipal) or principal.session is None:
            return  # API keys are not sent by browsers on their own: no CSRF
        if not csrf_token or not hmac.compare_digest(
            hash_token(csrf_token), principal.session.csrf_hash
        ):
            raise Forbidden("Missing or wrong X-CSRF-Token header")

    async def logout(self, principal: UserPrincipal) -> None:
        if principal.session is None:
            return
        async with self._uow() as uow:
            await uow.sessions.revoke(principal.session.id, self._clock.now())
            await uow.commit()

    async def logout_everywhere(self, principal: UserPrincipal) -> int:
        async with self._uow() as uow:
            count = await uow.sessions.revoke_all_for_user(principal.user.id, self._clock.now())
            await uow.commit()
        return count

    # --- operators ----------------------------------------------------------------------------

    async def user_by_email(self, email: str) -> User:
        address = normalise_email(email)
        async with self._uow() as uow:
            user = await uow.users.by_email(address) if address else None
        if user is None:
            raise NotFound(f"No user with email {email}")
        return user

    async def end_sessions(self, user_id: str) -> int:
        """Sign a user out everywhere (an operator's answer to a stolen laptop)."""
        async with self._uow() as uow:
            count = await uow.sessions.revoke_all_for_user(user_id, self._clock.now())
            await uow.commit()
        return count

    # --- helpers --------------------------------------------------------------------------------

    def _new_user(self, email: str, display_name: str) -> User:
        return User(
            id=self._ids.new_id(USER_PREFIX),
            email=email,
            display_name=display_name[:100],
            created_at=self._clock.now(),
        )

    async def _open_session(
        self, uow: TenancyUnitOfWork, user: User, redirect_to: str
    ) -> SessionGrant:
        now = self._clock.now()
        token, csrf = self._ids.secret(""), self._ids.secret("")
        session = Session(
            id=self._ids.new_id(SESSION_PREFIX),
            user_id=user.id,
            token_hash=hash_token(token),
            csrf_hash=hash_token(csrf),
            created_at=now,
            expires_at=now + self._session_ttl,
        )
        try:
            await uow.sessions.add(session)
        except Conflict as exc:  # a token collision: 256 random bits, so never in practice
            raise SignInFailed("Could not open a session; try again") from exc
        return SessionGrant(user, session, token, csrf, redirect_to)
