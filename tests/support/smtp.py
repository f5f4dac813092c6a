"""A real SMTP server for tests: aiosmtpd on 127.0.0.1, in a thread of its own.

aiosmtpd's threaded controller runs its own event loop, so the server keeps answering while a
test's loop awaits the mailer (whose smtplib conversation runs in a worker thread as well).

    with SmtpTestServer(credentials=("mailer", "s3cret")) as server:
        await SmtpMailer(server.url("mailer", "s3cret"), "App <app@example.com>").send(...)
        assert server.received[0].message["Subject"] == ...
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
import threading
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

HOST = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage  # parsed with the default policy: get_content() decodes the body
    raw: bytes  # as it came over the wire, CRLF line ends (after the DATA dot-unstuffing)
    login: str | None  # the AUTH user, None without AUTH
    tls: bool  # whether the conversation ran over TLS (STARTTLS or implicit)


class _Handler:
    def __init__(self, refuse: dict[str, str]) -> None:
        self.refuse = refuse
        self.received: list[ReceivedMail] = []
        self._lock = threading.Lock()

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        # CRLF is the wire's line ending; a mail client converts to the local one before
        # decoding, else a quoted-printable body would decode with "\r\n" line ends.
        message = BytesParser(policy=policy.default).parsebytes(raw.replace(b"\r\n", b"\n"))
        assert isinstance(message, EmailMessage)
        auth = session.auth_data
        transport = server.transport
        mail = ReceivedMail(
            mail_from=envelope.mail_from or "",
            rcpt_tos=list(envelope.rcpt_tos),
            message=message,
            raw=raw,
            login=auth.login.decode() if isinstance(auth, LoginPassword) else None,
            # session.ssl is only set after STARTTLS; the transport knows about smtps too.
            tls=transport is not None and transport.get_extra_info("ssl_object") is not None,
        )
        with self._lock:  # read from the test's thread while the server thread appends
            self.received.append(mail)
        return "250 OK"


class _FreePortController(Controller):
    """Binds port 0 and learns the port the OS chose: no probe-then-bind race with the other
    runs sharing the machine. (aiosmtpd's own readiness probe would connect to port 0.)"""

    def _trigger_server(self) -> None:
        assert isinstance(self.server, asyncio.Server)
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]


class SmtpTestServer:
    """Start with `with` (or start()/stop()); messages land in `received`.

    credentials: require AUTH (PLAIN or LOGIN, allowed without TLS) with this user and password.
    refuse: RCPT TO replies by address, e.g. {"gone@example.com": "550 5.1.1 No such user"}.
    starttls / implicit_tls: a server TLS context (see `self_signed_tls`) to offer STARTTLS
    with, or to speak TLS from the first byte (smtps).
    """

    def __init__(
        self,
        *,
        credentials: tuple[str, str] | None = None,
        refuse: dict[str, str] | None = None,
        starttls: ssl.SSLContext | None = None,
        implicit_tls: ssl.SSLContext | None = None,
        smtputf8: bool = True,
    ) -> None:
        self._credentials = credentials
        self._handler = _Handler(refuse or {})
        self._implicit_tls = implicit_tls is not None
        kwargs: dict[str, Any] = {
            "enable_SMTPUTF8": smtputf8,
            "auth_require_tls": False,
            "auth_required": credentials is not None,
            # Without an authenticator aiosmtpd refuses every AUTH; an open relay then simply
            # does not advertise it, like many development relays.
            "authenticator": self._authenticate if credentials is not None else None,
        }
        if starttls is not None:
            kwargs["tls_context"] = starttls
        self._controller = _FreePortController(
            self._handler, hostname=HOST, port=0, ssl_context=implicit_tls, **kwargs
        )

    @property
    def port(self) -> int:
        return int(self._controller.port)

    @property
    def received(self) -> list[ReceivedMail]:
        with self._handler._lock:
            return list(self._handler.received)

    def url(self, user: str | None = None, password: str | None = None) -> str:
        scheme = "smtps" if self._implicit_tls else "smtp"
        userinfo = ""
        if user is not None:
            userinfo = quote(user, safe="")
            if password is not None:
                userinfo += ":" + quote(password, safe="")
            userinfo += "@"
        return f"{scheme}://{userinfo}{HOST}:{self.port}"

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> SmtpTestServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        assert self._credentials is not None
        user, password = self._credentials
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == user.encode()
            and auth_data.password == password.encode()
        )
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


@dataclass(frozen=True, slots=True)
class SelfSignedTls:
    server: ssl.SSLContext  # for SmtpTestServer(starttls=...) or (implicit_tls=...)
    client: ssl.SSLContext  # trusts only the test certificate, verifies the host name


def self_signed_tls(directory: Path) -> SelfSignedTls:
    """A throwaway certificate for 127.0.0.1 and localhost (the files go to `directory`, since
    ssl only loads a certificate chain from files)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tkcloud test SMTP")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_file = directory / "smtp-cert.pem"
    key_file = directory / "smtp-key.pem"
    cert_file.write_bytes(cert_pem)
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cadata=cert_pem.decode())
    return SelfSignedTls(server=server, client=client)
