"""The built-in CRM stand-in: records what would be pushed, so a new user sees the whole pipeline
work with no CRM configured. What it holds is shown in the explain view's `sync.sandbox`."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from connectors.base.crm import PushResult
from engine.model import ContactState

Recorder = Callable[[Sequence[ContactState]], None]


class SandboxClient:
    name = "sandbox"
    batch_size = 100

    def __init__(self, record: Recorder):
        self._record = record

    def push(
        self,
        contacts: Sequence[ContactState],
        known_ids: Mapping[str, str],
        profiles: Mapping[str, Mapping[str, str]],
    ) -> list[PushResult]:
        self._record(contacts)
        return [PushResult(c.email, ok=True, crm_id=f"sandbox-{c.email}") for c in contacts]

    def ready_in(self) -> float:
        return 0.0

    def emails_for(self, crm_ids: Sequence[str]) -> dict[str, str]:
        prefix = "sandbox-"
        return {i: i.removeprefix(prefix) for i in crm_ids if i.startswith(prefix)}
