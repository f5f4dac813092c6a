"""Mail an org's owners when its production events reach 80% and 100% of the monthly quota:
each at most once per org and month, however many processes ingest at once."""

from __future__ import annotations

import logging
from collections.abc import Callable

from tkcloud_application.billing.subscriptions import owner_emails
from tkcloud_application.ports.identity import Mailer, MailMessage
from tkcloud_application.ports.tenancy import TenancyUnitOfWork
from tkcloud_domain.errors import DomainError

logger = logging.getLogger("tkcloud.billing")

THRESHOLDS = ((80, "quota_80"), (100, "quota_100"))


class QuotaAlerts:
    def __init__(
        self, *, uow: Callable[[], TenancyUnitOfWork], mailer: Mailer, dashboard_url: str
    ) -> None:
        self._uow = uow
        self._mailer = mailer
        self._dashboard_url = dashboard_url

    def crossed(self, used_before: int, used_after: int, limit: int) -> list[tuple[int, str]]:
        """The thresholds this batch crossed: cheap enough to ask on every batch."""
        return [
            (percent, kind)
            for percent, kind in THRESHOLDS
            if used_before * 100 < limit * percent <= used_after * 100
        ]

    async def notify(
        self, org_id: str, month: str, crossed: list[tuple[int, str]], limit: int
    ) -> None:
        """Claim, then mail. Never raises: ingestion must not fail because a mail could not go
        out (the claim is kept, so the mail is sent at most once)."""
        for percent, kind in crossed:
            try:
                async with self._uow() as uow:
                    if not await uow.billing.claim_notification(org_id, kind, month):
                        continue
                    org = await uow.orgs.get(org_id)
                    owners = await owner_emails(uow, org_id)
                    await uow.commit()
                if org is None:
                    continue
                for owner in owners:
                    await self._mailer.send(self._message(owner, org.name, org_id, percent, limit))
            except DomainError as exc:
                logger.warning("quota mail %s for %s not sent: %s", kind, org_id, exc.message)

    def _message(
        self, to: str, org_name: str, org_id: str, percent: int, limit: int
    ) -> MailMessage:
        if percent >= 100:
            subject = f"{org_name} has used its monthly event quota"
            lead = (
                f"{org_name} has used all {limit:,} events of this month's quota. New events are "
                "refused (the SDKs keep them and retry) until the next month or an upgrade."
            )
        else:
            subject = f"{org_name} has used {percent}% of its monthly event quota"
            lead = f"{org_name} has used {percent}% of this month's {limit:,} events."
        return MailMessage(
            to=to,
            subject=subject,
            text=f"{lead}\n\nUsage and plans: {self._dashboard_url}/orgs/{org_id}/billing\n",
            kind=f"quota_{percent}",
        )
