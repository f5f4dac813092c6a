"""Billing on SQL: the state stored beside each org's plan, handled Stripe events, the plan change
history and notifications sent. The repository works inside a `SqlTenancyUnitOfWork` (its
connection and its transaction).

The claims (an event id, a notification) are one `INSERT ... ON CONFLICT DO NOTHING` each: the
first to insert a key holds it until its transaction ends, a concurrent second one waits on the
unique index (Postgres) or the database write lock (SQLite), then finds the key taken if the first
committed, or takes it if the first rolled back.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Insert, Row, Table, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from tkcloud_adapters.sql.identity import SqlRepository
from tkcloud_adapters.sql.schema import notifications_sent, orgs, plan_changes, stripe_events
from tkcloud_domain.billing import BillingState, PlanChange, SubscriptionStatus
from tkcloud_domain.plans import Plan

_STATE_COLUMNS = (
    orgs.c.id,
    orgs.c.plan,
    orgs.c.stripe_customer_id,
    orgs.c.subscription_id,
    orgs.c.subscription_status,
    orgs.c.current_period_end,
    orgs.c.cancel_at_period_end,
    orgs.c.pending_plan,
    orgs.c.pending_at,
    orgs.c.grace_until,
    orgs.c.billing_as_of,
)


class SqlBillingRepository(SqlRepository):
    """Implements `BillingRepository`."""

    async def state(self, org_id: str) -> BillingState | None:
        # FOR UPDATE (Postgres; SQLite serialises writers anyway): two webhooks or two job runs
        # for one org take turns instead of overwriting each other's changes.
        query = select(*_STATE_COLUMNS).where(orgs.c.id == org_id).with_for_update()
        rows = await self._rows(query)
        return _state(rows[0]) if rows else None

    async def by_customer(self, customer_id: str) -> BillingState | None:
        query = (
            select(*_STATE_COLUMNS)
            .where(orgs.c.stripe_customer_id == customer_id)
            .with_for_update()
        )
        rows = await self._rows(query)
        return _state(rows[0]) if rows else None

    async def save(self, state: BillingState) -> None:
        statement = (
            update(orgs)
            .where(orgs.c.id == state.org_id)
            .values(
                plan=state.plan.value,
                stripe_customer_id=state.customer_id,
                subscription_id=state.subscription_id,
                subscription_status=None if state.status is None else state.status.value,
                current_period_end=state.current_period_end,
                cancel_at_period_end=state.cancel_at_period_end,
                pending_plan=None if state.pending_plan is None else state.pending_plan.value,
                pending_at=state.pending_at,
                grace_until=state.grace_until,
                billing_as_of=state.as_of,
            )
        )
        await self._execute(statement)

    async def record_change(self, change: PlanChange) -> None:
        statement = insert(plan_changes).values(
            org_id=change.org_id,
            from_plan=change.from_plan.value,
            to_plan=change.to_plan.value,
            reason=change.reason,
            actor=change.actor,
            at=change.at,
        )
        await self._execute(statement)

    async def changes(self, org_id: str) -> list[PlanChange]:
        c = plan_changes.c
        # The id breaks ties: of two changes at the same time, the later recorded is newer.
        query = select(plan_changes).where(c.org_id == org_id).order_by(c.at.desc(), c.id.desc())
        return [
            PlanChange(
                org_id=row.org_id,
                from_plan=Plan(row.from_plan),
                to_plan=Plan(row.to_plan),
                reason=row.reason,
                actor=row.actor,
                at=row.at,
            )
            for row in await self._rows(query)
        ]

    async def claim_event(self, event_id: str, event_type: str, at: datetime) -> bool:
        return await self._claim(
            stripe_events, {"id": event_id, "type": event_type, "received_at": at}
        )

    async def due(self, now: datetime) -> list[BillingState]:
        query = (
            select(*_STATE_COLUMNS)
            .where(or_(orgs.c.pending_at <= now, orgs.c.grace_until <= now))
            .order_by(orgs.c.created_at, orgs.c.id)
        )
        return [_state(row) for row in await self._rows(query)]

    async def claim_notification(self, org_id: str, kind: str, period: str) -> bool:
        return await self._claim(
            notifications_sent, {"org_id": org_id, "kind": kind, "period": period}
        )

    async def _claim(self, table: Table, values: dict[str, Any]) -> bool:
        """Insert the row unless its primary key is taken; whether it was inserted."""
        key = [column.name for column in table.primary_key.columns]
        statement: Insert
        if self._conn.dialect.name == "postgresql":
            statement = postgresql.insert(table).on_conflict_do_nothing(index_elements=key)
        else:
            statement = sqlite.insert(table).on_conflict_do_nothing(index_elements=key)
        # RETURNING says what happened on both drivers, where rowcount is driver lore.
        rows = await self._rows(statement.values(values).returning(*table.primary_key.columns))
        return bool(rows)


def _state(row: Row[Any]) -> BillingState:
    return BillingState(
        org_id=row.id,
        plan=Plan(row.plan),
        customer_id=row.stripe_customer_id,
        subscription_id=row.subscription_id,
        status=None
        if row.subscription_status is None
        else SubscriptionStatus(row.subscription_status),
        current_period_end=row.current_period_end,
        cancel_at_period_end=row.cancel_at_period_end,
        pending_plan=None if row.pending_plan is None else Plan(row.pending_plan),
        pending_at=row.pending_at,
        grace_until=row.grace_until,
        as_of=row.billing_as_of,
    )
