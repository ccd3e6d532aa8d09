"""What the inbound sources' tests share: random JSON, damaged fixtures, exhaustive odd values, the
web app with one source registered, and posting to it.

For tests only: it needs the dev extras (pytest, hypothesis), and nothing outside tests imports it.
Pytest does not rewrite the asserts of a helper module, so each one here says what it saw.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from werkzeug.test import TestResponse

import connectors
from connectors.base.inbound import (
    BadPayload,
    Delivery,
    InboundSource,
    Parsed,
    Parser,
    SignatureError,
    Verifier,
)
from connectors.base.signatures import basic_auth_header
from engine.web import create_app

FUZZ = settings(max_examples=200, deadline=None)
"""The budget of every fuzz test."""
FUZZ_WEB = settings(FUZZ, suppress_health_check=[HealthCheck.function_scoped_fixture])
"""The same, for a fuzz test that takes the web client fixture: one app serves every example."""


# --- random JSON ----------------------------------------------------------------------------------


def json_values(
    first: st.SearchStrategy[Any] | None = None, *, text_size: int = 12, max_leaves: int = 16
) -> st.SearchStrategy[Any]:
    """Any JSON value but NaN: `first` (default: null), booleans, integers, floats and text, nested
    in lists and objects."""
    scalars = (
        (st.none() if first is None else first)
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False)
        | st.text(max_size=text_size)
    )
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=max_leaves,
    )


JSON = json_values()


def encoded(values: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    """The values as JSON bodies."""
    return values.map(lambda value: json.dumps(value).encode())


def odd_values(*vendor_words: object) -> list[object]:
    """Values that trip careless parsers: an address, blanks, the vendor's own words (its event
    names, a valid time), a lone surrogate, a boolean, zero, a huge float, null, and two times that
    UTC cannot write."""
    return [
        *("a@b.co", "", " ", *vendor_words, "\ud800", True, 0, 1e308, None),
        *("9999-12-31T23:00:00-05:00", "0001-01-01T00:00:00+05:00"),  # out of range in UTC
    ]


# --- damaged fixtures -----------------------------------------------------------------------------


def truncated_and_flipped(data: st.DataObject, body: bytes) -> bytes:
    """The body cut at a drawn length, then up to three of its bytes replaced."""
    damaged = bytearray(body)
    damaged = damaged[: data.draw(st.integers(0, len(damaged)))]
    for _ in range(data.draw(st.integers(0, 3))):
        if damaged:
            damaged[data.draw(st.integers(0, len(damaged) - 1))] = data.draw(st.integers(0, 255))
    return bytes(damaged)


def cut_and_overwritten(body: bytes, cut: int, noise: bytes) -> tuple[bytes, bytes]:
    """The body cut at `cut`, and the body with `noise` written over it from `cut` on."""
    return body[:cut], body[:cut] + noise + body[cut + len(noise) :]


def slots(node: object) -> Iterator[tuple[Any, Any]]:
    """Every (container, key or index) of a JSON document, depth first."""
    if isinstance(node, dict):
        items: Iterable[tuple[Any, Any]] = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        return
    for key, child in items:
        yield node, key
        yield from slots(child)


@st.composite
def mutated_documents(
    draw: st.DrawFn, docs: Sequence[object], values: st.SearchStrategy[Any]
) -> bytes:
    """One of the documents with one to three slots replaced by drawn values, maybe truncated."""
    doc = copy.deepcopy(draw(st.sampled_from(docs)))
    places = list(slots(doc))
    for _ in range(draw(st.integers(1, 3))):
        parent, key = draw(st.sampled_from(places))
        parent[key] = draw(values)
    body = json.dumps(doc).encode()
    return body[: draw(st.integers(0, len(body)))] if draw(st.booleans()) else body


def json_fixtures(folder: Path) -> list[object]:
    """The folder's JSON fixtures, parsed; signature vectors left out (they are no deliveries)."""
    return [json.loads(p.read_bytes()) for p in folder.glob("*.json") if "signature" not in p.name]


def odd_bodies(docs: Sequence[object], odd: Sequence[object]) -> st.SearchStrategy[bytes]:
    """Random bytes, random JSON salted with the odd values, and the documents with a few slots
    replaced by such JSON (maybe truncated)."""
    values = json_values(st.sampled_from(odd), text_size=20, max_leaves=12)
    return st.binary(max_size=400) | encoded(values) | mutated_documents(docs, values)


def every_slot_replaced(docs: Iterable[object], values: Sequence[object]) -> Iterator[bytes]:
    """Exhaustive where random mutation is thin: each slot of each document, each value."""
    for doc in docs:
        for index in range(len(list(slots(doc)))):
            for value in values:
                copied = copy.deepcopy(doc)
                parent, key = list(slots(copied))[index]
                parent[key] = value
                yield json.dumps(copied).encode()


# --- what a source must do with anything ----------------------------------------------------------


def assert_parses_or_refuses(parse: Parser, delivery: Delivery) -> None:
    """Parsed or BadPayload, nothing else; every event writable as the store writes it."""
    try:
        result = parse(delivery)
    except BadPayload:
        return
    assert isinstance(result, Parsed), result
    for event in result.events:
        json.dumps(event.to_dict())  # what the store writes


def assert_verifies_or_refuses(
    verify: Verifier,
    delivery: Delivery,
    secret: str | None,
    refusals: tuple[type[Exception], ...] = (SignatureError,),
) -> None:
    """Verified, or refused with one of `refusals`; nothing else."""
    with contextlib.suppress(*refusals):
        verify(delivery, secret)


def mapped_events(result: Parsed) -> list[dict[str, Any]]:
    """The events of a delivery that had nothing ignored or unusable, as the store writes them."""
    assert (result.ignored, result.unusable) == (0, []), result
    return [event.to_dict() for event in result.events]


def only_event(result: Parsed) -> dict[str, Any]:
    (event,) = mapped_events(result)
    return event


# --- through the web app --------------------------------------------------------------------------


def web_client(
    monkeypatch: pytest.MonkeyPatch,
    redis_url: str,
    source: InboundSource,
    secret: str | None,
    **config: object,
) -> FlaskClient:
    """A fresh app with `source` registered and `secret` as its secret (None: none set)."""
    monkeypatch.setitem(connectors.SOURCES, source.name, source)
    secrets = {} if secret is None else {source.name: secret}
    return create_app({"redis_url": redis_url, "webhook_secrets": secrets, **config}).test_client()


def post_webhook(
    client: FlaskClient,
    source: str,
    body: bytes,
    headers: Mapping[str, str] | None = None,
    content_type: str = "application/json",
) -> TestResponse:
    """POST `body` to /webhooks/<source> with the headers (names in any case) and content type."""
    sent = {name.lower(): value for name, value in (headers or {}).items()}
    sent["content-type"] = content_type
    return client.post(f"/webhooks/{source}", data=body, headers=sent)


def post_basic(
    client: FlaskClient,
    source: str,
    body: bytes,
    secret: str,
    content_type: str,
    user: str = "webhook",
) -> TestResponse:
    """POST as a vendor that does not sign: HTTP Basic auth with the secret as the password."""
    authorization = {"authorization": basic_auth_header(secret, user)}
    return post_webhook(client, source, body, authorization, content_type)


def counts(accepted=0, duplicates=0, ignored=0, quarantined=0, events=()) -> dict[str, object]:
    """The JSON body of a webhook answer."""
    return {
        "accepted": accepted,
        "duplicates": duplicates,
        "ignored": ignored,
        "quarantined": quarantined,
        "events": list(events),
    }


def tally(response: TestResponse) -> tuple[int, int, int, int]:
    """An answer's accepted, duplicates, ignored and quarantined counts."""
    body = response.json
    return body["accepted"], body["duplicates"], body["ignored"], body["quarantined"]


def quarantined(client: FlaskClient, source: str | None = None) -> list[dict[str, Any]]:
    """What the app's store quarantined: from `source` only (the database may be shared), or all."""
    kept = client.application.extensions["lifecycle"].store.quarantined()
    return [item for item in kept if source is None or item["source"] == source]


def assert_unconfigured(response: TestResponse, env_var: str) -> None:
    """A source without its secret is unknown (404), and the answer names the variable to set."""
    assert (response.status_code, response.json["error"]) == (404, "unknown_source"), response.json
    assert env_var in response.json["detail"], response.json
