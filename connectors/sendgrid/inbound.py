"""SendGrid (Twilio) Inbound Parse: every message received on the parse hostname is posted as
multipart/form-data -> email_replied.

Two kinds of post, by the Parse setting "POST the raw, full MIME message" (EVENT_PARSERS):
- `parsed` (default): `headers` (the raw header block), `from`, `to`, `subject`, `text`, `html`,
  `envelope` (JSON {"to": [...], "from": "..."}), `charsets` (JSON, the charset of each field),
  files `attachment1..N` (dropped, never kept).
- `raw`: the whole message in `email`, plus `from`, `to`, `subject`, `envelope`, `charsets`.

SendGrid does not sign these posts: the endpoint is protected with HTTP Basic auth, any user name
and SENDGRID_WEBHOOK_SECRET as the password (`https://any:<secret>@<host>/webhooks/sendgrid`).
SendGrid retries a 5xx for up to 3 days; there is no delivery id, so the RFC Message-ID is the
event id.
"""

from __future__ import annotations

from collections.abc import Callable

from connectors.base.formdata import MULTIPART, Form, read_form
from connectors.base.inbound import Delivery, InboundSource, MiB, Parsed
from connectors.base.mime import form_without_attachments, parse_mime, plain_text
from connectors.base.payload import object_or_none
from connectors.base.replies import (
    Headers,
    InboundEmail,
    address,
    decode_words,
    first_address,
    to_parsed,
)
from connectors.base.signatures import verify_basic_auth

NAME = "sendgrid"


verify = verify_basic_auth  # SendGrid does not sign: the URL's password is the secret


def parse(delivery: Delivery) -> Parsed:
    form = read_form(bytes(delivery.body), delivery.headers.get("content-type", ""))
    kind = "raw" if form.raw("email") is not None else "parsed"
    parsed = EVENT_PARSERS[kind](Post(form), delivery)
    if parsed.unusable:
        # Kept: the post without attachment files, the raw `email` without its attachment parts.
        parsed.keep = form_without_attachments(form, "email")
    return parsed


class Post:
    """The form fields of one Inbound Parse post, each decoded with its declared charset."""

    def __init__(self, form: Form):
        self.form = form
        self.charsets = _json_object(form.first("charsets"))
        self.envelope = _json_object(form.first("envelope"))

    def field(self, name: str) -> str | None:
        charset = self.charsets.get(name)
        return self.form.first(name, charset if isinstance(charset, str) else None)

    def envelope_to(self) -> str | None:
        to = self.envelope.get("to")
        first = to[0] if isinstance(to, list) and to else to
        return first if isinstance(first, str) else None

    def envelope_from(self) -> str | None:
        sender = self.envelope.get("from")
        return address(sender) if isinstance(sender, str) else None


def parse_parsed(post: Post, delivery: Delivery) -> Parsed:
    headers = Headers.parse(post.field("headers") or "")
    return to_parsed(_email(post, delivery, headers, post.field("text") or ""))


def parse_raw(post: Post, delivery: Delivery) -> Parsed:
    message = parse_mime(post.form.raw("email") or b"")
    return to_parsed(_email(post, delivery, Headers.of(message), plain_text(message)))


EVENT_PARSERS: dict[str, Callable[[Post, Delivery], Parsed]] = {
    "parsed": parse_parsed,
    "raw": parse_raw,
}
event_types = tuple(EVENT_PARSERS)


def _email(post: Post, delivery: Delivery, headers: Headers, text: str) -> InboundEmail:
    subject = post.field("subject")
    return InboundEmail(
        source=NAME,
        headers=headers,
        sender=post.field("from") or headers.get("from") or post.envelope_from() or "",
        envelope_sender=post.envelope_from(),
        mailbox=first_address([post.envelope_to(), post.field("to"), headers.get("to")]),
        subject=subject if subject is not None else decode_words(headers.get("subject") or ""),
        text=text,
        # The post carries no delivery time: our arrival time stands in for a missing Date.
        delivered_at=delivery.now,
    )


def _json_object(text: str | None) -> dict:
    """A JSON field (`charsets`, `envelope`) as an object; {} when absent or unreadable."""
    return object_or_none(text or "{}") or {}


SOURCE = InboundSource(
    name=NAME,
    verify=verify,
    parse=parse,
    content_types=(MULTIPART,),
    max_bytes=30 * MiB,
)
