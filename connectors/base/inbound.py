"""The inbound source contract: verify a delivery's raw bytes, then parse it into events.

A source module exposes `SOURCE = InboundSource(...)`. The web layer is the same for all of them:
size and content-type checks, `verify` (guard clauses over the raw body, before any parsing),
`parse`, then the store. Vendors get a 202 for every verified delivery, with what we could not use
counted as ignored or quarantined.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from engine.errors import EngineError
from engine.model import BehaviorEvent

MiB = 1024 * 1024


class SignatureError(EngineError):
    """Bad or missing signature or credentials, or a timestamp outside the replay window."""

    code = "bad_signature"
    http_status = 401


class BadPayload(EngineError):
    """The body cannot be parsed at all."""

    code = "bad_payload"
    http_status = 400


@dataclass(frozen=True)
class Delivery:
    """One HTTP delivery as received: headers (lower-cased names), raw body, query, arrival time."""

    source: str
    headers: Mapping[str, str]
    body: bytes
    now: datetime
    query: Mapping[str, str] = field(default_factory=dict)
    url: str = ""
    method: str = "POST"
    seen: Callable[[str], bool] = lambda key: False
    """Whether a one-time value (a Mailgun token, say) was already used by an accepted delivery."""
    config: Mapping[str, str] = field(default_factory=dict)
    """Source settings beyond the secret, e.g. {"salesforce_org_id": "00D..."}."""


@dataclass(frozen=True)
class Unusable:
    """Part of a verified delivery that is kept for inspection: why, and the item itself."""

    reason: str
    item: object


@dataclass
class Parsed:
    events: list[BehaviorEvent] = field(default_factory=list)
    ignored: int = 0
    """Items of a kind we do not map (counted, not kept)."""
    unusable: list[Unusable] = field(default_factory=list)
    """Items we map but cannot use (no email, bad time...): quarantined in full."""
    keep: bytes | None = None
    """What to keep if part of the delivery is quarantined; None keeps the raw body. Email sources
    keep the message without its attachments (attachments are never stored)."""
    once: list[str] = field(default_factory=list)
    """One-time values to remember, written atomically with the accept (a failed attempt never
    burns a token that the vendor's retry will carry again)."""


@dataclass(frozen=True)
class Answer:
    """What the web answered, for sources whose vendor expects a particular reply."""

    accepted: int
    duplicates: int
    ignored: int
    quarantined: int
    events: list[str]

    def to_dict(self) -> dict[str, object]:
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "ignored": self.ignored,
            "quarantined": self.quarantined,
            "events": self.events,
        }


Verifier = Callable[[Delivery, str | None], None]
Parser = Callable[[Delivery], Parsed]
Responder = Callable[[Answer], tuple[int, str, str]]
"""Answer -> (HTTP status, body, content type), for vendors that need a specific reply."""


@dataclass(frozen=True)
class InboundSource:
    name: str
    verify: Verifier
    """Raises SignatureError; receives the source's secret (None when unset)."""
    parse: Parser
    content_types: tuple[str, ...] = ("application/json",)
    max_bytes: int = MiB
    secret_env: str = ""
    respond: Responder | None = None
    """None: the JSON 202 with counts."""

    @property
    def env_var(self) -> str:
        return self.secret_env or f"{self.name.upper()}_WEBHOOK_SECRET"
