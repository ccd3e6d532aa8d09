"""Cal.com webhooks (payload version 2021-10-20): bookings -> meeting events, routing forms ->
form_submitted.

Signature (`calcom/cal.com` packages/features/webhooks/lib/sendPayload.ts, createWebhookSignature):
`X-Cal-Signature-256: <hex HMAC-SHA256(secret, raw body)>`; a webhook saved without a secret sends
the literal `no-secret-provided`, which we refuse. Cal.com signs no timestamp, so there is no replay
window: a captured delivery replayed within the idempotency TTL is a duplicate (same event id), but
after that it would be accepted again. Keep the secret and the endpoint's logs private.

Cal.com sends no delivery id, and its `createdAt` is the time of sending (a re-send gets a new one),
so a booking event's id hashes what identifies the booking change instead: the trigger, the booking
uid, the booker's email (seated events share one uid), the start time and, for a reschedule, the
previous booking's uid.
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
    is_email,
    iso_time,
    json_object,
    named_email,
    sent_at,
    stripped,
    unusable,
)
from connectors.base.signatures import hmac_sha256, same
from engine.errors import InvalidEvent
from engine.model import BehaviorEvent, normalize_email

NAME = "calcom"
SIGNATURE_HEADER = "x-cal-signature-256"
NO_SECRET = "no-secret-provided"
_HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
log = logging.getLogger(f"connectors.{NAME}")


# --- verification ------------------------------------------------------------------------------


def verify(delivery: Delivery, secret: str | None) -> None:
    if secret is None:
        return  # only reached when ALLOW_UNSIGNED_WEBHOOKS=1
    given = delivery.headers.get(SIGNATURE_HEADER, "").strip()
    if not given:
        raise SignatureError("missing X-Cal-Signature-256 header")
    if given == NO_SECRET:
        raise SignatureError(
            "the Cal.com webhook was saved without a secret: give it CALCOM_WEBHOOK_SECRET's value"
        )
    if not _HEX_SHA256.fullmatch(given):
        raise SignatureError("X-Cal-Signature-256 is not a hex HMAC-SHA256")
    if not same(hmac_sha256(secret.encode(), delivery.body), bytes.fromhex(given)):
        raise SignatureError("X-Cal-Signature-256 does not match (hex HMAC-SHA256 of the body)")


def signature(secret: str, body: bytes) -> str:
    """The X-Cal-Signature-256 value Cal.com sends for `body` (tests and demos)."""
    return hmac_sha256(secret.encode(), body).hex()


# --- parsing -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Notice:
    """One verified Cal.com delivery: the trigger, its createdAt and its payload."""

    trigger: str
    created_at: str
    payload: Mapping[str, Any]
    now: datetime


EventParser = Callable[[Notice], list[BehaviorEvent]]


def parse(delivery: Delivery) -> Parsed:
    body = json_object(
        delivery.body,
        "a Cal.com webhook",
        not_json="body is not JSON (a Cal.com custom payload template must be JSON)",
    )
    trigger = body.get("triggerEvent")
    if not isinstance(trigger, str) or not trigger:
        raise BadPayload("not a Cal.com webhook: `triggerEvent` is missing")
    parser = EVENT_PARSERS.get(trigger)
    if parser is None:
        log.info("calcom.webhook.unsupported_event: %r", trigger[:80])
        return Parsed(ignored=1)
    payload = body.get("payload")
    if not isinstance(payload, dict):
        return unusable(f"{trigger} without a payload object", body)
    created_at = body.get("createdAt") if isinstance(body.get("createdAt"), str) else ""
    try:
        return Parsed(events=parser(Notice(trigger, created_at, payload, delivery.now)))
    except InvalidEvent as exc:
        return unusable(exc.detail, body)


def parse_booking_created(notice: Notice) -> list[BehaviorEvent]:
    return [_booking(notice, "meeting_booked")]


def parse_booking_rescheduled(notice: Notice) -> list[BehaviorEvent]:
    """The new booking (new uid), with the old one's uid and times."""
    p = notice.payload
    return [
        _booking(
            notice,
            "meeting_rescheduled",
            previous_booking_uid=stripped(p.get("rescheduleUid")),
            previous_booking_id=_integer(p.get("rescheduleId")),
            previous_start_time=iso_time(p.get("rescheduleStartTime")),
            previous_end_time=iso_time(p.get("rescheduleEndTime")),
            reschedule_reason=stripped(_answer(p, "rescheduleReason")),
        )
    ]


def parse_booking_cancelled(notice: Notice) -> list[BehaviorEvent]:
    """A cancellation; `reschedule_requested` is true when the host asked for another time."""
    p = notice.payload
    requested = p.get("requestReschedule")
    return [
        _booking(
            notice,
            "meeting_canceled",
            cancel_reason=stripped(p.get("cancellationReason")),
            canceled_by=stripped(p.get("cancelledBy")),
            reschedule_requested=requested if isinstance(requested, bool) else None,
        )
    ]


def parse_form_submitted(notice: Notice) -> list[BehaviorEvent]:
    """A routing form response -> form_submitted, when one answer is the submitter's email."""
    p = notice.payload
    form_id = stripped(p.get("formId"))
    if form_id is None:
        raise InvalidEvent("the form submission has no formId")
    fields = {
        str(key): answer.get("value") if isinstance(answer, dict) else answer
        for key, answer in as_dict(p.get("responses")).items()
    }
    email = submitter_email(fields)
    if email is None:
        raise InvalidEvent("the form response has no email answer (add an email question)")
    response_id = _integer(p.get("responseId"))
    if response_id is None:  # newer payloads nest it; older ones have none (then: createdAt)
        response_id = _integer(as_dict(p.get("response")).get("id"))
    instance = str(response_id) if response_id is not None else notice.created_at
    properties = {"form": form_id, "form_name": stripped(p.get("formName")), "fields": fields}
    return [
        BehaviorEvent(
            id=event_id(notice.trigger, form_id, normalize_email(email), instance),
            type="form_submitted",
            email=email,
            occurred_at=_occurred_at(notice),
            source=NAME,
            properties=compact({**properties, "team_id": _integer(p.get("teamId"))}),
        )
    ]


EVENT_PARSERS: dict[str, EventParser] = {
    "BOOKING_CREATED": parse_booking_created,
    "BOOKING_RESCHEDULED": parse_booking_rescheduled,
    "BOOKING_CANCELLED": parse_booking_cancelled,
    "FORM_SUBMITTED": parse_form_submitted,
}
event_types = tuple(EVENT_PARSERS)


def _booking(notice: Notice, type_: str, **extra: object) -> BehaviorEvent:
    p = notice.payload
    booker = next((a for a in as_list(p.get("attendees")) if isinstance(a, dict)), {})
    email = stripped(booker.get("email")) or stripped(_answer(p, "email"))
    if email is None:
        raise InvalidEvent("the booking has no attendee email (payload.attendees[0].email)")
    uid = stripped(p.get("uid")) or _integer(p.get("bookingId"))
    if uid is None:
        raise InvalidEvent("the booking has no uid (payload.uid)")
    identity = [
        uid,
        email.lower(),
        stripped(p.get("startTime")) or "",
        extra.get("previous_booking_uid"),
    ]
    return BehaviorEvent(
        id=event_id(notice.trigger, *identity),
        type=type_,
        email=email,
        occurred_at=_occurred_at(notice),
        source=NAME,
        properties=compact({**booking_properties(p, booker), **extra}),
    )


def booking_properties(p: Mapping[str, Any], booker: Mapping[str, Any]) -> dict[str, object]:
    """DESIGN §4 meeting properties (meeting_type = the event type's title) plus extras."""
    organizer = as_dict(p.get("organizer"))
    attendees = [a for a in as_list(p.get("attendees")) if isinstance(a, dict)]
    guests = [e for a in attendees[1:] if (e := stripped(a.get("email")))]
    return {
        "meeting_type": stripped(p.get("eventTitle")) or stripped(p.get("type")),
        "start_time": iso_time(p.get("startTime")),
        "end_time": iso_time(p.get("endTime")),
        "organizer": stripped(organizer.get("email")),
        "organizer_name": stripped(organizer.get("name")),
        "title": stripped(p.get("title")),
        "location": stripped(p.get("location")),
        "event_type_slug": stripped(p.get("type")),
        "event_type_id": _integer(p.get("eventTypeId")),
        "booking_uid": stripped(p.get("uid")),
        "booking_id": _integer(p.get("bookingId")),
        "status": stripped(p.get("status")),
        "name": stripped(booker.get("name")),
        "timezone": stripped(booker.get("timeZone")),
        "guests": guests or None,
    }


def event_id(trigger: str, *parts: object) -> str:
    material = json.dumps([trigger, *parts])  # ASCII-escaped: any text hashes
    return f"{NAME}-{hashlib.sha256(material.encode()).hexdigest()}"


def submitter_email(fields: Mapping[str, object]) -> str | None:
    """An answer labelled email (or e-mail) holding an address; else the first address answered,
    which is how Cal.com itself finds the submitter (routing-forms getSubmitterEmail)."""
    labelled = named_email(fields, lambda name: "email" in name.lower() or "e-mail" in name.lower())
    if labelled is not None:
        return labelled
    return next((str(value) for value in fields.values() if is_email(value)), None)


# --- small helpers -----------------------------------------------------------------------------


def _occurred_at(notice: Notice) -> datetime:
    """When Cal.com fired the trigger (its createdAt); the delivery time when it has none."""
    return sent_at(notice.created_at, notice.now, "createdAt")


def _answer(p: Mapping[str, Any], field: str) -> object:
    return as_dict(as_dict(p.get("responses")).get(field)).get("value")


def _integer(raw: object) -> int | None:
    return raw if isinstance(raw, int) and not isinstance(raw, bool) else None


SOURCE = InboundSource(name=NAME, verify=verify, parse=parse)
