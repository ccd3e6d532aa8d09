"""The HTTP contract on a real Redis: routes, the 202 body, every error code as JSON, and the
spine end to end (signed webhook -> processed -> explain view -> sandbox push)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from connectors.standard.inbound import signed_headers
from engine.pipeline import Runtime, build_runtime, drain_events, sync_dirty
from engine.web import create_app

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
TOKEN = "test-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def app(redis_url, redis_client):
    return create_app(
        {
            "redis_url": redis_url,
            "api_token": TOKEN,
            "webhook_secrets": {"standard": SECRET},
            "rules_file": "rules.yaml",
        }
    )


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def worker(app, redis_client):
    """The events and sync jobs, run in this process against the same Redis."""
    settings = app.extensions["lifecycle"].settings
    runtime = Runtime.install(build_runtime(settings, redis_client))
    yield runtime
    Runtime._current = None


def event(id_="evt-1", type_="content_downloaded", email="Ann@Example.com", **props):
    return {
        "id": id_,
        "type": type_,
        "email": email,
        "occurred_at": "2026-11-26T10:00:00Z",
        "properties": props,
    }


def post_webhook(client, payload, *, msg_id="msg-1", now=None, secret=SECRET, headers=None):
    body = json.dumps(payload).encode()
    signed = signed_headers(secret, msg_id, body, now or datetime.now(UTC))
    return client.post("/webhooks/standard", data=body, headers={**signed, **(headers or {})})


# --- the spine -----------------------------------------------------------------------------------


def test_signed_webhook_is_processed_explained_and_pushed(client, worker):
    response = post_webhook(client, event(asset="ebook.pdf"))
    assert response.status_code == 202
    assert response.json == {
        "accepted": 1,
        "duplicates": 0,
        "ignored": 0,
        "quarantined": 0,
        "events": ["evt-1"],
    }
    drain_events()
    sync_dirty("sandbox")
    view = client.get("/api/contacts/ann@example.com", headers=AUTH).json
    assert (view["email"], view["stage"], view["status"]) == ("ann@example.com", "lead", None)
    assert view["sync"]["sandbox"]["state"] == "synced"
    assert view["sync"]["sandbox"]["synced_version"] == 1
    assert view["sync"]["sandbox"]["pushed"]["stage"] == "lead"
    (entry,) = view["timeline"]
    assert entry["event_id"] == "evt-1" and entry["source"] == "standard"
    assert [c["rule"] for c in entry["changes"]] == [
        "first-touch-subscribes",
        "content-download-makes-lead",
    ]


def test_duplicates_change_state_once_across_routes(client, worker):
    assert post_webhook(client, event(), msg_id="m1").json["accepted"] == 1
    again = post_webhook(client, event(), msg_id="m2")  # the vendor's retry, new attempt
    assert again.json == {
        "accepted": 0,
        "duplicates": 1,
        "ignored": 0,
        "quarantined": 0,
        "events": ["evt-1"],
    }
    api = client.post("/api/events", json=event(), headers=AUTH)  # same event id, other route
    assert (api.status_code, api.json["duplicates"]) == (202, 1)
    drain_events()
    view = client.get("/api/contacts/ann@example.com", headers=AUTH).json
    assert len(view["timeline"]) == 1


def test_the_seed_story_through_the_api(client, worker):
    story = [
        event("e1", "content_downloaded"),
        event("e2", "form_submitted", form="demo-request"),
        event("e3", "meeting_booked"),
        event("e4", "call_logged", outcome="no_answer"),
        event("e5", "email_replied", subject="Re: hi"),
        event("e6", "deal_created", deal_id="9"),
        event("e7", "deal_stage_changed", deal_stage="contractsent"),
        event("e8", "deal_won"),
    ]
    for i, item in enumerate(story):
        item["occurred_at"] = f"2026-10-2{i}T10:00:00Z"
    response = client.post("/api/events", json=story, headers=AUTH)
    assert response.json["accepted"] == 8
    drain_events()
    view = client.get("/api/contacts/ann@example.com", headers=AUTH).json
    assert (view["stage"], view["status"]) == ("customer", "open_deal")
    funnel = client.get("/api/funnel", headers=AUTH).json
    assert funnel["total_contacts"] == 1
    by_stage = {row["stage"]: row for row in funnel["stages"]}
    assert by_stage["customer"]["current"] == 1
    assert by_stage["opportunity"]["reached"] == 1
    assert by_stage["lead"]["conversion_from_previous"] == 1.0
    assert by_stage["customer"]["median_hours_to_reach"] == 7 * 24
    assert funnel["rules"]["won-makes-customer"] == {"fired": 1}
    assert funnel["statuses"]["open_deal"] == 1


# --- errors: each a JSON body with error and detail ---------------------------------------------


def test_unknown_source_is_404(client):
    response = client.post("/webhooks/nope", json={})
    assert response.status_code == 404
    assert response.json["error"] == "unknown_source"


def test_unconfigured_source_is_404_naming_the_variable(redis_url, redis_client):
    app = create_app({"redis_url": redis_url, "webhook_secrets": {}})
    response = app.test_client().post("/webhooks/standard", json=event())
    assert response.status_code == 404
    assert "STANDARD_WEBHOOK_SECRET" in response.json["detail"]


def test_unsigned_accepted_only_when_explicitly_allowed(redis_url, redis_client):
    app = create_app(
        {"redis_url": redis_url, "webhook_secrets": {}, "allow_unsigned_webhooks": True}
    )
    response = app.test_client().post("/webhooks/standard", json=event())
    assert (response.status_code, response.json["accepted"]) == (202, 1)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"secret": "whsec_" + "A" * 32}, "no webhook-signature entry matches"),
        ({"skew": timedelta(minutes=-6)}, "old"),
        ({"skew": timedelta(minutes=6)}, "future"),
        ({"headers": {"webhook-signature": "v1,not-base64!!"}}, "no webhook-signature entry"),
        ({"headers": {"webhook-signature": "garbage"}}, "no webhook-signature entry"),
        ({"headers": {"webhook-id": ""}}, "missing Standard Webhooks headers"),
        ({"headers": {"webhook-timestamp": "soon"}}, "whole number"),
    ],
)
def test_bad_signatures_are_401(client, change, words):
    change = dict(change)
    if "skew" in change:  # computed now, not when the parameters were collected
        change["now"] = datetime.now(UTC) + change.pop("skew")
    response = post_webhook(client, event(), **change)
    assert response.status_code == 401, response.json
    assert response.json["error"] == "bad_signature"
    assert words in response.json["detail"]


def test_tampered_body_is_401(client):
    body = json.dumps(event()).encode()
    headers = signed_headers(SECRET, "m", body, datetime.now(UTC))
    response = client.post("/webhooks/standard", data=body.replace(b"Ann", b"Bob"), headers=headers)
    assert response.status_code == 401


def test_published_test_vector_verifies(client):
    from connectors.base.inbound import Delivery
    from connectors.standard.inbound import verify

    headers = {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }
    delivery = Delivery(
        "standard", headers, b'{"test": 2432232314}', datetime.fromtimestamp(1614265330 + 10, UTC)
    )
    verify(delivery, SECRET)  # raises if it does not verify


@pytest.mark.parametrize(
    ("body", "content_type", "status", "error"),
    [
        (b"{not json", "application/json", 400, "bad_payload"),
        (b"[]", "application/json", 400, "bad_payload"),
        (b'"text"', "application/json", 400, "bad_payload"),
        (b"a=1", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        (b"x" * (1024 * 1024 + 1), "application/json", 413, "payload_too_large"),
    ],
)
def test_bad_bodies(client, body, content_type, status, error):
    headers = signed_headers(SECRET, "m", body, datetime.now(UTC)) if status != 413 else {}
    response = client.post(
        "/webhooks/standard", data=body, headers={**headers, "content-type": content_type}
    )
    assert response.status_code == status
    assert response.json["error"] == error
    assert response.json["detail"]


def test_an_event_without_email_is_quarantined_and_still_202(client):
    no_email = {k: v for k, v in event().items() if k != "email"}
    response = post_webhook(client, [no_email, event("evt-2")])
    assert response.status_code == 202
    assert (response.json["accepted"], response.json["quarantined"]) == (1, 1)
    app = client.application
    (kept,) = app.extensions["lifecycle"].store.quarantined()
    assert kept["source"] == "standard"
    assert "missing email" in kept["reason"]
    assert json.loads(kept["body"])[0]["id"] == "evt-1"


def test_api_requires_the_bearer_token(client):
    assert client.get("/api/funnel").status_code == 401
    wrong = client.get("/api/funnel", headers={"Authorization": "Bearer nope"})
    assert (wrong.status_code, wrong.json["error"]) == (401, "unauthorized")


def test_api_refuses_unusable_events_with_422(client):
    response = client.post("/api/events", json=[event(), {"type": "x"}], headers=AUTH)
    assert response.status_code == 422
    assert response.json["error"] == "invalid_event"
    assert response.json["detail"].startswith("event 1: event is missing id")


def test_unknown_contact_is_404(client):
    response = client.get("/api/contacts/nobody@example.com", headers=AUTH)
    assert (response.status_code, response.json["error"]) == (404, "not_found")


def test_healthz(client):
    response = client.get("/healthz")
    assert (response.status_code, response.json["redis"]) == (200, "ok")


def test_redis_down_is_503_never_500(redis_client):
    app = create_app(
        {
            "redis_url": "redis://127.0.0.1:1/0",
            "api_token": TOKEN,
            "webhook_secrets": {"standard": SECRET},
        }
    )
    client = app.test_client()
    assert client.get("/healthz").status_code == 503
    response = post_webhook(client, event())
    assert (response.status_code, response.json["error"]) == (503, "store_unavailable")
    api = client.post("/api/events", json=event(), headers=AUTH)
    assert api.status_code == 503


def test_metrics_count_deliveries_refusals_processing_and_latency(client, worker):
    post_webhook(client, event())
    post_webhook(client, event(), msg_id="again")
    post_webhook(client, event(), secret="whsec_" + "B" * 32)
    client.post("/api/events", json=event("evt-2", email="bo@example.com"), headers=AUTH)
    drain_events()
    sync_dirty("sandbox")
    text = client.get("/metrics").get_data(as_text=True)
    for line in (
        'lifecycle_events_total{outcome="accepted",source="standard"} 1.0',
        'lifecycle_events_total{outcome="duplicate",source="standard"} 1.0',
        'lifecycle_events_total{outcome="received",source="standard"} 2.0',
        'lifecycle_events_total{outcome="accepted",source="api"} 1.0',
        'lifecycle_events_total{outcome="duplicate",source="api"} 0.0',  # zeros are exported
        'lifecycle_requests_rejected_total{error="bad_signature",source="standard"} 1.0',
        "lifecycle_events_processed_total 2.0",
        'lifecycle_rule_fires_total{rule="content-download-makes-lead"} 2.0',
        'lifecycle_sync_results_total{crm="sandbox",result="synced"} 2.0',
        'lifecycle_queue_depth{queue="inbox_backlog"} 0.0',
        "lifecycle_accept_to_commit_seconds_count 2.0",
    ):
        assert line in text, line


def test_cli_contact_and_funnel_read_the_same_views(client, worker, redis_url, monkeypatch):
    from click.testing import CliRunner

    from engine.cli import main

    client.post("/api/events", json=event(), headers=AUTH)
    drain_events()
    monkeypatch.setenv("REDIS_URL", redis_url)
    runner = CliRunner()
    shown = runner.invoke(main, ["contact", "ANN@example.com"])
    assert shown.exit_code == 0, shown.output
    assert "ann@example.com: stage lead, status (none)" in shown.output
    assert "content-download-makes-lead: stage subscriber -> lead applied" in shown.output
    report = runner.invoke(main, ["funnel"])
    assert report.exit_code == 0, report.output
    assert "1 contacts" in report.output
    assert "lead" in report.output
    missing = runner.invoke(main, ["contact", "nobody@example.com"])
    assert missing.exit_code == 1 and "no contact nobody@example.com" in missing.output
