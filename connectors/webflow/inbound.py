"""Webflow: `form_submission` webhooks become `form_submitted` events.

Signature (https://developers.webflow.com/data/v1.0.0/docs/verifying-webhook-signatures; the
official SDK `webflow/js-webflow-api` computes the same): `x-webflow-signature` = hex HMAC-SHA256 of
`"<x-webflow-timestamp>:<raw body>"`, the timestamp in epoch MILLISECONDS, refused when more than
5 minutes from now. Unlike the SDK we check the age and compare in constant time.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from connectors.base.inbound import (
    BadPayload,
    Delivery,
    InboundSource,
    Parsed,
    SignatureError,
    Unusable,
)
from connectors.base.signatures import hmac_sha256, same, within_window
from engine.errors import InvalidEvent
from engine.model import BehaviorEvent, normalize_email

NAME = "webflow"
TIMESTAMP, SIGNATURE = "x-webflow-timestamp", "x-webflow-signature"
MAX_TIMESTAMP_DIGITS = 16
log = logging.getLogger(f"connectors.{NAME}")


# --- verification ---------------------------------------------------------------------------------


def verify(delivery: Delivery, secret: str | None) -> None:
    if secret is None:
        return  # only reached when ALLOW_UNSIGNED_WEBHOOKS=1
    timestamp = delivery.headers.get(TIMESTAMP, "").strip()
    given = delivery.headers.get(SIGNATURE, "").strip()
    if not (timestamp and given):
        raise SignatureError("missing x-webflow-timestamp or x-webflow-signature header")
    digits = timestamp.isascii() and timestamp.isdigit()
    if not digits or len(timestamp) > MAX_TIMESTAMP_DIGITS:
        raise SignatureError("x-webflow-timestamp must be epoch milliseconds")
    within_window(str(int(timestamp) // 1000), delivery.now)
    if not same(_signature(secret, timestamp, delivery.body).encode(), given.lower().encode()):
        raise SignatureError(
            "x-webflow-signature does not match (hex HMAC-SHA256 of timestamp:body)"
        )


def _signature(secret: str, timestamp: str, body: bytes) -> str:
    return hmac_sha256(secret.encode(), timestamp.encode() + b":" + body).hex()


def signed_headers(secret: str, body: bytes, now: datetime) -> dict[str, str]:
    """The headers Webflow attaches to `body` sent at `now` (for tests and demos)."""
    timestamp = str(int(now.timestamp() * 1000))
    return {
        TIMESTAMP: timestamp,
        SIGNATURE: _signature(secret, timestamp, body),
        "content-type": "application/json",
    }


# --- parsing --------------------------------------------------------------------------------------


def parse(delivery: Delivery) -> Parsed:
    body = _json_object(delivery.body)
    kind, payload = body.get("triggerType"), body.get("payload")
    if kind is None and "_id" in body and "data" in body:
        kind, payload = "form_submission", _from_v1(body)
    parser = EVENT_PARSERS.get(kind) if isinstance(kind, str) else None
    if parser is None:
        log.info("%s.webhook.unsupported_event: %.80r", NAME, kind)
        return Parsed(ignored=1)
    if not isinstance(payload, dict):
        return _unusable("payload is missing or not an object", body)
    return parser(payload, delivery.now)


def parse_form_submission(payload: dict[str, Any], now: datetime) -> Parsed:
    submission_id = _text(payload.get("id")).strip()
    data = _dict(payload.get("data"))
    if not submission_id:
        return _unusable("payload.id (the submission id) is missing", payload)
    email = _email(data, _list(payload.get("schema")))
    if email is None:
        return _unusable("no email: no email field and no single address among the fields", payload)
    name = _text(payload.get("name"))
    properties = {
        "form": _text(payload.get("formId")) or name,
        "form_name": name,
        "fields": data,
        "site_id": _text(payload.get("siteId")),
    }
    try:
        event = BehaviorEvent(
            id=f"{NAME}:{submission_id}",
            type="form_submitted",
            email=email,
            # submittedAt is always sent; the delivery time stands in only if it is not.
            occurred_at=payload.get("submittedAt") or now,
            source=NAME,
            properties=properties,
        )
    except InvalidEvent as exc:
        return _unusable(exc.detail, payload)
    return Parsed(events=[event])


EVENT_PARSERS: dict[str, Callable[[dict[str, Any], datetime], Parsed]] = {
    "form_submission": parse_form_submission,
}
event_types = tuple(EVENT_PARSERS)


def _from_v1(body: dict[str, Any]) -> dict[str, Any]:
    """The legacy v1 body (`name`, `site`, `data`, `d`, `_id`) in the v2 payload's terms; it names
    no form id, so `form` falls back to the form's name."""
    return {
        "name": body.get("name"),
        "siteId": body.get("site"),
        "data": body.get("data"),
        "submittedAt": body.get("d"),
        "id": body.get("_id"),
    }


def _email(data: dict[str, Any], schema: list[Any]) -> str | None:
    """A field named email (any case); else one whose name or schema type mentions email; else
    the only value that looks like an address."""
    for key, value in data.items():
        if key.strip().lower() == "email" and _is_email(value):
            return value
    typed = {
        _text(item.get("fieldName"))
        for item in schema
        if isinstance(item, dict) and "email" in _text(item.get("fieldType")).lower()
    }
    for key, value in data.items():
        if (key in typed or "email" in key.lower()) and _is_email(value):
            return value
    found = {value.strip().lower() for value in data.values() if _is_email(value)}
    return found.pop() if len(found) == 1 else None


# --- small helpers --------------------------------------------------------------------------------


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise BadPayload(f"body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadPayload("body must be a JSON object (a Webflow webhook event)")
    return body


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _unusable(reason: str, item: object) -> Parsed:
    return Parsed(unusable=[Unusable(reason, item)])


def _is_email(value: object) -> bool:
    try:
        normalize_email(value)
    except InvalidEvent:
        return False
    return True


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


SOURCE = InboundSource(name=NAME, verify=verify, parse=parse)
