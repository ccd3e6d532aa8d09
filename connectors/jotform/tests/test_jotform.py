"""Jotform: one test per fixture, HTTP Basic auth, the web contract, and fuzzing."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.base.inbound import BadPayload, Delivery, Parsed, SignatureError
from connectors.base.signatures import basic_auth_header
from connectors.jotform.inbound import SOURCE, parse, redact_credentials, verify
from connectors.testing import (
    FUZZ,
    JSON,
    assert_parses_or_refuses,
    assert_unconfigured,
    assert_verifies_or_refuses,
    counts,
    only_event,
    post_basic,
    post_webhook,
    quarantined,
    truncated_and_flipped,
    web_client,
)

FIXTURES = Path(__file__).parent.parent / "fixtures"
SECRET = "jotform-test-secret"
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
BOUNDARIES = {
    "submission__zulip_capture.multipart": "------------------------J1JNT4vbVO4FCC1qLG4HSv",
    "submission__with_email.multipart": "------------------------7Qm2Xc9LkP4sVb1RtY8nWe",
    "submission__address_only.multipart": "------------------------7Qm2Xc9LkP4sVb1RtY8nWe",
}


def raw(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def content_type(name: str) -> str:
    return f"multipart/form-data; boundary={BOUNDARIES[name]}"


def delivery(body: bytes, content: str, auth: str | None = None) -> Delivery:
    headers = {"content-type": content, **({"authorization": auth} if auth else {})}
    return Delivery("jotform", headers, body, NOW)


def parsed(name: str) -> Parsed:
    return parse(delivery(raw(name), content_type(name)))


def event_of(name: str) -> dict:
    return only_event(parsed(name))


# --- one test per fixture -------------------------------------------------------------------------


def test_submission__zulip_capture():
    result = parsed("submission__zulip_capture.multipart")
    assert (result.events, result.ignored) == ([], 0)
    (unusable,) = result.unusable
    assert unusable.reason.startswith("no email")
    assert (unusable.item["submissionID"], unusable.item["formTitle"]) == (
        "6084250982513018472",
        "Tutor Appointment Form",
    )
    assert json.loads(unusable.item["rawRequest"])["q3_studentsName"] == {
        "first": "Niloth",
        "last": "P",
    }


def test_submission__with_email():
    assert event_of("submission__with_email.multipart") == {
        "id": "jotform:6101234567890123456",
        "type": "form_submitted",
        "email": "zoe.lee@example.com",
        "occurred_at": "2026-11-26T12:00:00Z",  # Jotform sends no submission time
        "source": "jotform",
        "properties": {
            "form": "251234567890123",
            "form_name": "Demo Request",
            "fields": {
                "fullName": {"first": "Zoë", "last": "Lee"},
                "email": "Zoe.Lee@Example.com",
                "company": "Acme, Inc.",
                "referredBy": "friend@example.net",
                "interest": ["Analytics", "API"],
                "message": "Call me: mornings, please",
            },
        },
    }


def test_submission__address_only():
    assert event_of("submission__address_only.multipart") == {
        "id": "jotform:6101234567890999999",
        "type": "form_submitted",
        "email": "bo@example.org",
        "occurred_at": "2026-11-26T12:00:00Z",
        "source": "jotform",
        "properties": {
            "form": "251234567890999",
            "form_name": "Newsletter Signup",
            "fields": {
                "name": {"first": "Bo", "last": "Chen"},
                "contact": " bo@example.org ",
                "newsletter": "Yes",
            },
        },
    }


# --- HTTP Basic auth (Jotform does not sign) ------------------------------------------------------


def test_right_password_with_any_user_name_verifies():
    for user in ("jotform", "any", ""):
        verify(delivery(b"", "multipart/form-data", basic_auth_header(SECRET, user)), SECRET)


@pytest.mark.parametrize(
    ("auth", "words"),
    [
        (None, "HTTP Basic credentials required"),
        ("Bearer " + SECRET, "HTTP Basic credentials required"),
        ("Basic", "HTTP Basic credentials required"),
        ("Basic !!!", "malformed"),
        (basic_auth_header("wrong-secret"), "wrong HTTP Basic credentials"),
        (basic_auth_header(SECRET)[:-1], "malformed"),
    ],
)
def test_missing_or_wrong_credentials_fail(auth, words):
    with pytest.raises(SignatureError, match=words) as caught:
        verify(delivery(b"", "multipart/form-data", auth), SECRET)
    assert SECRET not in str(caught.value)


def test_unsigned_allowed_only_without_a_secret():
    verify(delivery(b"", "multipart/form-data"), None)  # only with ALLOW_UNSIGNED_WEBHOOKS=1


# --- parsing edge cases ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content"),
    [
        (b"", "multipart/form-data; boundary=b"),
        (b"formID=1&submissionID=2", "multipart/form-data; boundary=b"),
        (b"--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--\r\n", "multipart/form-data"),
        (b"--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--\r\n", "multipart/form-data; b"),
        (b"--b\r\n\r\nx\r\n--b--\r\n", "multipart/form-data; boundary=b"),
        (b"--b\r\n\r\nx\r\n--b--\r\n", "multipart/form-data; boundary=b\r\nX-Injected: 1"),
        (b'{"formID": 1}', "application/json"),
    ],
)
def test_unreadable_multipart_is_a_bad_payload(body, content):
    with pytest.raises(BadPayload):
        parse(delivery(body, content))


def multipart(**fields: str) -> bytes:
    parts = [
        f'--b\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
        for k, v in fields.items()
    ]
    return ("".join(parts) + "--b--\r\n").encode()


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"formID": "1"}, "submissionID is missing"),
        ({"submissionID": "9"}, "rawRequest is missing"),
        ({"submissionID": "9", "rawRequest": "[1]"}, "rawRequest is missing"),
        ({"submissionID": "9", "rawRequest": '{"q1_a": NaN}'}, "rawRequest is missing"),
        ({"submissionID": "9", "rawRequest": '{"email": "a@b.co"}'}, "no email"),  # not an answer
        ({"submissionID": "9", "rawRequest": '{"q1_a": "a@b.co", "q2_b": "c@d.co"}'}, "no email"),
    ],
)
def test_unusable_submissions_are_kept(fields, reason):
    (unusable,) = parse(delivery(multipart(**fields), "multipart/form-data; boundary=b")).unusable
    assert unusable.reason.startswith(reason)


def test_kept_body_loses_the_credentials_of_the_echoed_webhook_url():
    body = raw("submission__with_email.multipart").replace(b"@Example.com", b"")
    body = body.replace(b"friend@example.net", b"a friend")
    result = parse(delivery(body, content_type("submission__with_email.multipart")))
    assert result.unusable and result.keep is not None
    assert SECRET.encode() not in result.keep
    assert b"https://jotform:***@lifecycle.example.com/webhooks/jotform" in result.keep
    assert result.keep == redact_credentials(body)
    assert result.unusable[0].item["webhookURL"].startswith("https://jotform:***@")
    replayed = parse(delivery(result.keep, content_type("submission__with_email.multipart")))
    assert replayed.unusable[0].item["submissionID"] == "6101234567890123456"


# --- through the web app --------------------------------------------------------------------------


@pytest.fixture
def client(redis_url, redis_client, monkeypatch):
    return web_client(monkeypatch, redis_url, SOURCE, SECRET)


def post(client, name: str | None = None, *, body=None, content=None, secret=SECRET):
    data = raw(name) if body is None else body
    content = content_type(name) if content is None else content
    return post_basic(client, "jotform", data, secret, content, user="jotform")


def test_web_accepts_then_dedupes_a_resent_submission(client):
    ids = ["jotform:6101234567890123456"]
    first = post(client, "submission__with_email.multipart")
    assert (first.status_code, first.json) == (202, counts(1, events=ids))
    again = post(client, "submission__with_email.multipart")
    assert (again.status_code, again.json) == (202, counts(duplicates=1, events=ids))


def test_web_quarantines_a_submission_without_email(client):
    response = post(client, "submission__zulip_capture.multipart")
    assert (response.status_code, response.json) == (202, counts(quarantined=1))
    (kept,) = quarantined(client, "jotform")  # a shared Redis: ours only
    assert (kept["source"], kept["body"]) == ("jotform", raw("submission__zulip_capture.multipart"))
    assert kept["reason"].startswith("no email")
    assert "authorization" not in json.loads(kept["headers"])


@pytest.mark.parametrize(
    ("change", "status", "error"),
    [
        ({"secret": "wrong-secret"}, 401, "bad_signature"),
        ({"body": b"not multipart at all"}, 400, "bad_payload"),
        ({"body": b"x" * (2 * 1024 * 1024 + 1)}, 413, "payload_too_large"),
        ({"content": "application/x-www-form-urlencoded"}, 415, "unsupported_media_type"),
    ],
)
def test_web_refusals(client, change, status, error):
    response = post(client, "submission__with_email.multipart", **change)
    assert (response.status_code, response.json["error"]) == (status, error)
    assert response.json["detail"]


def test_web_missing_credentials_is_401(client):
    name = "submission__with_email.multipart"
    response = post_webhook(client, "jotform", raw(name), content_type=content_type(name))
    assert (response.status_code, response.json["error"]) == (401, "bad_signature")


def test_web_unset_secret_is_404(redis_url, redis_client, monkeypatch):
    client = web_client(monkeypatch, redis_url, SOURCE, None, allow_unsigned_webhooks=False)
    response = post(client, "submission__with_email.multipart")
    assert_unconfigured(response, "JOTFORM_WEBHOOK_SECRET")


# --- fuzzing: only Parsed, BadPayload or SignatureError; never a 500 ------------------------------

ANSWER_NAMES = st.sampled_from(["q1_email", "q2_workEmail", "q3_name", "email", "slug"])
ANSWERS = st.dictionaries(ANSWER_NAMES | st.text(max_size=8), st.emails() | JSON, min_size=1)
RAW_REQUEST = ANSWERS.map(json.dumps) | ANSWERS.map(json.dumps) | JSON.map(json.dumps)
FIELD_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
SHAPED = st.fixed_dictionaries(
    {"submissionID": st.from_regex(r"\A[0-9]{19}\Z") | FIELD_TEXT, "rawRequest": RAW_REQUEST},
    optional={"formID": FIELD_TEXT, "formTitle": FIELD_TEXT, "pretty": FIELD_TEXT},
).map(lambda fields: multipart(**fields))
PRINTABLE = st.characters(min_codepoint=32, max_codepoint=126)
CONTENT_TYPES = st.just("multipart/form-data; boundary=b") | st.text(PRINTABLE, max_size=60)


def mutated(data: st.DataObject) -> tuple[bytes, str]:
    name = data.draw(st.sampled_from(sorted(BOUNDARIES)))
    return truncated_and_flipped(data, raw(name)), content_type(name)


@FUZZ
@given(body=st.binary(max_size=512) | SHAPED, content=CONTENT_TYPES | st.text(max_size=30))
def test_fuzz_parse(body, content):
    assert_parses_or_refuses(parse, delivery(body, content))


@FUZZ
@given(data=st.data())
def test_fuzz_parse_mutated_fixture(data):
    assert_parses_or_refuses(parse, delivery(*mutated(data)))


@FUZZ
@given(auth=st.text(max_size=60) | st.binary(max_size=40).map(lambda b: "Basic " + b.hex()))
def test_fuzz_verify(auth):
    assert_verifies_or_refuses(verify, delivery(b"", "multipart/form-data", auth), SECRET)


def test_fuzz_web_never_500(client):
    @FUZZ
    @given(body=st.binary(max_size=512) | SHAPED, content=CONTENT_TYPES, data=st.data())
    def check(body, content, data):
        if data.draw(st.booleans()):
            body, content = mutated(data)
        response = post(client, body=body, content=content)
        assert response.status_code in (202, 400, 415), response.json

    check()
