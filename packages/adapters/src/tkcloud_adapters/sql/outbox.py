"""The development mailer: mails are written to the `mail_outbox` table instead of being sent,
and operators read them back (`tkcloud mail outbox`)."""

from __future__ import annotations

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tkcloud_adapters.sql.errors import database_errors
from tkcloud_adapters.sql.schema import mail_outbox
from tkcloud_application.ports.identity import MailMessage, SentMail
from tkcloud_application.ports.system import Clock, IdGenerator
from tkcloud_domain.errors import ServiceUnavailable

MAIL_PREFIX = "mail_"


class SqlOutbox:
    """Implements `Mailer` and `Outbox`. Each mail is written in a transaction of its own, so it
    is kept whether or not the use case that sent it commits."""

    def __init__(self, engine: AsyncEngine, ids: IdGenerator, clock: Clock) -> None:
        self._engine = engine
        self._ids = ids
        self._clock = clock

    async def send(self, message: MailMessage) -> None:
        statement = insert(mail_outbox).values(
            id=self._ids.new_id(MAIL_PREFIX),
            kind=message.kind,
            recipient=message.to,
            subject=message.subject,
            body=message.text,
            created_at=self._clock.now(),
        )
        try:
            with database_errors():
                async with self._engine.begin() as conn:
                    await conn.execute(statement)
        except ServiceUnavailable as exc:
            # For the caller the mail could not be sent, whatever the outbox is stored in.
            raise ServiceUnavailable("mail") from exc

    async def recent(self, limit: int = 20, to: str | None = None) -> list[SentMail]:
        c = mail_outbox.c
        query = select(mail_outbox).order_by(c.created_at.desc(), c.id.desc()).limit(limit)
        if to is not None:
            query = query.where(c.recipient == to)
        with database_errors():
            async with self._engine.connect() as conn:
                rows = (await conn.execute(query)).all()
        return [
            SentMail(
                id=row.id,
                message=MailMessage(
                    to=row.recipient, subject=row.subject, text=row.body, kind=row.kind
                ),
                created_at=row.created_at,
            )
            for row in rows
        ]
