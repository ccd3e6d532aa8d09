"""Whatever arrives, parse and verify return (a Parsed, None) or refuse with BadPayload,
SignatureError or the not-configured 404: never any other exception."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from pathlib import Path
from xml.sax.saxutils import escape

from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.base.inbound import BadPayload, Delivery, Parsed, SignatureError
from connectors.base.signatures import basic_auth_header
from connectors.salesforce.inbound import OrgNotConfigured, parse, verify

FIXTURES = Path(__file__).parents[1] / "fixtures"
MESSAGES = sorted(FIXTURES.glob("*.xml"))
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
ORG = "00D5g000004TuVwEAK"
FIELDS = (
    "Id", "Email", "Status", "Lifecycle_Stage__c", "LastModifiedDate", "CreatedDate", "TaskSubtype",
    "CallDisposition", "CallType", "CallDurationInSeconds", "WhoId", "CompletedDateTime",
)  # fmt: skip
values = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        ["Call", "Email", "2026-11-26T10:00:00Z", "0001-01-01T00:00:00+14:00", "bad-time", "42"]
    ),
)


@st.composite
def messages(draw) -> bytes:
    """Outbound messages with arbitrary object types, fields and values."""
    notes = []
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["Lead", "Contact", "Task", "Opportunity", ""]))
        fields = draw(st.dictionaries(st.sampled_from(FIELDS), values, max_size=6))
        inner = "".join(f"<sf:{k}>{escape(v)}</sf:{k}>" for k, v in fields.items())
        note_id = draw(st.sampled_from(["04l5g00000MnOpQAAV", ""]))
        notes.append(
            f'<Notification><Id>{note_id}</Id><sObject xsi:type="sf:{kind}" '
            f'xmlns:sf="urn:sobject.enterprise.soap.sforce.com">{inner}</sObject></Notification>'
        )
    return (
        '<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><e:Body>'
        f'<notifications xmlns="http://soap.sforce.com/2005/09/outbound">'
        f"<OrganizationId>{ORG}</OrganizationId>{''.join(notes)}</notifications></e:Body></e:Envelope>"
    ).encode()


def parse_only(body: bytes) -> None:
    try:
        result = parse(Delivery("salesforce", {}, body, NOW))
    except BadPayload:
        return
    assert isinstance(result, Parsed)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes(body):
    parse_only(body)


@settings(max_examples=200, deadline=None)
@given(messages())
def test_random_messages(body):
    parse_only(body)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_truncated_and_mutated_fixtures(data):
    raw = data.draw(st.sampled_from(MESSAGES)).read_bytes()
    cut = data.draw(st.integers(0, len(raw)))
    tail = raw[cut + 1 :] if data.draw(st.booleans()) else b""
    parse_only(raw[:cut] + data.draw(st.binary(max_size=4)) + tail)


@settings(max_examples=200, deadline=None)
@given(
    body=messages() | st.binary(max_size=200),
    auth=st.one_of(st.text(max_size=40), st.just(basic_auth_header("om-secret"))),
    org=st.one_of(st.just(ORG), st.text(max_size=20)),
    secret=st.one_of(st.none(), st.just("om-secret")),
)
def test_verify_only_passes_or_refuses(body, auth, org, secret):
    config = {"salesforce_org_id": org}
    delivery = Delivery("salesforce", {"authorization": auth}, body, NOW, config=config)
    with contextlib.suppress(SignatureError, BadPayload, OrgNotConfigured):
        verify(delivery, secret)
