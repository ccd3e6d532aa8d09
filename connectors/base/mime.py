"""MIME messages (a raw `body-mime`, SendGrid's raw `email`, Postmark's `RawEmail`): the plain
text a person wrote, and the message without its attachments for quarantine (attachments are never
stored)."""

from __future__ import annotations

import re
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32

from connectors.base.formdata import Form


def parse_mime(raw: bytes) -> Message:
    return BytesParser(policy=compat32).parsebytes(raw)


def plain_text(message: Message) -> str:
    """The first text/plain part that is not an attachment, decoded."""
    for part in message.walk():
        if part.get_content_type() == "text/plain" and not _is_attachment(part):
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                return _decode(payload, part.get_content_charset())
    return ""


def strip_attachments(raw: bytes) -> bytes:
    """The message without its attachments (only text parts stay); at worst its header block."""
    try:
        message = parse_mime(raw)
        _prune(message)
        return message.as_bytes()
    except Exception:  # a message the generator cannot write back: keep only its headers
        return re.split(rb"\r?\n\r?\n", raw, maxsplit=1)[0] + b"\r\n\r\n"


def form_without_attachments(form: Form, mime_field: str) -> bytes:
    """What an email source keeps when quarantining a form post: the post without attachment
    files, and its raw MIME field (Mailgun's `body-mime`, SendGrid's `email`) without its
    attachment parts."""
    raw = form.raw(mime_field)
    replace = {mime_field: strip_attachments(raw)} if raw is not None else {}
    return form.without_files(replace)


def _prune(part: Message) -> None:
    if part.is_multipart():
        children = [c for c in part.get_payload() if _keeps(c)]
        for child in children:
            _prune(child)
        part.set_payload(children)
    elif not _keeps(part):
        part.set_payload("")


def _keeps(part: Message) -> bool:
    return part.is_multipart() or (
        part.get_content_maintype() == "text" and not _is_attachment(part)
    )


def _is_attachment(part: Message) -> bool:
    disposition = str(part.get("content-disposition") or "").split(";")[0].strip().lower()
    return disposition == "attachment" or part.get_filename() is not None


def _decode(payload: bytes, charset: str | None) -> str:
    try:
        return payload.decode(charset or "utf-8", errors="replace")
    except LookupError:
        return payload.decode("utf-8", errors="replace")
