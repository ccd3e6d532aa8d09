"""Attempts to get unverified input accepted: duplicate headers, extra signatures, empty secrets,
algorithm confusion, downgrades. Each must end in a refusal (or the one legitimate reading)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime

import pytest

from connectors.hubspot.inbound import signed_headers as hubspot_signed
from connectors.standard.inbound import signed_headers
from connectors.typeform.inbound import sign as typeform_sign
from engine.web import create_app

STANDARD = "whsec_" + base64.b64encode(b"standard-secret-for-abuse-tests").decode()
TYPEFORM = "typeform-secret-for-abuse"
HUBSPOT = "hubspot-client-secret-for-abuse"


@pytest.fixture
def client(redis_url, redis_client):
    app = create_app(
        {
            "redis_url": redis_url,
            "webhook_secrets": {"standard": STANDARD, "typeform": TYPEFORM},
            "hubspot_client_secret": HUBSPOT,
        }
    )
    return app.test_client()


def standard_body(id_: str = "abuse-1") -> bytes:
    return json.dumps(
        {
            "id": id_,
            "type": "webinar_attended",
            "email": "ann@example.com",
            "occurred_at": "2026-11-26T10:00:00Z",
            "properties": {},
        }
    ).encode()


def signed(body: bytes, msg: str = "m1") -> dict[str, str]:
    return signed_headers(STANDARD, msg, body, datetime.now(UTC))


def test_a_signature_header_sent_twice_is_refused(client):
    # WSGI joins repeated headers with ", "; the joined value is no valid signature list.
    body = standard_body()
    headers = signed(body)
    good = headers.pop("webhook-signature")
    pairs = [*headers.items(), ("webhook-signature", good), ("webhook-signature", "v1,AAAA")]
    response = client.post("/webhooks/standard", data=body, headers=pairs)
    assert response.status_code == 401


def test_header_names_are_case_insensitive(client):
    body = standard_body()
    headers = {k.upper(): v for k, v in signed(body).items()}
    assert client.post("/webhooks/standard", data=body, headers=headers).status_code == 202


def test_key_rotation_accepts_one_valid_signature_among_several(client):
    body = standard_body()
    headers = signed(body)
    headers["webhook-signature"] = f"v1,AAAA v1a,BBBB {headers['webhook-signature']}"
    assert client.post("/webhooks/standard", data=body, headers=headers).status_code == 202


@pytest.mark.parametrize(
    "signature",
    ["", "v1,", "v1", ",", "v1a,anything", "v2,AAAA", "v1,AAAA v1,BBBB", " v1,\t"],
)
def test_no_valid_signature_means_401(client, signature):
    body = standard_body()
    headers = {**signed(body), "webhook-signature": signature}
    response = client.post("/webhooks/standard", data=body, headers=headers)
    assert response.status_code == 401, response.json


def test_a_signature_for_another_message_id_is_refused(client):
    body = standard_body()
    headers = {**signed(body, "m1"), "webhook-id": "m2"}
    assert client.post("/webhooks/standard", data=body, headers=headers).status_code == 401


def test_an_empty_secret_is_no_secret(redis_url, redis_client, monkeypatch):
    from engine import config

    settings = config.from_env({"STANDARD_WEBHOOK_SECRET": "", "HUBSPOT_CLIENT_SECRET": ""})
    assert settings.source_secret("standard") is None
    assert settings.source_secret("hubspot") is None
    app = create_app({"redis_url": redis_url, "webhook_secrets": {}})
    response = app.test_client().post(
        "/webhooks/standard", data=standard_body(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 404


@pytest.mark.parametrize(
    "header",
    [
        "sha1="
        + base64.b64encode(hmac.new(TYPEFORM.encode(), b"{}", hashlib.sha1).digest()).decode(),
        "SHA256=" + typeform_sign(TYPEFORM, b"{}").partition("=")[2],
        "sha256=" + hmac.new(TYPEFORM.encode(), b"{}", hashlib.sha256).hexdigest(),  # hex, not b64
        "sha256=" + base64.b64encode(hashlib.sha256(b"{}").digest()).decode(),  # no key at all
        "sha512=" + typeform_sign(TYPEFORM, b"{}").partition("=")[2],
    ],
)
def test_typeform_algorithm_confusion_is_refused(client, header):
    response = client.post(
        "/webhooks/typeform",
        data=b"{}",
        headers={"Typeform-Signature": header, "content-type": "application/json"},
    )
    assert response.status_code == 401, response.json


def test_hubspot_does_not_downgrade_from_a_bad_v3_to_v1(client):
    body = b"[]"
    v1 = hashlib.sha256(HUBSPOT.encode() + body).hexdigest()
    headers = {
        **hubspot_signed(
            HUBSPOT[:-1] + "x", "http://localhost/webhooks/hubspot", body, datetime.now(UTC)
        ),
        "X-HubSpot-Signature": v1,
        "X-HubSpot-Signature-Version": "v1",
        "content-type": "application/json",
    }
    response = client.post("/webhooks/hubspot", data=body, headers=headers)
    assert response.status_code == 401
