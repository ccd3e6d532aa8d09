"""Calendly webhook subscriptions (API v2): invitee.created / invitee.canceled -> meeting events.

Signature (https://developer.calendly.com/api-docs/overview/webhooks/webhook-signatures):
`Calendly-Webhook-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(signing key, "<t>." + raw body)>`.
Calendly publishes no tolerance for `t`; we accept 5 minutes either side of arrival.

A reschedule arrives as two deliveries (https://developer.calendly.com/docs/api-guides/
see-how-webhook-payloads-change-when-invitees-reschedule-events): an `invitee.canceled` with
`rescheduled: true` for the old slot, and an `invitee.created` whose `old_invitee` names the old
invitee, for the new slot. We emit exactly ONE `meeting_rescheduled`, from the `invitee.created`
half (it carries the new start time); the cancel half is counted as ignored.

Calendly documents no delivery id: an event's id hashes the event name, the invitee URI and the
envelope's `created_at`, so a retry is a duplicate while a booking and a cancel of the same invitee
stay distinct.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from connectors.base.inbound import BadPayload, Delivery, InboundSource, Parsed, SignatureError
from connectors.base.payload import (
    as_dict,
    as_list,
    compact,
    iso_time,
    json_object,
    sent_at,
    stripped,
    unusable,
)
from connectors.base.signatures import hmac_sha256, same, within_window
from engine.errors import InvalidEvent
from engine.model import BehaviorEvent

NAME = "calendly"
SIGNATURE_HEADER = "calendly-webhook-signature"
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
log = logging.getLogger(f"connectors.{NAME}")


# --- verification ------------------------------------------------------------------------------


def verify(delivery: Delivery, secret: str | None) -> None:
    if secret is None:
        return  # only reached when ALLOW_UNSIGNED_WEBHOOKS=1
    header = delivery.headers.get(SIGNATURE_HEADER, "")
    if not header:
        raise SignatureError("missing Calendly-Webhook-Signature header")
    timestamp, signatures = _split_header(header)
    within_window(timestamp, delivery.now)
    expected = _digest(secret, timestamp, delivery.body)
    if not any(same(expected, bytes.fromhex(given)) for given in signatures):
        raise SignatureError(
            "Calendly-Webhook-Signature does not match (v1: hex HMAC-SHA256 of t.body)"
        )


def _split_header(header: str) -> tuple[str, list[str]]:
    """`t=<seconds>,v1=<hex>[,v1=<hex>...]` -> the one timestamp and the well-formed v1 values."""
    timestamps: list[str] = []
    signatures: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        value = value.strip()
        if key == "t":
            timestamps.append(value)
        elif key == "v1" and _HEX_SHA256.fullmatch(value):
            signatures.append(value)
    if len(timestamps) != 1 or not _TIMESTAMP.fullmatch(timestamps[0]):
        raise SignatureError("Calendly-Webhook-Signature needs exactly one t=<unix seconds>")
    if not signatures:
        raise SignatureError("Calendly-Webhook-Signature has no v1=<hex HMAC-SHA256>")
    return timestamps[0], signatures


def _digest(secret: str, timestamp: str, body: bytes) -> bytes:
    return hmac_sha256(secret.encode(), timestamp.encode() + b"." + body)


def signature_header(secret: str, body: bytes, now: datetime) -> str:
    """The Calendly-Webhook-Signature value Calendly would send at `now` (tests and demos)."""
    timestamp = str(int(now.timestamp()))
    return f"t={timestamp},v1={_digest(secret, timestamp, body).hex()}"


# --- parsing -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Notice:
    """One verified Calendly delivery: the event name, the envelope's created_at, the payload."""

    kind: str
    created_at: object
    payload: Mapping[str, Any]
    now: datetime


EventParser = Callable[[Notice], list[BehaviorEvent]]


def parse(delivery: Delivery) -> Parsed:
    envelope = json_object(
        delivery.body, "a Calendly webhook envelope", not_json="body is not JSON"
    )
    kind = envelope.get("event")
    if not isinstance(kind, str) or not kind:
        raise BadPayload("not a Calendly webhook: the `event` name is missing")
    parser = EVENT_PARSERS.get(kind)
    if parser is None:
        log.info("calendly.webhook.unsupported_event: %r", kind[:80])
        return Parsed(ignored=1)
    payload = envelope.get("payload")
    if not isinstance(payload, dict):
        return unusable(f"{kind} without a payload object", envelope)
    try:
        events = parser(Notice(kind, envelope.get("created_at"), payload, delivery.now))
    except InvalidEvent as exc:
        return unusable(exc.detail, envelope)
    if not events:
        log.info("calendly.webhook.ignored: %s that is half of a reschedule", kind)
        return Parsed(ignored=1)
    return Parsed(events=events)


def parse_invitee_created(notice: Notice) -> list[BehaviorEvent]:
    """A booking; with `old_invitee` set, the new booking of a reschedule."""
    previous = stripped(notice.payload.get("old_invitee"))
    if previous is None:
        return [_event(notice, "meeting_booked")]
    return [_event(notice, "meeting_rescheduled", previous_invitee=previous)]


def parse_invitee_canceled(notice: Notice) -> list[BehaviorEvent]:
    """A cancellation; with `rescheduled: true`, the old half of a reschedule: nothing, because
    the paired invitee.created (with old_invitee) becomes the one meeting_rescheduled."""
    if notice.payload.get("rescheduled") is True:
        return []
    cancellation = as_dict(notice.payload.get("cancellation"))
    return [
        _event(
            notice,
            "meeting_canceled",
            cancel_reason=stripped(cancellation.get("reason")),
            canceled_by=stripped(cancellation.get("canceled_by")),
            canceler_type=stripped(cancellation.get("canceler_type")),
        )
    ]


EVENT_PARSERS: dict[str, EventParser] = {
    "invitee.created": parse_invitee_created,
    "invitee.canceled": parse_invitee_canceled,
}
event_types = tuple(EVENT_PARSERS)


def _event(notice: Notice, type_: str, **extra: object) -> BehaviorEvent:
    payload = notice.payload
    uri = stripped(payload.get("uri"))
    if uri is None:
        raise InvalidEvent("the invitee has no uri (payload.uri): its retries could not be told")
    email = stripped(payload.get("email"))
    if email is None:
        raise InvalidEvent("the invitee has no email (payload.email)")
    created_at = notice.created_at if isinstance(notice.created_at, str) else ""
    return BehaviorEvent(
        id=event_id(notice.kind, uri, created_at),
        type=type_,
        email=email,
        # When Calendly created the webhook event (the booking or the cancellation).
        occurred_at=sent_at(created_at, notice.now, "created_at"),
        source=NAME,
        properties=compact({**meeting_properties(payload), **extra}, drop_empty=True),
    )


def event_id(kind: str, invitee_uri: str, created_at: str) -> str:
    material = json.dumps([kind, invitee_uri, created_at])  # ASCII-escaped: any text hashes
    return f"{NAME}-{hashlib.sha256(material.encode()).hexdigest()}"


def meeting_properties(payload: Mapping[str, Any]) -> dict[str, object]:
    """DESIGN §4 meeting properties plus extras. Meeting type, times, host and location come from
    the embedded `scheduled_event` object of current payloads; the older documented shape (only the
    `event` URI) leaves them out."""
    scheduled = as_dict(payload.get("scheduled_event"))
    host = next((m for m in as_list(scheduled.get("event_memberships")) if isinstance(m, dict)), {})
    location = as_dict(scheduled.get("location"))
    return {
        "meeting_type": stripped(scheduled.get("name")),
        "start_time": iso_time(scheduled.get("start_time")),
        "end_time": iso_time(scheduled.get("end_time")),
        "organizer": stripped(host.get("user_email")),
        "organizer_name": stripped(host.get("user_name")),
        "location": stripped(location.get("location")) or stripped(location.get("join_url")),
        "location_type": stripped(location.get("type")),
        "scheduled_event": stripped(payload.get("event")) or stripped(scheduled.get("uri")),
        "event_type": stripped(scheduled.get("event_type")),
        "invitee": stripped(payload.get("uri")),
        "name": stripped(payload.get("name")),
        "timezone": stripped(payload.get("timezone")),
        "answers": _answers(payload.get("questions_and_answers")),
        "tracking": {k: v for k, v in as_dict(payload.get("tracking")).items() if v is not None},
    }


def _answers(raw: object) -> dict[str, object]:
    pairs = (item for item in as_list(raw) if isinstance(item, dict))
    return {q: item.get("answer") for item in pairs if (q := stripped(item.get("question")))}


SOURCE = InboundSource(name=NAME, verify=verify, parse=parse)
