"""The domain's values: events, contact state, decisions and the changes they cause.

Plain frozen dataclasses, validated on construction, with to_dict/from_dict so that anything that
crosses Redis or a queue is JSON. No I/O and no clock reads here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from engine.errors import InvalidEvent

DEFAULT_STAGES: tuple[str, ...] = (
    "subscriber",
    "lead",
    "marketing_qualified_lead",
    "sales_qualified_lead",
    "opportunity",
    "customer",
    "evangelist",
)
DEFAULT_STATUSES: tuple[str, ...] = (
    "new",
    "attempted_to_contact",
    "connected",
    "open_deal",
    "unqualified",
    "bad_timing",
    "future_opportunity",
)
STATUS_STAGE = "sales_qualified_lead"
"""The only stage at which a lead status may change (DESIGN §3, invariant 2)."""

STANDARD_EVENT_TYPES: tuple[str, ...] = (
    "form_submitted",
    "content_downloaded",
    "page_viewed",
    "webinar_attended",
    "email_replied",
    "meeting_booked",
    "meeting_canceled",
    "meeting_rescheduled",
    "call_logged",
    "email_sent",
    "deal_created",
    "deal_stage_changed",
    "deal_won",
    "deal_lost",
    "crm_stage_changed",
    "crm_status_changed",
)

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_EVENT_TYPE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MAX_EVENT_ID = 256
CLAIMED_OCCURRED_AT = "claimed_occurred_at"
"""Property keeping the time an event claimed when it was dated in the future (see not_after)."""
_REQUIRED = ("id", "type", "email", "occurred_at")


def normalize_email(raw: object) -> str:
    """The contact identity: trimmed and lower-cased. Raises InvalidEvent when it is no address."""
    if not isinstance(raw, str) or not _EMAIL.match(raw.strip()):
        raise InvalidEvent(f"email must be an address like ann@example.com, got {raw!r}")
    return raw.strip().lower()


def parse_time(raw: object, what: str = "occurred_at") -> datetime:
    """An ISO 8601 time that names its zone (…Z or …+02:00)."""
    if isinstance(raw, datetime):
        value = raw
    elif isinstance(raw, str):
        try:
            value = datetime.fromisoformat(raw.strip())
        except ValueError:
            raise InvalidEvent(f"{what} must be ISO 8601 with a zone, got {raw!r}") from None
    else:
        raise InvalidEvent(f"{what} must be an ISO 8601 string, got {raw!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidEvent(
            f"{what} must name its time zone (e.g. 2026-11-26T10:00:00Z), got {raw!r}"
        )
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise InvalidEvent(f"{what} is out of range: {raw!r}") from None
    return value


def format_time(value: datetime) -> str:
    """UTC, ISO 8601 with a Z: the one way times are written out."""
    text = value.astimezone(UTC).isoformat()
    return text.replace("+00:00", "Z")


@dataclass(frozen=True)
class Vocabulary:
    """The ordered stages and the statuses in force (rules.yaml may redefine both)."""

    stages: tuple[str, ...] = DEFAULT_STAGES
    statuses: tuple[str, ...] = DEFAULT_STATUSES

    def rank(self, stage: str | None) -> int:
        """Position in the funnel; a contact with no stage yet ranks before the first stage."""
        return -1 if stage is None else self.stages.index(stage)

    @property
    def initial_status(self) -> str:
        return self.statuses[0]


@dataclass(frozen=True)
class BehaviorEvent:
    """A normalized behaviour event (DESIGN §4). `id` is the idempotency key.

    An event from a CRM webhook may know only the CRM's record id (`crm`, `crm_id`): it is accepted
    with an empty email and resolved to one in the worker, never in the web process.
    """

    id: str
    type: str
    email: str
    occurred_at: datetime
    source: str = "standard"
    properties: Mapping[str, Any] = field(default_factory=dict)
    crm: str | None = None
    crm_id: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id.strip() or len(self.id) > MAX_EVENT_ID:
            raise InvalidEvent(
                f"id must be a non-empty string of at most {MAX_EVENT_ID} characters"
            )
        if not isinstance(self.type, str) or not _EVENT_TYPE.match(self.type):
            raise InvalidEvent(
                f"type must be a snake_case name like form_submitted, got {self.type!r}"
            )
        if not isinstance(self.source, str) or not self.source:
            raise InvalidEvent("source must be a non-empty string")
        if not isinstance(self.properties, Mapping):
            raise InvalidEvent("properties must be an object")
        if (self.crm is None) != (self.crm_id is None):
            raise InvalidEvent("crm and crm_id go together")
        if self.crm_id is not None and (not isinstance(self.crm_id, str) or not self.crm_id):
            raise InvalidEvent("crm_id must be a non-empty string")
        if not self.email and self.crm_id:
            object.__setattr__(self, "email", "")  # resolved by the worker
        else:
            object.__setattr__(self, "email", normalize_email(self.email))
        object.__setattr__(self, "occurred_at", parse_time(self.occurred_at))

    @classmethod
    def from_dict(cls, data: object) -> BehaviorEvent:
        if not isinstance(data, Mapping):
            raise InvalidEvent("an event must be a JSON object")
        required = ("id", "type", "occurred_at") if data.get("crm_id") else _REQUIRED
        missing = [k for k in required if data.get(k) in (None, "")]
        if missing:
            raise InvalidEvent(f"event is missing {', '.join(missing)}")
        unknown = set(data) - {*_REQUIRED, "source", "properties", "crm", "crm_id"}
        if unknown:
            raise InvalidEvent(f"unknown event field(s): {', '.join(sorted(unknown))}")
        return cls(
            id=data["id"],
            type=data["type"],
            email=data["email"],
            occurred_at=data["occurred_at"],
            source=data.get("source") or "standard",
            properties=data.get("properties") or {},
            crm=data.get("crm"),
            crm_id=data.get("crm_id"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "email": self.email,
            "occurred_at": format_time(self.occurred_at),
            "source": self.source,
            "properties": dict(self.properties),
            **({"crm": self.crm, "crm_id": self.crm_id} if self.crm_id else {}),
        }

    def not_after(self, limit: datetime) -> BehaviorEvent:
        """This event, dated `limit` when it claims a later time: a sender whose clock runs ahead
        must not date a contact's history in the future (a status change dated years ahead would
        make every real event after it look stale). The claimed time stays in the properties."""
        if self.occurred_at <= limit:
            return self
        claimed = {CLAIMED_OCCURRED_AT: format_time(self.occurred_at)}
        return replace(self, occurred_at=limit, properties={**self.properties, **claimed})

    @property
    def resolved(self) -> bool:
        return bool(self.email)


@dataclass(frozen=True)
class ContactState:
    """What the engine holds about one contact between events."""

    email: str
    stage: str | None = None
    status: str | None = None
    counters: Mapping[str, int] = field(default_factory=dict)
    status_changed_at: datetime | None = None
    """occurred_at of the event that made the last status change (stale-event guard)."""
    crm_ids: Mapping[str, str] = field(default_factory=dict)
    version: int = 0
    """Bumped by every applied change; the sync records which version each CRM has."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "email": self.email,
            "stage": self.stage,
            "status": self.status,
            "counters": dict(self.counters),
            "status_changed_at": (
                format_time(self.status_changed_at) if self.status_changed_at else None
            ),
            "crm_ids": dict(self.crm_ids),
            "version": self.version,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ContactState:
        changed = data.get("status_changed_at")
        return cls(
            email=data["email"],
            stage=data.get("stage"),
            status=data.get("status"),
            counters={k: int(v) for k, v in (data.get("counters") or {}).items()},
            status_changed_at=parse_time(changed, "status_changed_at") if changed else None,
            crm_ids=dict(data.get("crm_ids") or {}),
            version=int(data.get("version") or 0),
        )

    def evolve(self, **changes: Any) -> ContactState:
        return replace(self, **changes)


# --- What rules decide -------------------------------------------------------------------------


@dataclass(frozen=True)
class Promote:
    stage: str
    kind: Literal["promote"] = "promote"


@dataclass(frozen=True)
class SetStatus:
    status: str
    kind: Literal["set_status"] = "set_status"


@dataclass(frozen=True)
class Increment:
    counter: str
    by: int = 1
    kind: Literal["increment"] = "increment"


@dataclass(frozen=True)
class Reset:
    counter: str
    kind: Literal["reset"] = "reset"


@dataclass(frozen=True)
class Schedule:
    event: str
    after: timedelta
    kind: Literal["schedule"] = "schedule"


Action = Promote | SetStatus | Increment | Reset | Schedule


@dataclass(frozen=True)
class Decision:
    """One action of one rule that fired, before the guardrails judge it."""

    rule: str
    action: Action


Outcome = Literal["applied", "refused", "noop"]


@dataclass(frozen=True)
class Change:
    """One recorded change (or refusal) to a contact field, with the rule that asked for it."""

    rule: str
    field: str
    from_: Any
    to: Any
    outcome: Outcome
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "field": self.field,
            "from": self.from_,
            "to": self.to,
            "outcome": self.outcome,
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Change:
        return cls(
            rule=data["rule"],
            field=data["field"],
            from_=data.get("from"),
            to=data.get("to"),
            outcome=data["outcome"],
            reason=data.get("reason"),
        )


@dataclass(frozen=True)
class ScheduledEvent:
    """A delayed behaviour event asked for by a `schedule:` action; it occurs when it is due."""

    event: BehaviorEvent
    rule: str

    @property
    def due_at(self) -> datetime:
        return self.event.occurred_at
