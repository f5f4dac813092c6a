"""SmtpMailer against a real SMTP server (aiosmtpd on 127.0.0.1), and the FakeMailer beside it.

No Postgres or Redis needed: the server runs in-process, in a thread, on a port of its own.
"""

from __future__ import annotations

import smtplib
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.fakes.mail import FakeMailer, first_link
from tests.support.smtp import SelfSignedTls, SmtpTestServer, self_signed_tls
from tkcloud_adapters.mail import SmtpMailer
from tkcloud_application.ports.identity import Mailer, MailMessage
from tkcloud_domain.errors import ServiceUnavailable, ValidationFailed

SENDER = "Télémétrie Kit <noreply@tk.example>"
LINK = "https://tk.example/auth/magic?token=abc123&next=%2Fdashboard"
TEXT = f"Hallo Jörg,\n\ngrüße aus 東京 — sign in with this link:\n{LINK}.\n\n-- \ntelemetry-kit\n"
# The test server takes AUTH over plain text on purpose (no certificate needed); aiosmtpd warns.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")

MAGIC = MailMessage(
    to="ada@example.com", subject="Your sign-in link — Zürich", text=TEXT, kind="magic_link"
)


def message(**changes: str) -> MailMessage:
    fields = {"to": MAGIC.to, "subject": MAGIC.subject, "text": MAGIC.text, "kind": MAGIC.kind}
    return MailMessage(**(fields | changes))


@pytest.fixture
def server() -> Iterator[SmtpTestServer]:
    with SmtpTestServer() as running:
        yield running


@pytest.fixture
def tls(tmp_path: Path) -> SelfSignedTls:
    return self_signed_tls(tmp_path)


def closed_port() -> int:
    """A port nothing listens on (just released by the OS), for 'server down'."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the message on the wire ---------------------------------------------------------------------


async def test_delivers_a_complete_plain_text_utf8_message(server: SmtpTestServer) -> None:
    mailer: Mailer = SmtpMailer(server.url(), SENDER)
    before = datetime.now(UTC).replace(microsecond=0)

    await mailer.send(MAGIC)

    [mail] = server.received
    assert mail.mail_from == "noreply@tk.example"
    assert mail.rcpt_tos == ["ada@example.com"]
    headers = mail.message
    [sender] = headers["From"].addresses
    assert (sender.display_name, sender.addr_spec) == ("Télémétrie Kit", "noreply@tk.example")
    assert headers["To"] == "ada@example.com"
    assert headers["Subject"] == "Your sign-in link — Zürich"
    sent_at = headers["Date"].datetime
    assert sent_at.tzinfo is not None
    assert before <= sent_at <= datetime.now(UTC) + timedelta(seconds=1)
    assert headers["Message-ID"].startswith("<")
    assert headers["Message-ID"].endswith("@tk.example>")
    assert headers["Auto-Submitted"] == "auto-generated"
    assert headers.get_content_type() == "text/plain"
    assert headers.get_content_charset() == "utf-8"
    assert headers.get_content() == TEXT
    assert first_link(headers.get_content()) == LINK
    # Headers RFC 2047-encoded, body quoted-printable or base64: nothing needs 8BITMIME.
    assert mail.raw.isascii()
    assert "Bcc" not in headers
    assert (mail.login, mail.tls) == (None, False)


async def test_every_message_gets_its_own_message_id(server: SmtpTestServer) -> None:
    mailer = SmtpMailer(server.url(), SENDER)

    await mailer.send(MAGIC)
    await mailer.send(message(to="bob@example.com", text="plain ascii\n", kind="invite"))

    first, second = server.received
    assert first.message["Message-ID"] != second.message["Message-ID"]
    assert second.rcpt_tos == ["bob@example.com"]
    assert second.message.get_content() == "plain ascii\n"


async def test_a_bare_sender_address_is_enough(server: SmtpTestServer) -> None:
    await SmtpMailer(server.url(), "noreply@tk.example").send(MAGIC)

    [mail] = server.received
    assert mail.message["From"] == "noreply@tk.example"
    assert mail.mail_from == "noreply@tk.example"


async def test_international_recipient_goes_out_with_smtputf8(server: SmtpTestServer) -> None:
    await SmtpMailer(server.url(), SENDER).send(message(to="jörg@example.com"))

    [mail] = server.received
    assert mail.rcpt_tos == ["jörg@example.com"]
    assert mail.message.get_content() == TEXT


async def test_international_recipient_without_smtputf8_is_refused() -> None:
    with SmtpTestServer(smtputf8=False) as server:
        with pytest.raises(ValidationFailed):
            await SmtpMailer(server.url(), SENDER).send(message(to="jörg@example.com"))
        assert server.received == []


# --- authentication ------------------------------------------------------------------------------

USER = "mailer@tk.example"
PASSWORD = "p@ss:w/rd #1?%"  # every character that must be URL-encoded in smtp_url


async def test_logs_in_with_the_url_encoded_credentials() -> None:
    with SmtpTestServer(credentials=(USER, PASSWORD)) as server:
        assert "%40" in server.url(USER, PASSWORD)  # the helper really encodes them

        await SmtpMailer(server.url(USER, PASSWORD), SENDER).send(MAGIC)

        [mail] = server.received
        assert mail.login == USER


async def test_wrong_password_is_service_unavailable() -> None:
    with SmtpTestServer(credentials=(USER, PASSWORD)) as server:
        with pytest.raises(ServiceUnavailable) as caught:
            await SmtpMailer(server.url(USER, "wrong"), SENDER).send(MAGIC)

        assert caught.value.dependency == "mail"
        assert isinstance(caught.value.__cause__, smtplib.SMTPAuthenticationError)
        assert server.received == []


async def test_no_credentials_for_a_server_requiring_auth_is_service_unavailable() -> None:
    with SmtpTestServer(credentials=(USER, PASSWORD)) as server:
        with pytest.raises(ServiceUnavailable):
            await SmtpMailer(server.url(), SENDER).send(MAGIC)
        assert server.received == []


# --- TLS -----------------------------------------------------------------------------------------


async def test_upgrades_with_starttls_when_offered(tls: SelfSignedTls) -> None:
    with SmtpTestServer(credentials=(USER, PASSWORD), starttls=tls.server) as server:
        mailer = SmtpMailer(server.url(USER, PASSWORD), SENDER, ssl_context=tls.client)

        await mailer.send(MAGIC)

        [mail] = server.received
        assert (mail.tls, mail.login) == (True, USER)


async def test_an_untrusted_starttls_certificate_never_falls_back_to_plain_text(
    tls: SelfSignedTls,
) -> None:
    with SmtpTestServer(credentials=(USER, PASSWORD), starttls=tls.server) as server:
        # The default context trusts the system's CAs, not the test certificate.
        with pytest.raises(ServiceUnavailable):
            await SmtpMailer(server.url(USER, PASSWORD), SENDER).send(MAGIC)
        assert server.received == []


async def test_smtps_speaks_tls_from_the_first_byte(tls: SelfSignedTls) -> None:
    with SmtpTestServer(credentials=(USER, PASSWORD), implicit_tls=tls.server) as server:
        assert server.url().startswith("smtps://")

        await SmtpMailer(server.url(USER, PASSWORD), SENDER, ssl_context=tls.client).send(MAGIC)

        [mail] = server.received
        assert (mail.tls, mail.login) == (True, USER)


# --- an unreachable or refusing server -----------------------------------------------------------


async def test_server_down_is_service_unavailable_at_once() -> None:
    mailer = SmtpMailer(f"smtp://127.0.0.1:{closed_port()}", SENDER)
    started = time.monotonic()

    with pytest.raises(ServiceUnavailable) as caught:
        await mailer.send(MAGIC)

    assert time.monotonic() - started < 2
    assert isinstance(caught.value.__cause__, ConnectionRefusedError)
    assert caught.value.retry_after >= 1


async def test_a_server_that_never_greets_times_out() -> None:
    # The OS completes the TCP handshake from the listen backlog; nobody ever answers.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        mailer = SmtpMailer(f"smtp://127.0.0.1:{port}", SENDER, timeout=0.3)
        started = time.monotonic()

        with pytest.raises(ServiceUnavailable) as caught:
            await mailer.send(MAGIC)

    assert time.monotonic() - started < 3
    # smtplib reports a timeout while reading the greeting as a disconnection.
    assert "timed out" in str(caught.value.__cause__)


async def test_a_permanently_refused_recipient_is_a_validation_failure() -> None:
    with SmtpTestServer(refuse={"gone@example.com": "550 5.1.1 No such user"}) as server:
        with pytest.raises(ValidationFailed, match="recipient refused") as caught:
            await SmtpMailer(server.url(), SENDER).send(message(to="gone@example.com"))

        assert isinstance(caught.value.__cause__, smtplib.SMTPRecipientsRefused)
        assert server.received == []


async def test_a_temporarily_refused_recipient_is_service_unavailable() -> None:
    refuse = {"busy@example.com": "450 4.2.1 Mailbox busy, try again later"}
    with SmtpTestServer(refuse=refuse) as server:
        with pytest.raises(ServiceUnavailable):
            await SmtpMailer(server.url(), SENDER).send(message(to="busy@example.com"))
        assert server.received == []


# --- refusals before anything is sent ------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"subject": "Hi\r\nBcc: victim@example.com"},
        {"subject": "Hi\nBcc: victim@example.com"},
        {"subject": "Hi\rBcc: victim@example.com"},
        {"subject": "Hi\u2028Bcc: victim@example.com"},
        {"to": "ada@example.com\r\nBcc: victim@example.com"},
        {"to": "ada@example.com\n"},
        {"to": "ada@example.com, victim@example.com"},
        {"to": "Ada <ada@example.com>"},
        {"to": "ada"},
        {"to": "@example.com"},
        {"to": "ada@"},
        {"to": ""},
    ],
    ids=repr,
)
async def test_header_or_recipient_injection_is_refused(
    server: SmtpTestServer, changes: dict[str, str]
) -> None:
    with pytest.raises(ValueError, match=r"recipient|subject"):
        await SmtpMailer(server.url(), SENDER).send(message(**changes))
    assert server.received == []


@pytest.mark.parametrize(
    "url",
    [
        "",
        "mail.example.com:587",
        "http://secret:secret@mail.example.com",
        "smtp://",
        "smtp://secret:secret@",
        "smtp://mail.example.com:secret",
        "smtp://mail.example.com:70000",
        "smtp://mail.example.com:0",
        "smtp://user:se/cret@mail.example.com:587",  # unencoded '/' in the password
        "smtp://user:se#cret@mail.example.com:587",
        "smtp://user:secret@mail.example.com:587?starttls=always",
        "smtp://:secret@mail.example.com:587",
        "smtp://user:s%C3%A9cret@mail.example.com:587",  # non-ASCII password
        "smtp://[::1:587",
    ],
)
def test_a_malformed_url_is_refused_without_echoing_the_password(url: str) -> None:
    with pytest.raises(ValueError, match="smtp_url") as caught:
        SmtpMailer(url, SENDER)
    assert "secret" not in str(caught.value)
    assert caught.value.__cause__ is None


@pytest.mark.parametrize(
    "sender", ["", "telemetry-kit", "Name <>", "Name <noreply@tk.example>\r\nBcc: x@example.com"]
)
def test_a_malformed_sender_is_refused(sender: str) -> None:
    with pytest.raises(ValueError, match="mail_from"):
        SmtpMailer("smtp://mail.example.com", sender)


def test_default_ports_and_a_repr_without_the_password() -> None:
    plain = SmtpMailer("smtp://user:secret@Mail.Example.com", SENDER)
    implicit = SmtpMailer("SMTPS://mail.example.com", SENDER)

    assert "smtp://user@mail.example.com:587" in repr(plain)
    assert "secret" not in repr(plain)
    assert "smtps://mail.example.com:465" in repr(implicit)


# --- the fake keeps the same promises ------------------------------------------------------------


async def test_fake_mailer_records_what_it_sends() -> None:
    mailer = FakeMailer()
    other = message(to="bob@example.com", kind="invite")

    await mailer.send(MAGIC)
    await mailer.send(other)

    assert mailer.sent == [MAGIC, other]
    assert mailer.sent_to("bob@example.com") == [other]


async def test_fake_mailer_fails_like_an_unreachable_server() -> None:
    mailer = FakeMailer(fail=True)

    with pytest.raises(ServiceUnavailable) as caught:
        await mailer.send(MAGIC)

    assert caught.value.dependency == "mail"
    assert mailer.sent == []


@pytest.mark.parametrize(
    "send_with",
    [
        lambda server: FakeMailer().send,
        lambda server: SmtpMailer(server.url(), SENDER).send,
    ],
    ids=["fake", "smtp"],
)
async def test_both_mailers_refuse_header_injection(
    server: SmtpTestServer,
    send_with: Callable[[SmtpTestServer], Callable[[MailMessage], Awaitable[None]]],
) -> None:
    send = send_with(server)
    with pytest.raises(ValueError, match="subject"):
        await send(message(subject="Hi\r\nBcc: victim@example.com"))
    with pytest.raises(ValueError, match="recipient"):
        await send(message(to="ada@example.com\nBcc: victim@example.com"))


def test_first_link_drops_trailing_punctuation() -> None:
    assert first_link(TEXT) == LINK
    assert first_link("(see https://tk.example/a?b=1)") == "https://tk.example/a?b=1"
    with pytest.raises(AssertionError):
        first_link("no link here")
