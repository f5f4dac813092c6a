"""The `Mailer` port over SMTP, with the standard library's smtplib.

smtplib blocks, so each message is sent from a worker thread (`asyncio.to_thread`) on a
connection of its own: mails are rare (sign-in links, invites, quota and payment notices), and a
fresh connection cannot fail on a pooled socket the server closed long ago.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import smtplib
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from urllib.parse import unquote, urlsplit

from tkcloud_application.ports.identity import MailMessage
from tkcloud_domain.errors import ServiceUnavailable, ValidationFailed

DEPENDENCY = "mail"

_DEFAULT_PORTS = {"smtp": 587, "smtps": 465}  # submission (RFC 6409), implicit TLS (RFC 8314)
_URL_SHAPE = "expected smtp://user:password@host:587 or smtps://user:password@host:465"

# smtplib announces no 8BITMIME, so the body must be 7-bit clean on the wire: a non-ASCII text
# goes out as quoted-printable or base64 (whichever is shorter) instead of raw 8-bit bytes.
_POLICY = policy.default.clone(cte_type="7bit")

# Characters that end a header line for some mail software: CR and LF, but also the other
# control characters and the Unicode line separators str.splitlines() honours.
_LINE_BREAKING = frozenset([chr(c) for c in range(32)] + ["\x7f", "\x85", "\u2028", "\u2029"])
# A bare addr-spec only: these would turn one recipient into a list, a display name or a route.
_NOT_IN_ADDRESS = frozenset(' \t,;:<>()[]"\\')


@dataclass(frozen=True, slots=True)
class _Server:
    host: str
    port: int
    implicit_tls: bool
    user: str | None
    password: str


def _parse_url(url: str) -> _Server:
    # Messages never quote the URL: it holds the password and ends up in the startup log.
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise ValueError(f"smtp_url: malformed URL ({_URL_SHAPE})") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(f"smtp_url: unsupported scheme {scheme!r} ({_URL_SHAPE})")
    if not parts.hostname:
        raise ValueError(f"smtp_url: no host ({_URL_SHAPE})")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        # Usually a '/', '?' or '#' in an unencoded password, which cut the URL short.
        raise ValueError(
            "smtp_url: unexpected path, query or fragment; URL-encode special characters "
            f"in the user and password ({_URL_SHAPE})"
        )
    if port == 0:
        raise ValueError("smtp_url: port must be between 1 and 65535")
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else ""
    if user is None and password:
        raise ValueError(f"smtp_url: a password without a user ({_URL_SHAPE})")
    # smtplib encodes AUTH PLAIN and LOGIN credentials as ASCII; better to say so at startup
    # than to fail with a UnicodeEncodeError on the first mail.
    if not (user or "").isascii() or not password.isascii():
        raise ValueError("smtp_url: the user and password must be ASCII")
    return _Server(
        host=parts.hostname,
        port=port or _DEFAULT_PORTS[scheme],
        implicit_tls=scheme == "smtps",
        user=user,
        password=password,
    )


def _parse_sender(sender: str) -> Address:
    if _LINE_BREAKING.intersection(sender):
        raise ValueError("mail_from: must be a single line")
    name, addr = parseaddr(sender)
    address: Address | None
    try:
        address = Address(display_name=name, addr_spec=addr)
    except Exception:  # the addr-spec parser raises ValueError, HeaderParseError, IndexError
        address = None
    if address is None or not address.username or not address.domain:
        raise ValueError(f"mail_from: expected 'Name <user@example.com>', got {sender!r}")
    return address


def _check_single_line(value: str, what: str) -> None:
    if _LINE_BREAKING.intersection(value):
        raise ValueError(f"{what} must not contain line breaks or control characters")


def _check_recipient(to: str) -> None:
    _check_single_line(to, "recipient")
    local, at, domain = to.rpartition("@")
    if not at or not local or not domain or "@" in local or _NOT_IN_ADDRESS.intersection(to):
        raise ValueError("recipient must be a single bare address like user@example.com")


class SmtpMailer:
    """Sends each `MailMessage` as a plain-text UTF-8 mail.

    `url` is `smtp://user:password@host:587` (upgraded with STARTTLS when the server offers it)
    or `smtps://user:password@host:465` (TLS from the first byte); user and password are
    URL-encoded and optional (no AUTH without a user). `sender` is the From header, "Name <addr>".
    `ssl_context` defaults to the system's trust store; pass one to trust a private CA.

    Raises ValueError at construction for a malformed URL or sender. `send` raises ValueError
    for a subject or recipient that could inject headers or recipients (a caller's bug),
    ValidationFailed when the server refuses the recipient for good, ServiceUnavailable("mail")
    when the server cannot be reached, refuses the login, the sender or the message, or asks
    to try again later.
    """

    def __init__(
        self,
        url: str,
        sender: str,
        *,
        timeout: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._server = _parse_url(url)
        self._sender = _parse_sender(sender)
        self._timeout = timeout
        self._ssl_context = ssl_context or ssl.create_default_context()

    def __repr__(self) -> str:
        # Without the password: the container and error logs may print adapters.
        s = self._server
        scheme = "smtps" if s.implicit_tls else "smtp"
        user = f"{s.user}@" if s.user else ""
        return f"SmtpMailer({scheme}://{user}{s.host}:{s.port}, sender={str(self._sender)!r})"

    async def send(self, message: MailMessage) -> None:
        mail = self._build(message)
        try:
            await asyncio.to_thread(self._deliver, mail, message.to)
        except smtplib.SMTPRecipientsRefused as exc:
            # 5xx is final for this address (unknown mailbox, rejected domain): retrying cannot
            # help, the caller should say the address is wrong. 4xx (greylisting, full mailbox,
            # rate limits) is the server asking to try again later.
            codes = [code for code, _ in exc.recipients.values()]
            if codes and all(code >= 500 for code in codes):
                raise ValidationFailed("recipient refused") from exc
            raise ServiceUnavailable(DEPENDENCY) from exc
        except _InternationalRecipient as exc:
            raise ValidationFailed("recipient refused") from exc
        except (smtplib.SMTPException, OSError) as exc:  # OSError: socket, TLS, TimeoutError
            raise ServiceUnavailable(DEPENDENCY) from exc

    def _build(self, message: MailMessage) -> EmailMessage:
        # The policy refuses CR/LF in headers too, but only with a generic message and not the
        # other line breaks; checking here makes the refusal explicit and complete.
        _check_recipient(message.to)
        _check_single_line(message.subject, "subject")
        mail = EmailMessage(policy=_POLICY)
        mail["From"] = self._sender
        mail["To"] = message.to
        mail["Subject"] = message.subject
        mail["Date"] = format_datetime(datetime.now(UTC))
        # The sender's domain, not make_msgid's default socket.getfqdn(): that one may do a DNS
        # lookup, and ids under the sending domain are what spam filters expect.
        mail["Message-ID"] = make_msgid(domain=self._sender.domain)
        # RFC 3834: vacation responders and ticket systems must not answer an automatic mail.
        mail["Auto-Submitted"] = "auto-generated"
        mail.set_content(message.text, charset="utf-8")
        return mail

    def _deliver(self, mail: EmailMessage, recipient: str) -> None:
        """Runs in a worker thread: the whole SMTP conversation, from connect to QUIT."""
        s = self._server
        client: smtplib.SMTP
        if s.implicit_tls:
            client = smtplib.SMTP_SSL(
                s.host, s.port, timeout=self._timeout, context=self._ssl_context
            )
        else:
            client = smtplib.SMTP(s.host, s.port, timeout=self._timeout)
        try:
            client.ehlo()
            if not s.implicit_tls and client.has_extn("starttls"):
                # Certificate and host name are verified: a server that offers TLS with a bad
                # certificate fails the send rather than silently falling back to plain text.
                client.starttls(context=self._ssl_context)
                client.ehlo()  # the capabilities before TLS no longer count (RFC 3207)
            tls = s.implicit_tls or client.has_extn("starttls")
            if s.user is not None:
                if not tls and not _is_loopback(s.host):
                    # Someone in the middle can strip the STARTTLS offer: never hand them the
                    # password in clear. A relay on this machine is the one exception.
                    raise smtplib.SMTPNotSupportedError("server offers no TLS for the login")
                client.login(s.user, s.password)
            if not recipient.isascii() and not client.has_extn("smtputf8"):
                # smtplib would raise SMTPNotSupportedError, indistinguishable from a
                # misconfiguration; this server simply cannot deliver to that address.
                raise _InternationalRecipient(recipient)
            # Explicit envelope: smtplib would otherwise derive it from the headers.
            client.send_message(mail, from_addr=self._sender.addr_spec, to_addrs=[recipient])
        except BaseException:
            client.close()
            raise
        # Once the server has accepted the message, a failing QUIT must not report a failure:
        # the caller would retry and the recipient would get the mail twice.
        with contextlib.suppress(smtplib.SMTPException, OSError):
            client.quit()
        client.close()


class _InternationalRecipient(Exception):
    """A non-ASCII address for a server without SMTPUTF8."""


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
