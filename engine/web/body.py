"""Request bodies read with a bound, whether the length is declared or the body is chunked."""

from __future__ import annotations

from flask import request

from engine.errors import PayloadTooLarge


def bounded_body(limit: int, what: str) -> bytes:
    """The body, or PayloadTooLarge (413) as soon as it is known to exceed `limit` bytes: from a
    declared Content-Length before reading anything, else after reading at most limit + 1."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"{what} are limited to {limit} bytes")
    body = request.stream.read(limit + 1)
    if len(body) > limit:
        raise PayloadTooLarge(f"{what} are limited to {limit} bytes")
    return body
