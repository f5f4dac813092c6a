"""In-memory fake of the billing repository (inside `FakeTenancyUnitOfWork`, tests/fakes/
storage.py).

As in SQL, an org's plan lives with the org (`FakeDatabase.orgs`) and the rest of its billing
state beside it (`FakeDatabase.billing`); saving writes both. Claims behave as the SQL
`INSERT ... ON CONFLICT DO NOTHING` does: the unit of work that claims a key first holds it until it
commits or ends, and a concurrent second claim waits, then finds the key taken (the first
committed) or free (the first rolled back). Passes the contract tests of
tests/integration/test_billing_contract.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar, overload

from tkcloud_domain.billing import BillingState, PlanChange
from tkcloud_domain.tenancy import Org

if TYPE_CHECKING:  # storage.py imports this module to build its unit of work
    from tests.fakes.storage import LockRow, Staged

K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class StoredStripeEvent:
    type: str
    received_at: datetime


@dataclass(frozen=True, slots=True)
class StoredPlanChange:
    id: int  # the order changes were recorded in: the tie-break of equal times
    change: PlanChange


class FakeBillingRepository:
    def __init__(
        self,
        *,
        orgs: Staged[str, Org],
        billing: Staged[str, BillingState],
        stripe_events: Staged[str, StoredStripeEvent],
        plan_changes: Staged[int, StoredPlanChange],
        notifications_sent: Staged[tuple[str, str, str], bool],
        plan_change_ids: Iterator[int],
        lock_row: LockRow,
    ) -> None:
        self._orgs = orgs
        self._billing = billing
        self._events = stripe_events
        self._changes = plan_changes
        self._notifications = notifications_sent
        self._change_ids = plan_change_ids
        self._lock_row = lock_row

    async def state(self, org_id: str) -> BillingState | None:
        org = self._orgs.get(org_id)
        return None if org is None else self._state_of(org)

    async def by_customer(self, customer_id: str) -> BillingState | None:
        for org_id, state in self._billing.items():
            org = self._orgs.get(org_id)
            if org is not None and state.customer_id == customer_id:
                return self._state_of(org)
        return None

    async def save(self, state: BillingState) -> None:
        org = self._orgs.get(state.org_id)
        if org is None:
            return  # as an UPDATE of no row
        if state.customer_id is not None and any(
            other_id != state.org_id and other.customer_id == state.customer_id
            for other_id, other in self._billing.items()
        ):
            # The SQL unique index refuses it with an IntegrityError: a bug, not a conflict.
            raise ValueError(f"customer {state.customer_id!r} belongs to another org")
        self._orgs.put(org.id, dataclasses.replace(org, plan=state.plan))
        self._billing.put(
            org.id,
            dataclasses.replace(
                state,
                current_period_end=_utc(state.current_period_end),
                pending_at=_utc(state.pending_at),
                grace_until=_utc(state.grace_until),
                as_of=_utc(state.as_of),
            ),
        )

    async def record_change(self, change: PlanChange) -> None:
        if self._orgs.get(change.org_id) is None:
            raise ValueError(f"org {change.org_id!r} does not exist")
        change_id = next(self._change_ids)
        stored = dataclasses.replace(change, at=_utc(change.at))
        self._changes.put(change_id, StoredPlanChange(change_id, stored))

    async def changes(self, org_id: str) -> list[PlanChange]:
        found = [s for s in self._changes.rows() if s.change.org_id == org_id]
        found.sort(key=lambda s: (s.change.at, s.id), reverse=True)
        return [s.change for s in found]

    async def claim_event(self, event_id: str, event_type: str, at: datetime) -> bool:
        return await self._claim(
            self._events,
            event_id,
            StoredStripeEvent(event_type, _utc(at)),
            ("stripe_events", event_id),
        )

    async def due(self, now: datetime) -> list[BillingState]:
        found: list[BillingState] = []
        for org in sorted(self._orgs.rows(), key=lambda o: (o.created_at, o.id)):
            state = self._state_of(org)
            if (state.pending_at is not None and state.pending_at <= now) or (
                state.grace_until is not None and state.grace_until <= now
            ):
                found.append(state)
        return found

    async def claim_notification(self, org_id: str, kind: str, period: str) -> bool:
        if self._orgs.get(org_id) is None:
            raise ValueError(f"org {org_id!r} does not exist")
        key = (org_id, kind, period)
        return await self._claim(self._notifications, key, True, ("notifications_sent", *key))

    async def _claim(self, table: Staged[K, V], key: K, value: V, row: tuple[str, ...]) -> bool:
        if table.get(key) is not None:
            return False  # committed before, or claimed earlier in this unit of work
        # Another unit of work may hold the key uncommitted: wait for it to commit or end.
        await self._lock_row(row)
        if table.get(key) is not None:
            return False
        table.put(key, value)
        return True

    def _state_of(self, org: Org) -> BillingState:
        stored = self._billing.get(org.id)
        if stored is None:
            return BillingState(org_id=org.id, plan=org.plan)
        return dataclasses.replace(stored, plan=org.plan)


@overload
def _utc(value: datetime) -> datetime: ...
@overload
def _utc(value: None) -> None: ...
def _utc(value: datetime | None) -> datetime | None:
    """As the SQL column gives it back: the same instant in UTC; a naive time is refused."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: pass a timezone-aware datetime")
    return value.astimezone(UTC)
