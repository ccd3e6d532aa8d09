"""The contract every CRM target implements: push the desired state of a batch of contacts, and
tell which contact a CRM record id belongs to."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from engine.model import ContactState

PROFILE_FIELDS = ("first_name", "last_name", "company", "phone")
REQUESTS_PER_PUSH = 2
"""What a push usually costs the rate limit: a read of what the CRM holds, then one write."""


@dataclass(frozen=True)
class PushResult:
    """What became of one contact's push."""

    email: str
    ok: bool
    retryable: bool = False
    error: str | None = None
    """The CRM's own message, for the dead letter or the retry record."""
    crm_id: str | None = None
    """The CRM's record id for the contact (learned, so its webhooks resolve)."""
    seen: str | None = None
    """What the CRM held that made us hold back, e.g. "stage customer set in the CRM"."""


class CrmClient(Protocol):
    name: str
    batch_size: int

    def push(
        self,
        contacts: Sequence[ContactState],
        known_ids: Mapping[str, str],
        profiles: Mapping[str, Mapping[str, str]],
    ) -> list[PushResult]:
        """Write each contact's current stage and status; one result per contact, in order.
        `known_ids` maps emails to record ids already learned; `profiles` maps emails to what the
        events told about the person (PROFILE_FIELDS), for CRMs that need names to create a
        record. May raise RetriableSyncError or FatalSyncError for the whole batch."""
        ...

    def emails_for(self, crm_ids: Sequence[str]) -> dict[str, str]:
        """Record id -> email, for the ids the CRM knows (CRM webhooks carry only ids)."""
        ...

    def ready_in(self) -> float:
        """Seconds until a push could start without waiting on the CRM's rate limit (0: now).
        A push that would fail at once (a daily limit reached) counts as ready."""
        ...
