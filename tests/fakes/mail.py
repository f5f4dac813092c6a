"""A mailer that keeps what it is asked to send, for use-case tests."""

from __future__ import annotations

import re

from tkcloud_application.ports.identity import MailMessage
from tkcloud_domain.errors import ServiceUnavailable

# Up to the first whitespace; trailing sentence punctuation and closing brackets are not part of
# the link ("Sign in: https://…/t/abc." must give the URL without the dot).
_LINK = re.compile(r"https?://\S+")
_TRAILING = ".,;:!?)]}>'\""


class FakeMailer:
    """Records every message in `sent`, oldest first. Set `fail` to make `send` raise
    ServiceUnavailable("mail") as the SMTP adapter does when the server is down (nothing is
    recorded then). Like the SMTP adapter, it refuses a subject or recipient with a line break,
    so a use case that would inject headers fails here too."""

    def __init__(self, *, fail: bool = False) -> None:
        self.sent: list[MailMessage] = []
        self.fail = fail

    async def send(self, message: MailMessage) -> None:
        for what, value in (("recipient", message.to), ("subject", message.subject)):
            if "\r" in value or "\n" in value:
                raise ValueError(f"{what} must not contain line breaks or control characters")
        if self.fail:
            raise ServiceUnavailable("mail")
        self.sent.append(message)

    def sent_to(self, address: str) -> list[MailMessage]:
        return [m for m in self.sent if m.to == address]


def first_link(text: str) -> str:
    """The first http(s) URL in a mail's text; fails the test when there is none."""
    match = _LINK.search(text)
    if match is None:
        raise AssertionError(f"no link in the mail text: {text!r}")
    return match.group(0).rstrip(_TRAILING)
