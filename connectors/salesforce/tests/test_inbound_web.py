"""POST /webhooks/salesforce through the real app on a real Redis: the SOAP acknowledgement,
retries as duplicates, refusals as JSON, quarantine without the session id, never a 500."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import connectors
from connectors.base.signatures import basic_auth_header
from connectors.salesforce.inbound import ACK, SOURCE
from engine.web import create_app

SECRET = "om-secret-6f1d2c"
ORG = "00D5g000004TuVwEAK"
FIXTURES = Path(__file__).parents[1] / "fixtures"
AUTH = {"Authorization": basic_auth_header(SECRET, user="salesforce")}


def make_app(redis_url: str, monkeypatch, **settings_):
    monkeypatch.setitem(connectors.SOURCES, "salesforce", SOURCE)
    return create_app({"redis_url": redis_url, **settings_})


@pytest.fixture
def app(redis_url, redis_client, monkeypatch):
    return make_app(
        redis_url,
        monkeypatch,
        webhook_secrets={"salesforce": SECRET},
        salesforce_org_id=ORG,
    )


@pytest.fixture
def client(app):
    return app.test_client()


def post(client, body: bytes, headers=None, content_type="text/xml; charset=utf-8"):
    return client.post(
        "/webhooks/salesforce",
        data=body,
        headers={**AUTH, "Content-Type": content_type, "SOAPAction": '""', **(headers or {})},
    )


def kept_deliveries(app) -> list[dict]:
    """This source's quarantined deliveries (the test database may be shared)."""
    found = app.extensions["lifecycle"].store.quarantined()
    return [q for q in found if q["source"] == "salesforce"]


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def metrics(app) -> Counter[str]:
    """Delivery counts of this source (the store keeps no zero counts)."""
    found = app.extensions["lifecycle"].store.metrics()
    return Counter({k.partition("|")[0]: v for k, v in found.items() if k.endswith("|salesforce")})


def test_a_verified_message_is_acknowledged_in_soap(client, app):
    response = post(client, fixture("Task__call.xml"))
    assert response.status_code == 200
    assert response.mimetype == "text/xml"
    assert response.get_data(as_text=True) == ACK
    assert "<Ack>true</Ack>" in ACK and "notificationsResponse" in ACK
    counts = metrics(app)
    assert (counts["accepted"], counts["ignored"], counts["quarantined"]) == (2, 1, 0)


def test_a_redelivery_is_a_duplicate_and_acknowledged_again(client, app):
    assert post(client, fixture("Lead__stage_and_status.xml")).status_code == 200
    again = post(client, fixture("Lead__stage_and_status.xml"))
    assert (again.status_code, again.get_data(as_text=True)) == (200, ACK)
    assert (metrics(app)["accepted"], metrics(app)["duplicate"]) == (2, 2)


def test_bad_credentials_are_401_json(client):
    response = post(client, fixture("Lead__status.xml"), headers={"Authorization": "Basic eDp5"})
    assert (response.status_code, response.json["error"]) == (401, "bad_signature")
    assert SECRET not in response.get_data(as_text=True)


def test_another_org_is_401(client):
    body = fixture("Lead__status.xml").replace(ORG.encode(), b"00D5g000004TuVxEAK")
    response = post(client, body)
    assert (response.status_code, response.json["error"]) == (401, "bad_signature")
    assert "00D5g000004TuVxEAK" in response.json["detail"]


def test_unparsable_is_400(client):
    response = post(client, b"<soapenv:Envelope")
    assert (response.status_code, response.json["error"]) == (400, "bad_payload")


def test_a_dtd_is_400(client):
    response = post(client, b'<!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>')
    assert (response.status_code, response.json["error"]) == (400, "bad_payload")


def test_too_large_is_413(client):
    response = post(client, b"<x>" + b" " * (4 * 1024 * 1024) + b"</x>")
    assert (response.status_code, response.json["error"]) == (413, "payload_too_large")


def test_wrong_content_type_is_415(client):
    response = post(client, fixture("Lead__status.xml"), content_type="application/json")
    assert (response.status_code, response.json["error"]) == (415, "unsupported_media_type")


def test_unset_secret_is_404(redis_url, redis_client, monkeypatch):
    app = make_app(redis_url, monkeypatch, salesforce_org_id=ORG)
    response = post(app.test_client(), fixture("Lead__status.xml"))
    assert (response.status_code, response.json["error"]) == (404, "unknown_source")
    assert "SALESFORCE_WEBHOOK_SECRET" in response.json["detail"]


def test_unset_org_is_404(redis_url, redis_client, monkeypatch):
    app = make_app(redis_url, monkeypatch, webhook_secrets={"salesforce": SECRET})
    response = post(app.test_client(), fixture("Lead__status.xml"))
    assert (response.status_code, response.json["error"]) == (404, "unknown_source")
    assert "SALESFORCE_ORG_ID" in response.json["detail"]


def test_objects_we_do_not_map_are_ignored_and_acknowledged(client, app):
    body = fixture("om_contact_minimal_nil_session.xml").replace(
        b"someOrganizationId", ORG.encode()
    )
    response = post(client, body)
    assert (response.status_code, response.get_data(as_text=True)) == (200, ACK)
    assert (metrics(app)["accepted"], metrics(app)["ignored"]) == (0, 1)


def test_a_call_without_whoid_is_quarantined_without_the_session_id(client, app):
    body = (
        fixture("Task__call.xml")
        .replace(b"<sf:WhoId>00Q5g00000AbCdEEAV</sf:WhoId>", b"")
        .replace(b'<SessionId xsi:nil="true"/>', b"<SessionId>00D5g!AQ4AQSecretSession</SessionId>")
    )
    response = post(client, body)
    assert (response.status_code, response.get_data(as_text=True)) == (200, ACK)
    assert (metrics(app)["accepted"], metrics(app)["quarantined"]) == (1, 1)
    (kept,) = kept_deliveries(app)
    assert "Call task without WhoId" in kept["reason"]
    assert b"AQ4AQSecretSession" not in kept["body"] and b"[redacted]" in kept["body"]
    assert "authorization" not in kept["headers"].lower()


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.one_of(
        st.binary(max_size=300),
        st.sampled_from(sorted(p.name for p in FIXTURES.glob("*.xml"))).map(
            lambda n: fixture(n)[: len(fixture(n)) // 2]
        ),
        st.sampled_from(sorted(p.name for p in FIXTURES.glob("*.xml"))).map(fixture),
    )
)
def test_no_body_ever_gets_a_500(client, body):
    response = post(client, body)
    assert response.status_code in (200, 400, 401), response.get_data(as_text=True)
