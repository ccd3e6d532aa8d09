"""The generic source: Standard Webhooks signing, body = one normalized event or a list (DESIGN §4).

Signature (https://www.standardwebhooks.com): headers webhook-id, webhook-timestamp and
webhook-signature (space-separated `v1,<base64 HMAC-SHA256>` entries, for key rotation) over
`<id>.<timestamp>.<raw body>`, with a `whsec_` secret. The HMAC is the standardwebhooks library's;
the replay window, header checks and constant-time comparison are ours, with an injected clock.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook

from connectors.base.inbound import (
    BadPayload,
    Delivery,
    InboundSource,
    Parsed,
    SignatureError,
    Unusable,
)
from connectors.base.signatures import b64decode_strict, same, within_window
from engine.errors import InvalidEvent
from engine.model import BehaviorEvent

HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


def verify(delivery: Delivery, secret: str | None) -> None:
    if secret is None:
        return  # only reached when ALLOW_UNSIGNED_WEBHOOKS=1
    msg_id, timestamp, signatures = (delivery.headers.get(h, "") for h in HEADERS)
    if not (msg_id and timestamp and signatures):
        raise SignatureError(f"missing Standard Webhooks headers: {', '.join(HEADERS)} required")
    if "." in msg_id or "." in timestamp:
        raise SignatureError("webhook-id and webhook-timestamp must not contain '.'")
    seconds = within_window(timestamp, delivery.now)
    expected = _expected(secret, msg_id, seconds, delivery.body)
    for entry in signatures.split():
        version, _, value = entry.partition(",")
        if version == "v1" and value and _matches(expected, value):
            return
    raise SignatureError(
        "no webhook-signature entry matches (v1, HMAC-SHA256 of id.timestamp.body)"
    )


def _expected(secret: str, msg_id: str, seconds: int, body: bytes) -> bytes:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadPayload("body is not UTF-8 text") from None
    signed = Webhook(secret).sign(msg_id, datetime.fromtimestamp(seconds, UTC), text)
    return b64decode_strict(signed.partition(",")[2])


def _matches(expected: bytes, given: str) -> bool:
    try:
        return same(expected, b64decode_strict(given))
    except SignatureError:
        return False


def parse(delivery: Delivery) -> Parsed:
    try:
        body = json.loads(delivery.body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadPayload(f"body is not JSON: {exc}") from None
    if isinstance(body, dict):
        items = [body]
    elif isinstance(body, list) and body:
        items = body
    else:
        raise BadPayload("body must be one event object or a non-empty list of them")
    delivery_id = delivery.headers.get("webhook-id", "")
    parsed = Parsed()
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            parsed.unusable.append(Unusable("an event must be a JSON object", item))
            continue
        fallback = delivery_id if len(items) == 1 else f"{delivery_id}:{index}"
        try:
            parsed.events.append(to_event(item, fallback_id=fallback))
        except InvalidEvent as exc:
            parsed.unusable.append(Unusable(exc.detail, item))
    return parsed


def to_event(item: dict, fallback_id: str = "", source: str = "standard") -> BehaviorEvent:
    """A normalized event from its JSON form; the delivery id stands in for a missing event id."""
    data = dict(item)
    if not data.get("id") and fallback_id:
        data["id"] = fallback_id
    data.setdefault("source", source)
    return BehaviorEvent.from_dict(data)


SOURCE = InboundSource(name="standard", verify=verify, parse=parse)


def signed_headers(secret: str, msg_id: str, body: bytes, now: datetime) -> dict[str, str]:
    """The headers a Standard Webhooks sender attaches (used by `lifecycle demo` and the tests)."""
    seconds = int(now.timestamp())
    signature = Webhook(secret).sign(msg_id, datetime.fromtimestamp(seconds, UTC), body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(seconds),
        "webhook-signature": signature,
        "content-type": "application/json",
    }
