"""The contract every CRM target implements: push the desired state of a batch of contacts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from engine.model import ContactState


@dataclass(frozen=True)
class PushResult:
    """What became of one contact's push."""

    email: str
    ok: bool
    retryable: bool = False
    error: str | None = None
    crm_id: str | None = None


class CrmClient(Protocol):
    name: str
    batch_size: int

    def push(self, contacts: Sequence[ContactState]) -> list[PushResult]:
        """Write each contact's current stage and status; one result per contact."""
        ...
