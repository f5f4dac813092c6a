"""A local GitHub for tests: the OAuth web flow with PKCE (authorize, access_token) and the two
REST endpoints sign-in reads (/user, /user/emails), served over real HTTP on 127.0.0.1.

It runs a stdlib HTTP server in a thread, so it answers while an async test awaits on its own
event loop, and works the same from sync tests. Answers follow GitHub's wire format, quirks
included: the token endpoint reports a refused code with 200 and an `error` body, and answers
form-encoded unless asked for JSON. It is stricter than GitHub in one way: state and PKCE (S256)
are required, because the service must always send them.

    with GitHubStandIn() as github:          # or: async with GitHubStandIn() as github:
        github.add_account(1, "octocat", "The Octocat", emails=[("o@example.com", True, True)])
        github.approve_as("octocat")
        provider = GitHubOAuthProvider(github.client_id, github.client_secret,
                                       oauth_url=github.url, api_url=github.url)
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from tests.support.standin import ThreadedStandIn

_DOCS = "https://docs.github.com/rest"
_TROUBLESHOOTING = "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/"


@dataclass
class GitHubAccount:
    id: int
    login: str
    name: str | None
    emails: list[tuple[str, bool, bool]] = field(default_factory=list)  # (email, primary, verified)


@dataclass(frozen=True)
class _Grant:
    """What an authorization code stands for until it is exchanged (once)."""

    login: str
    redirect_uri: str
    code_challenge: str
    scope: str


class GitHubStandIn(ThreadedStandIn):
    service = "GitHub"

    def __init__(
        self,
        *,
        client_id: str = "Iv1.standin0000000000",
        client_secret: str = "standin-client-secret",  # noqa: S107 (a test double's own)
        callback_url: str | None = None,
    ) -> None:
        super().__init__()
        """`callback_url`: the OAuth app's registered callback; None accepts any redirect_uri."""
        self.client_id = client_id
        self.client_secret = client_secret
        self.callback_url = callback_url
        # When set, every endpoint answers this status, as GitHub does during an incident.
        self.failing_with: int | None = None
        self._accounts: dict[str, GitHubAccount] = {}
        self._approving: str | None = None
        self._grants: dict[str, _Grant] = {}
        self._tokens: dict[str, tuple[str, frozenset[str]]] = {}  # token -> (login, scopes)
        # Handler threads and the test touch the same dicts; the lock also makes a code's
        # single use hold when two exchanges race.
        self._lock = threading.Lock()

    # --- configuration -------------------------------------------------------------------

    def add_account(
        self,
        id: int,
        login: str,
        name: str | None = None,
        emails: list[tuple[str, bool, bool]] | None = None,
    ) -> GitHubAccount:
        """`emails`: (address, primary, verified) in the order GitHub lists them."""
        account = GitHubAccount(id, login, name, list(emails or []))
        with self._lock:
            self._accounts[login] = account
        return account

    def approve_as(self, login: str | None) -> None:
        """The account whose user approves the next authorizations; None: the user cancels."""
        with self._lock:
            if login is not None and login not in self._accounts:
                raise KeyError(f"no stand-in account {login!r}")
            self._approving = login

    # --- lifecycle ------------------------------------------------------------------------

    def handler(self) -> type[BaseHTTPRequestHandler]:
        return type("_BoundHandler", (_Handler,), {"github": self})

    # --- the endpoints (called from handler threads) --------------------------------------

    def authorize(self, query: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        if query.get("client_id") != self.client_id:
            return 404, {"Content-Type": "text/plain"}, b"Not Found"
        redirect_uri = query.get("redirect_uri", "")
        if not redirect_uri.startswith(("http://", "https://")) or (
            self.callback_url is not None and redirect_uri != self.callback_url
        ):
            return _text(400, "redirect_uri is missing or is not the registered callback URL")
        state, challenge = query.get("state"), query.get("code_challenge")
        if not state or not challenge or query.get("code_challenge_method") != "S256":
            return _text(400, "state, code_challenge and code_challenge_method=S256 are required")
        with self._lock:
            login = self._approving
            if login is None:
                params = {
                    "error": "access_denied",
                    "error_description": "The user has denied your application access.",
                    "error_uri": "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-authorization-request-errors/#access-denied",
                    "state": state,
                }
            else:
                code = secrets.token_hex(10)  # GitHub's codes are 20 hex characters
                self._grants[code] = _Grant(login, redirect_uri, challenge, query.get("scope", ""))
                params = {"code": code, "state": state}
        separator = "&" if "?" in redirect_uri else "?"
        return 302, {"Location": f"{redirect_uri}{separator}{urlencode(params)}"}, b""

    def access_token(self, form: dict[str, str]) -> dict[str, str]:
        if form.get("client_id") != self.client_id or not secrets.compare_digest(
            form.get("client_secret", ""), self.client_secret
        ):
            return _token_error(
                "incorrect_client_credentials",
                "The client_id and/or client_secret passed are incorrect.",
            )
        with self._lock:
            # Popped before any other check: a code is spent by its first exchange, even a
            # failed one, so a wrong verifier cannot be retried with the same code.
            grant = self._grants.pop(form.get("code", ""), None)
        if grant is None:
            return _token_error("bad_verification_code", "The code passed is incorrect or expired.")
        if "redirect_uri" in form and form["redirect_uri"] != grant.redirect_uri:
            return _token_error(
                "redirect_uri_mismatch",
                "The redirect_uri MUST match the registered callback URL for this application.",
            )
        if _s256(form.get("code_verifier", "")) != grant.code_challenge:
            return _token_error("bad_verification_code", "The code passed is incorrect or expired.")
        token = "gho_" + secrets.token_urlsafe(27)
        scopes = frozenset(grant.scope.split())
        with self._lock:
            self._tokens[token] = (grant.login, scopes)
        # GitHub lists granted scopes comma-separated, unlike the space-separated request.
        return {"access_token": token, "token_type": "bearer", "scope": ",".join(sorted(scopes))}

    def api(self, path: str, authorization: str | None) -> tuple[int, Any]:
        scheme, _, token = (authorization or "").partition(" ")
        if not token:
            return 401, _message("Requires authentication")
        with self._lock:
            found = self._tokens.get(token) if scheme.lower() in ("bearer", "token") else None
            account = self._accounts.get(found[0]) if found is not None else None
        if found is None or account is None:
            return 401, _message("Bad credentials")
        if path == "/user":
            return 200, _user_json(account)
        if path == "/user/emails":
            if not found[1] & {"user", "user:email"}:
                return 404, _message("Not Found")  # GitHub hides what a token may not read
            return 200, [
                {
                    "email": email,
                    "primary": primary,
                    "verified": verified,
                    "visibility": "public" if primary else None,
                }
                for email, primary, verified in account.emails
            ]
        return 404, _message("Not Found")


class _Handler(BaseHTTPRequestHandler):
    github: GitHubStandIn  # set on the subclass start() makes

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if self._failing():
            return
        if url.path == "/login/oauth/authorize":
            self._send(*self.github.authorize(_single(parse_qs(url.query))))
            return
        status, body = self.github.api(url.path, self.headers.get("Authorization"))
        self._send_json(status, body)

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        form = _single(parse_qs(self.rfile.read(length).decode()))
        if self._failing():
            return
        if url.path != "/login/oauth/access_token":
            self._send_json(404, _message("Not Found"))
            return
        answer = self.github.access_token(form)
        # Errors too are 200: that is how GitHub answers the token endpoint.
        if "application/json" in self.headers.get("Accept", ""):
            self._send_json(200, answer)
        else:
            body = urlencode(answer).encode()
            self._send(200, {"Content-Type": "application/x-www-form-urlencoded"}, body)

    def _failing(self) -> bool:
        status = self.github.failing_with
        if status is not None:
            self._send(status, {"Content-Type": "text/html"}, b"<h1>Unicorn!</h1>")
        return status is not None

    def _send_json(self, status: int, body: Any) -> None:
        headers = {"Content-Type": "application/json; charset=utf-8"}
        self._send(status, headers, json.dumps(body).encode())

    def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output quiet; pytest shows failures, not every request


def _single(values: dict[str, list[str]]) -> dict[str, str]:
    return {name: items[0] for name, items in values.items()}


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _text(status: int, text: str) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "text/plain"}, text.encode()


def _token_error(error: str, description: str) -> dict[str, str]:
    anchor = error.replace("_", "-")
    return {
        "error": error,
        "error_description": description,
        "error_uri": f"{_TROUBLESHOOTING}#{anchor}",
    }


def _message(message: str) -> dict[str, str]:
    return {"message": message, "documentation_url": _DOCS}


def _user_json(account: GitHubAccount) -> dict[str, Any]:
    public = next((email for email, primary, verified in account.emails if primary), None)
    return {
        "login": account.login,
        "id": account.id,
        "node_id": base64.b64encode(f"04:User{account.id}".encode()).decode(),
        "avatar_url": f"https://avatars.githubusercontent.com/u/{account.id}?v=4",
        "url": f"https://api.github.com/users/{account.login}",
        "html_url": f"https://github.com/{account.login}",
        "type": "User",
        "site_admin": False,
        "name": account.name,
        "company": None,
        "blog": "",
        "location": None,
        "email": public,  # the public profile address: unverified maybe, or null when hidden
        "hireable": None,
        "bio": None,
        "twitter_username": None,
        "public_repos": 8,
        "followers": 20,
        "following": 0,
        "created_at": "2011-01-25T18:44:36Z",
        "updated_at": "2024-06-01T12:00:00Z",
    }
