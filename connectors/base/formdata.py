"""Form bodies read from the raw bytes with the standard library only (no web framework here):
`application/x-www-form-urlencoded` and `multipart/form-data` (RFC 7578).

File parts (attachments) are recognised by their `filename` parameter; their bytes are never decoded
and never part of what is kept. Shared by the inbound-email sources (Mailgun, SendGrid).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import collapse_rfc2231_value
from urllib.parse import parse_qsl, urlencode

from connectors.base.inbound import BadPayload

URLENCODED = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"
MAX_FIELDS = 10_000
_HEAD_END = re.compile(rb"\r?\n\r?\n")


@dataclass(frozen=True)
class Part:
    """One form field as received: its name, raw part header block and content bytes."""

    name: str
    content: bytes
    head: bytes = b""
    filename: str | None = None
    charset: str | None = None

    @property
    def is_file(self) -> bool:
        return self.filename is not None

    def text(self, charset: str | None = None) -> str:
        """The value as text: the given charset, else the part's own, else UTF-8 (lenient)."""
        for candidate in (charset, self.charset, "utf-8"):
            if candidate:
                try:
                    return self.content.decode(candidate, errors="replace")
                except LookupError:
                    continue
        return self.content.decode("utf-8", errors="replace")  # pragma: no cover


@dataclass(frozen=True)
class Form:
    parts: tuple[Part, ...]
    boundary: bytes | None = None
    """None for a urlencoded body."""

    def first(self, name: str, charset: str | None = None) -> str | None:
        """The first non-file field of that name (names are case-sensitive), as text."""
        for part in self.parts:
            if part.name == name and not part.is_file:
                return part.text(charset)
        return None

    def raw(self, name: str) -> bytes | None:
        for part in self.parts:
            if part.name == name and not part.is_file:
                return part.content
        return None

    def fields(self) -> list[Part]:
        return [p for p in self.parts if not p.is_file]

    @property
    def files(self) -> int:
        return sum(1 for p in self.parts if p.is_file)

    def without_files(self, replace: Mapping[str, bytes] | None = None) -> bytes:
        """The body again, in its own encoding, without file parts; `replace` swaps the content
        of named fields (a raw MIME field stripped of its attachments, say)."""
        replace = replace or {}
        kept = [
            Part(p.name, replace.get(p.name, p.content), p.head, None, p.charset)
            for p in self.fields()
        ]
        if self.boundary is None:
            pairs = [(p.name, p.content) for p in kept]
            return urlencode(pairs).encode("ascii")
        delimiter = b"--" + self.boundary
        chunks = [delimiter + b"\r\n" + p.head + b"\r\n\r\n" + p.content + b"\r\n" for p in kept]
        return b"".join(chunks) + delimiter + b"--\r\n"


def read_form(body: bytes, content_type: str) -> Form:
    """A urlencoded or multipart/form-data body; BadPayload when it cannot be read as one."""
    header = _content_type(content_type)
    mimetype = header.get_content_type()
    if mimetype == URLENCODED:
        return _urlencoded(body)
    if mimetype == MULTIPART:
        return _multipart(body, _boundary(header))
    raise BadPayload(f"expected {URLENCODED} or {MULTIPART}, got {mimetype}")


def _content_type(value: str) -> Message:
    header = Message(policy=compat32)
    header["Content-Type"] = (value or "").replace("\r", " ").replace("\n", " ")
    return header


def _boundary(header: Message) -> bytes:
    boundary = header.get_param("boundary")
    if isinstance(boundary, tuple):
        boundary = collapse_rfc2231_value(boundary)
    if not isinstance(boundary, str) or not 0 < len(boundary) <= 200:
        raise BadPayload("multipart/form-data without a usable boundary parameter")
    try:
        return boundary.encode("ascii")
    except UnicodeEncodeError:
        raise BadPayload("the multipart boundary is not ASCII") from None


def _urlencoded(body: bytes) -> Form:
    text = body.decode("utf-8", errors="replace")
    try:
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FIELDS, errors="replace")
    except ValueError as exc:
        raise BadPayload(f"form body cannot be read: {exc}") from None
    return Form(tuple(Part(name, value.encode("utf-8")) for name, value in pairs))


def _multipart(body: bytes, boundary: bytes) -> Form:
    delimiter = re.compile(rb"--" + re.escape(boundary) + rb"(--)?[ \t]*(?=\r?\n|$)")
    parts: list[Part] = []
    previous_end = None
    for count, match in enumerate(delimiter.finditer(body)):
        if count > MAX_FIELDS:
            raise BadPayload(f"multipart body has more than {MAX_FIELDS} parts")
        line_start = _line_start(body, match.start())
        if line_start is None:
            continue  # "--boundary" inside a line is content, not a delimiter
        if previous_end is not None:
            part = _part(body[previous_end:line_start])
            if part is not None:
                parts.append(part)
        if match.group(1):
            return Form(tuple(parts), boundary)
        previous_end = match.end()
    raise BadPayload("multipart body has no closing boundary (truncated?)")


def _line_start(body: bytes, at: int) -> int | None:
    """Where the delimiter line begins, its preceding line break included (RFC 2046 5.1.1)."""
    if at == 0:
        return 0
    if body[at - 1 : at] != b"\n":
        return None
    return at - 2 if body[at - 2 : at] == b"\r\n" else at - 1


def _part(segment: bytes) -> Part | None:
    segment = segment[2:] if segment.startswith(b"\r\n") else segment[1:]
    split = _HEAD_END.search(segment)
    if split is None:
        if segment.strip():
            raise BadPayload("a multipart part has no blank line after its headers")
        return None
    head, content = segment[: split.start()], segment[split.end() :]
    headers = BytesHeaderParser(policy=compat32).parsebytes(head + b"\r\n\r\n")
    name = headers.get_param("name", header="content-disposition")
    if isinstance(name, tuple):
        name = collapse_rfc2231_value(name)
    if not isinstance(name, str) or not name:
        return None  # not a form field
    name = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    filename = headers.get_filename()
    charset = headers.get_content_charset() if "content-type" in headers else None
    return Part(name, content, head, filename, charset)
