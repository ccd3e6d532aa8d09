"""Postmark inbound: every message received on the server's inbound address (or inbound domain)
is posted as one JSON document -> email_replied.

Fields used (https://postmarkapp.com/developer/webhooks/inbound-webhook): `FromFull.Email` (the
person), `OriginalRecipient` / `ToFull` (our mailbox), `Subject`, `Date`, `MessageID` (Postmark's
id), `Headers` [{Name, Value}] (the RFC Message-ID, In-Reply-To, References, Auto-Submitted...),
`TextBody`, `StrippedTextReply`, `MailboxHash`. `Attachments` (base64) are dropped, never kept.

Postmark does not sign its posts: the endpoint is protected with HTTP Basic auth, any user name
and POSTMARK_WEBHOOK_SECRET as the password (`https://any:<secret>@<host>/webhooks/postmark`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from connectors.base.inbound import Delivery, InboundSource, MiB, Parsed
from connectors.base.mime import strip_attachments
from connectors.base.payload import as_dict, as_text, json_object
from connectors.base.replies import (
    Headers,
    InboundEmail,
    address,
    answer_200,
    clip,
    first_address,
    to_parsed,
)
from connectors.base.signatures import verify_basic_auth

NAME = "postmark"
ATTACHMENT_FACTS = ("Name", "ContentType", "ContentLength")


verify = verify_basic_auth  # Postmark does not sign: the URL's password is the secret


def parse(delivery: Delivery) -> Parsed:
    body = json_object(delivery.body, "one inbound message")
    parsed = EVENT_PARSERS["inbound"](body, delivery)
    if parsed.unusable:
        parsed.keep = json.dumps(without_attachments(body)).encode()
    return parsed


def parse_inbound(message: Mapping[str, Any], delivery: Delivery) -> Parsed:
    headers = Headers(_header_pairs(message.get("Headers")))
    from_full = as_dict(message.get("FromFull"))
    extra = {"reply_text": clip(_text(message, "StrippedTextReply"))}
    if _text(message, "MailboxHash"):
        extra["mailbox_hash"] = _text(message, "MailboxHash")
    return to_parsed(
        InboundEmail(
            source=NAME,
            headers=Headers([*headers.pairs, ("date", _text(message, "Date"))]),
            sender=_text(from_full, "Email") or _text(message, "From"),
            envelope_sender=_return_path(headers),
            mailbox=first_address([_text(message, "OriginalRecipient"), *_to_addresses(message)]),
            subject=_text(message, "Subject"),
            text=_text(message, "TextBody"),
            # Postmark sends no delivery time: our arrival time stands in for a missing Date.
            delivered_at=delivery.now,
            vendor_id=_text(message, "MessageID"),
            extra=extra,
        )
    )


EVENT_PARSERS: dict[str, Callable[[Mapping[str, Any], Delivery], Parsed]] = {
    "inbound": parse_inbound,
}
event_types = tuple(EVENT_PARSERS)


def without_attachments(message: dict) -> dict:
    """The message as kept when quarantined: attachments reduced to name, type and size, and the
    optional RawEmail without its attachment parts."""
    kept = dict(message)
    attachments = message.get("Attachments")
    if isinstance(attachments, list):
        kept["Attachments"] = [
            {k: a[k] for k in ATTACHMENT_FACTS if k in a}
            for a in attachments
            if isinstance(a, dict)
        ]
    elif "Attachments" in kept:
        kept["Attachments"] = []
    raw = message.get("RawEmail")
    if isinstance(raw, str):
        kept["RawEmail"] = strip_attachments(raw.encode("utf-8", "replace")).decode(
            "utf-8", "replace"
        )
    elif "RawEmail" in kept:
        del kept["RawEmail"]
    return kept


def _header_pairs(headers: object) -> list[tuple[str, str]]:
    if not isinstance(headers, list):
        return []
    return [
        (h["Name"], h["Value"])
        for h in headers
        if isinstance(h, dict)
        and isinstance(h.get("Name"), str)
        and isinstance(h.get("Value"), str)
    ]


def _return_path(headers: Headers) -> str | None:
    value = headers.get("return-path")
    if value is None:
        return None
    return "" if value.strip() == "<>" else address(value)


def _to_addresses(message: Mapping[str, Any]) -> list[str]:
    to_full = message.get("ToFull")
    found = [_text(as_dict(r), "Email") for r in to_full] if isinstance(to_full, list) else []
    return [*found, _text(message, "To")]


def _text(data: Mapping[str, Any], key: str) -> str:
    return as_text(data.get(key))


SOURCE = InboundSource(
    name=NAME,
    verify=verify,
    parse=parse,
    content_types=("application/json",),
    max_bytes=30 * MiB,
    respond=answer_200,
)
