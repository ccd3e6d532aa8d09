"""POST /webhooks/hubspot through the real app on a real Redis: counts, retries as duplicates,
every refusal as JSON, quarantine, and a record id learned from a workflow post resolving a
Webhooks API event in the worker."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import connectors
from connectors.hubspot.inbound import SOURCE, sign_v1, sign_v2, signed_headers
from engine.pipeline import Runtime, build_runtime, drain_events
from engine.web import create_app

SECRET = "a1b2c3d4-e5f6-4711-8899-aabbccddeeff"
TOKEN = "test-token-123"
FIXTURES = Path(__file__).parents[1] / "fixtures"
URL = "http://localhost/webhooks/hubspot"


@pytest.fixture
def app(redis_url, redis_client, monkeypatch):
    monkeypatch.setitem(connectors.SOURCES, "hubspot", SOURCE)
    return create_app(
        {
            "redis_url": redis_url,
            "api_token": TOKEN,
            "hubspot_client_secret": SECRET,
            "rules_file": "rules.yaml",
        }
    )


@pytest.fixture
def client(app):
    return app.test_client()


def post(client, body: bytes, query: str = "", headers=None, secret: str = SECRET):
    signed = signed_headers(secret, URL + query, body, datetime.now(UTC))
    return client.post(
        "/webhooks/hubspot" + query, data=body, headers={**signed, **(headers or {})}
    )


def kept_deliveries(app) -> list[dict]:
    """This source's quarantined deliveries (the test database may be shared)."""
    found = app.extensions["lifecycle"].store.quarantined()
    return [q for q in found if q["source"] == "hubspot"]


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def counts(response) -> tuple[int, int, int, int]:
    body = response.json
    return body["accepted"], body["duplicates"], body["ignored"], body["quarantined"]


def test_a_batch_is_accepted_with_counts(client):
    response = post(client, fixture("contact.propertyChange__lifecyclestage.json"))
    assert response.status_code == 202
    assert counts(response) == (2, 0, 1, 0)
    assert response.json["events"] == [
        "hubspot-62515-1702930155-51-1795687200000-lifecyclestage",
        "hubspot-62515-1702930156-52-1795687260000-lifecyclestage",
    ]


def test_the_vendors_retry_is_a_duplicate(client):
    batch = json.loads(fixture("deal.propertyChange__dealstage.json"))
    assert counts(post(client, json.dumps(batch).encode())) == (3, 0, 1, 0)
    for item in batch:
        item["attemptNumber"] = 1  # HubSpot's retry: same events, next attempt
    assert counts(post(client, json.dumps(batch).encode())) == (0, 3, 1, 0)


def test_a_workflow_retry_is_a_duplicate(client):
    body = fixture("workflow-webhook-contact-legacy-format.json")
    first = post(client, body, "?event=form_submitted")
    assert counts(first) == (1, 0, 0, 0)
    again = post(client, body, "?event=form_submitted")
    assert counts(again) == (0, 1, 0, 0)
    assert again.json["events"] == first.json["events"]


def test_workflow_posts_signed_v1_and_v2(client):
    body = fixture("workflow__v3_object.json")
    query = "?event=meeting_booked"
    v2 = {"X-HubSpot-Signature": sign_v2(SECRET, "POST", URL + query, body)}
    response = client.post(
        "/webhooks/hubspot" + query,
        data=body,
        headers={**v2, "X-HubSpot-Signature-Version": "v2", "Content-Type": "application/json"},
    )
    assert counts(response) == (1, 0, 0, 0)
    v1 = {"X-HubSpot-Signature": sign_v1(SECRET, body), "X-HubSpot-Signature-Version": "v1"}
    response = client.post(
        "/webhooks/hubspot", data=body, headers={**v1, "Content-Type": "application/json"}
    )
    assert counts(response) == (1, 0, 0, 0)  # form_submitted this time: another event


def test_behind_a_proxy(client):
    body = fixture("contact.propertyChange__hs_lead_status.json")
    outside = "https://lifecycle.example.com/webhooks/hubspot"
    headers = {
        **signed_headers(SECRET, outside, body, datetime.now(UTC)),
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "lifecycle.example.com",
    }
    response = client.post("/webhooks/hubspot", data=body, headers=headers)
    assert (response.status_code, response.json["accepted"]) == (202, 2)


def test_bad_signature_is_401(client):
    response = post(client, fixture("deal.creation__derived.json"), secret="not-the-secret")
    assert (response.status_code, response.json["error"]) == (401, "bad_signature")
    assert SECRET not in response.get_data(as_text=True)


def test_unsigned_is_401(client):
    response = client.post("/webhooks/hubspot", data=b"[]", content_type="application/json")
    assert response.status_code == 401
    assert "X-HubSpot-Signature-v3" in response.json["detail"]


def test_unparsable_is_400(client):
    response = post(client, b"[{not json")
    assert (response.status_code, response.json["error"]) == (400, "bad_payload")
    assert post(client, b'"a string"').status_code == 400


def test_too_large_is_413(client):
    response = client.post(
        "/webhooks/hubspot",
        data=b"[" + b" " * (4 * 1024 * 1024) + b"]",
        content_type="application/json",
    )
    assert (response.status_code, response.json["error"]) == (413, "payload_too_large")


def test_wrong_content_type_is_415(client):
    body = fixture("deal.creation__derived.json")
    response = post(client, body, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert (response.status_code, response.json["error"]) == (415, "unsupported_media_type")


def test_unset_secret_is_404_naming_the_variable(redis_url, redis_client, monkeypatch):
    monkeypatch.setitem(connectors.SOURCES, "hubspot", SOURCE)
    app = create_app({"redis_url": redis_url, "webhook_secrets": {"hubspot": "ignored"}})
    response = post(app.test_client(), fixture("deal.creation__derived.json"))
    assert (response.status_code, response.json["error"]) == (404, "unknown_source")
    assert "HUBSPOT_CLIENT_SECRET" in response.json["detail"]


def test_kinds_we_do_not_map_are_ignored(client):
    response = post(client, fixture("webhooks-api.contact.creation.docs-example.json"))
    assert (response.status_code, counts(response)) == (202, (0, 0, 1, 0))


def test_unusable_items_are_quarantined_and_kept(client, app):
    batch = json.loads(fixture("contact.propertyChange__lifecyclestage.json"))
    del batch[0]["objectId"]
    body = json.dumps(batch).encode()
    response = post(client, body)
    assert (response.status_code, counts(response)) == (202, (1, 0, 1, 1))
    (kept,) = kept_deliveries(app)
    assert kept["source"] == "hubspot" and kept["body"] == body
    assert "record id must be a number" in kept["reason"]


@pytest.mark.parametrize(
    ("query", "body", "reason"),
    [
        ("?event=Meeting-Booked", b'{"vid": 71}', "snake_case"),
        ("?event=form_submitted", b'{"properties": {"email": {"value": "nobody"}}}', "no email"),
        ("", b'{"objectId": 9876543210, "properties": {"dealstage": "closedwon"}}', "no email"),
    ],
)
def test_unusable_workflow_posts_are_quarantined(client, app, query, body, reason):
    response = post(client, body, query)
    assert (response.status_code, counts(response)) == (202, (0, 0, 0, 1))
    (kept,) = kept_deliveries(app)
    assert reason in kept["reason"]


def test_the_worker_resolves_record_ids_learned_from_a_workflow_post(client, app, redis_client):
    Runtime.install(build_runtime(app.extensions["lifecycle"].settings, redis_client))
    try:
        assert post(client, fixture("workflow__v3_object.json")).json["accepted"] == 1
        batch = json.loads(fixture("object.propertyChange__contact_lifecyclestage.json"))
        batch[0]["objectId"] = 151  # the contact the workflow post named
        assert post(client, json.dumps(batch).encode()).json["accepted"] == 1
        drain_events()
    finally:
        Runtime._current = None
    view = client.get(
        "/api/contacts/ann.lee@example.com", headers={"Authorization": f"Bearer {TOKEN}"}
    ).json
    assert view["crm_ids"] == {"hubspot": "151"}
    assert view["stage"] == "sales_qualified_lead"
    assert [e["type"] for e in view["timeline"]] == ["form_submitted", "crm_stage_changed"]


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.one_of(
        st.binary(max_size=300),
        st.sampled_from(sorted(p.name for p in FIXTURES.glob("*.json"))).map(
            lambda n: fixture(n)[: len(fixture(n)) // 2]
        ),
    ),
    query=st.sampled_from(["", "?event=meeting_booked", "?event=%00", "?event="]),
)
def test_no_body_ever_gets_a_500(client, body, query):
    response = post(client, body, query)
    assert response.status_code in (202, 400), response.get_data(as_text=True)
