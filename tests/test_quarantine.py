"""Quarantined deliveries are listed, and replayed through today's parsers once fixed."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner

import connectors
from connectors.standard.inbound import SOURCE as STANDARD
from connectors.standard.inbound import signed_headers
from engine.cli import main
from engine.web import create_app

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture
def quarantined(redis_url, redis_client, monkeypatch):
    monkeypatch.setenv("REDIS_URL", redis_url)
    app = create_app({"redis_url": redis_url, "webhook_secrets": {"standard": SECRET}})
    body = json.dumps(
        {
            "id": "no-email-1",
            "type": "form_submitted",
            "occurred_at": "2026-11-26T10:00:00Z",
            "properties": {"fields": {"work_email": "Ann@Example.com"}},
        }
    ).encode()
    headers = signed_headers(SECRET, "m1", body, datetime.now(UTC))
    response = app.test_client().post("/webhooks/standard", data=body, headers=headers)
    assert response.json["quarantined"] == 1
    return app.extensions["lifecycle"].store


def test_listed_with_reason_and_size(quarantined):
    result = CliRunner().invoke(main, ["quarantine"])
    assert result.exit_code == 0, result.output
    assert "standard" in result.output and "event is missing email" in result.output
    assert "1 kept delivery" in result.output


def test_replay_without_a_fix_keeps_it(quarantined):
    result = CliRunner().invoke(main, ["quarantine", "--replay"])
    assert "still kept (event is missing email)" in result.output
    assert "0 of 1 released" in result.output
    assert len(quarantined.quarantined()) == 1


def test_replay_after_a_fix_accepts_and_releases(quarantined, monkeypatch):
    def fixed_parse(delivery):  # say, a release that reads fields.work_email
        parsed = STANDARD.parse(delivery)
        body = json.loads(delivery.body)
        body["email"] = body["properties"]["fields"]["work_email"]
        return replace(
            parsed,
            events=[STANDARD.parse(replace(delivery, body=json.dumps(body).encode())).events[0]],
            unusable=[],
        )

    monkeypatch.setitem(connectors.SOURCES, "standard", replace(STANDARD, parse=fixed_parse))
    (item,) = quarantined.quarantined()
    result = CliRunner().invoke(main, ["quarantine", "--replay", item["id"]])
    assert result.exit_code == 0, result.output
    assert "replayed, 1 accepted" in result.output
    assert quarantined.quarantined() == []
    assert quarantined.backlog() == 1
