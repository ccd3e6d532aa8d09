"""Mailgun inbound routes: a route's `forward("https://<host>/webhooks/mailgun")` posts every
received message as form fields (urlencoded, multipart when it has attachments) -> email_replied.

Two kinds of post, told apart by their fields (EVENT_PARSERS):
- `parsed` (the default): the message already taken apart: `from`, `sender`, `recipient`,
  `subject`, `message-headers` (JSON list of [name, value]), `body-plain`, `stripped-text`...
- `mime` (a forward URL ending in "mime"): the whole message in `body-mime`.

Signature (https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/securing-webhooks):
form fields `timestamp`, `token`, `signature` = hex HMAC-SHA256 of `timestamp + token` keyed with
the HTTP webhook signing key (MAILGUN_WEBHOOK_SECRET). The body itself is not signed. A timestamp
outside 5 minutes is refused, and a token is accepted once: it is recorded with the accept.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

from connectors.base.formdata import MULTIPART, URLENCODED, Form, read_form
from connectors.base.inbound import (
    Delivery,
    InboundSource,
    MiB,
    Parsed,
    SignatureError,
)
from connectors.base.mime import form_without_attachments, plain_text
from connectors.base.mime import parse_mime as mime_message
from connectors.base.replies import (
    Headers,
    InboundEmail,
    answer_200,
    clip,
    decode_words,
    first_address,
    to_parsed,
)
from connectors.base.signatures import hmac_sha256, same, within_window

NAME = "mailgun"
SIGNATURE_FIELDS = ("timestamp", "token", "signature")
MAX_TOKEN = 256


def once_key(token: str) -> str:
    return f"{NAME}:{token}"


def sign(secret: str, timestamp: str, token: str) -> str:
    """Mailgun's signature: hex HMAC-SHA256 of timestamp + token (no separator)."""
    return hmac_sha256(secret.encode(), (timestamp + token).encode()).hex()


def verify(delivery: Delivery, secret: str | None) -> None:
    if secret is None:
        return  # only reached when ALLOW_UNSIGNED_WEBHOOKS=1
    form = _form(delivery)  # the signature travels in the body: BadPayload if it is no form
    timestamp, token, signature = (form.first(name) or "" for name in SIGNATURE_FIELDS)
    if not (timestamp and token and signature):
        raise SignatureError("missing Mailgun signature fields: timestamp, token and signature")
    if len(token) > MAX_TOKEN:
        raise SignatureError(f"token longer than {MAX_TOKEN} characters")
    within_window(timestamp, delivery.now)
    expected = sign(secret, timestamp, token).encode()
    if not same(expected, signature.strip().lower().encode()):
        raise SignatureError(
            "signature does not match (hex HMAC-SHA256 of timestamp + token, keyed with the "
            "HTTP webhook signing key)"
        )
    if delivery.seen(once_key(token)):
        raise SignatureError("token already used: a replayed delivery")


def parse(delivery: Delivery) -> Parsed:
    form = _form(delivery)
    kind = "mime" if form.raw("body-mime") is not None else "parsed"
    parsed = EVENT_PARSERS[kind](form, delivery)
    token = form.first("token")
    if token and len(token) <= MAX_TOKEN:
        parsed.once.append(once_key(token))
    if parsed.unusable:
        # Kept: the post without attachment files, `body-mime` without its attachment parts.
        parsed.keep = form_without_attachments(form, "body-mime")
    return parsed


def parse_parsed(form: Form, delivery: Delivery) -> Parsed:
    headers = _message_headers(form)
    return to_parsed(
        _email(
            form,
            delivery,
            headers,
            text=form.first("body-plain") or "",
            reply_text=form.first("stripped-text"),
        )
    )


def parse_mime(form: Form, delivery: Delivery) -> Parsed:
    message = mime_message(form.raw("body-mime") or b"")
    return to_parsed(_email(form, delivery, Headers.of(message), text=plain_text(message)))


EVENT_PARSERS: dict[str, Callable[[Form, Delivery], Parsed]] = {
    "parsed": parse_parsed,
    "mime": parse_mime,
}
event_types = tuple(EVENT_PARSERS)


def _form(delivery: Delivery) -> Form:
    return read_form(bytes(delivery.body), delivery.headers.get("content-type", ""))


def _email(
    form: Form,
    delivery: Delivery,
    headers: Headers,
    text: str,
    reply_text: str | None = None,
) -> InboundEmail:
    sender = form.first("from") or headers.get("from") or form.first("sender") or ""
    subject = form.first("subject")
    extra = {"reply_text": clip(reply_text)} if reply_text is not None else {}
    return InboundEmail(
        source=NAME,
        headers=headers,
        sender=sender,
        envelope_sender=form.first("sender"),
        mailbox=first_address([form.first("recipient"), headers.get("to")]),
        subject=subject if subject is not None else decode_words(headers.get("subject") or ""),
        text=text,
        delivered_at=_delivered_at(form.first("timestamp"), delivery.now),
        extra=extra,
    )


def _message_headers(form: Form) -> Headers:
    """`message-headers` (JSON [[name, value], ...]); else the header fields Mailgun also posts one
    by one (capitalised names: `Message-Id`, `In-Reply-To`...)."""
    try:
        pairs = json.loads(form.first("message-headers") or "null")
    except (ValueError, RecursionError):
        pairs = None
    if isinstance(pairs, list):
        return Headers(
            (p[0], p[1])
            for p in pairs
            if isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p)
        )
    return Headers((p.name, p.text()) for p in form.fields() if p.name[:1].isupper())


def _delivered_at(timestamp: str | None, now: datetime) -> datetime:
    """When Mailgun posted (its signed timestamp); our arrival time if it is unusable. Only used
    when the message has no usable Date header."""
    try:
        return datetime.fromtimestamp(int(timestamp or ""), UTC)
    except (ValueError, OverflowError, OSError):
        return now


SOURCE = InboundSource(
    name=NAME,
    verify=verify,
    parse=parse,
    content_types=(URLENCODED, MULTIPART),
    max_bytes=30 * MiB,
    respond=answer_200,
)
