"""Secrets come only from the environment and never reach a log or a kept delivery.

A real web service and worker run with every secret configured; requests that succeed and
requests refused for each reason pass through; then every log file they wrote, and everything
kept in Redis for inspection (quarantine, sync records, deliveries), is searched for each secret.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

import redis

from connectors.base.signatures import basic_auth_header
from connectors.standard.inbound import signed_headers
from tests.processes import free_port, lifecycle_serve, product_env, redis_server, redis_socket_url
from tests.processes import wait_for as wait
from tests.test_faults import REPO, event_json, http, processes, short_dir  # noqa: F401 (fixtures)

SECRETS = {
    "API_TOKEN": "tok-5f1e8a2c9d7b4e63a0f1",
    "STANDARD_WEBHOOK_SECRET": "whsec_"
    + base64.b64encode(b"s3cr3t-standard-key-0123456789").decode(),
    "JOTFORM_WEBHOOK_SECRET": "jot-9c2e4a7f1b3d5e6a8c0b",
    "POSTMARK_WEBHOOK_SECRET": "pm-3e5a7c9b1d2f4e6a8b0c",
    "HUBSPOT_CLIENT_SECRET": "hs-client-7a1c3e5b9d2f4a6c8e0b",
}


def test_no_secret_reaches_a_log_or_a_kept_delivery(short_dir, processes, tmp_path):  # noqa: F811 (fixtures)
    store_dir = short_dir / "redis"
    redis_service = processes.add(redis_server(store_dir, "redis"))
    env = product_env(
        REDIS_URL=redis_socket_url(store_dir),
        RULES_FILE=str(REPO / "rules.yaml"),
        CRM_TARGETS="sandbox",
        LIFECYCLE_VAR_DIR=str(tmp_path / "var"),
        **SECRETS,
    )
    port = free_port()
    processes.add(lifecycle_serve(env, tmp_path / "web.log", port))
    worker = processes.worker(env, "worker")
    base = f"http://127.0.0.1:{port}"
    token = SECRETS["API_TOKEN"]
    good = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    # accepted, through each way in
    assert http("POST", f"{base}/api/events", [event_json("s-1")], good)[0] == 202
    body = json.dumps(event_json("s-2", "webinar_attended")).encode()
    signed = signed_headers(SECRETS["STANDARD_WEBHOOK_SECRET"], "m-2", body, datetime.now(UTC))
    assert http("POST", f"{base}/webhooks/standard", body, signed)[0] == 202
    # refused, for each reason a secret could be echoed back
    wrong = {**good, "Authorization": f"Bearer {token[:-1]}x"}
    assert http("POST", f"{base}/api/events", [event_json("s-3")], wrong)[0] == 401
    tampered = body.replace(b"s-2", b"s-9")
    assert http("POST", f"{base}/webhooks/standard", tampered, signed)[0] == 401
    basic = {
        "Authorization": basic_auth_header(SECRETS["POSTMARK_WEBHOOK_SECRET"][:-1] + "x"),
        "Content-Type": "application/json",
    }
    assert http("POST", f"{base}/webhooks/postmark", {"FromFull": {}}, basic)[0] == 401
    # kept for inspection: a verified delivery without an email, sent with Basic credentials
    kept_basic = {
        "Authorization": basic_auth_header(SECRETS["POSTMARK_WEBHOOK_SECRET"]),
        "Content-Type": "application/json",
    }
    no_sender = {"MessageID": "m-x", "Subject": "hi", "FromFull": {"Email": ""}, "Headers": []}
    status, answer, _ = http("POST", f"{base}/webhooks/postmark", no_sender, kept_basic)
    assert status in (200, 202) and answer["quarantined"] + answer["ignored"] == 1, answer
    # let the worker apply and push, then stop everything so every log is complete
    client = redis.Redis.from_url(redis_socket_url(store_dir))
    wait(
        lambda: client.exists("lc:done:s-1") and client.exists("lc:done:s-2"),
        20,
        "the accepted events to be applied",
    )
    kept = _redis_text(client)
    client.close()
    processes.stop_all()

    logs = {p: p.read_text(errors="replace") for p in Path(tmp_path).rglob("*.log")}
    logs[Path("redis")] = redis_service.log_text()
    assert worker.log_text() and any("POST /api/events" in text for text in logs.values())
    for name, secret in SECRETS.items():
        for path, text in logs.items():
            assert secret not in text, f"{name} appears in {path}"
        assert secret not in kept, f"{name} is kept in Redis"


def _redis_text(client: redis.Redis) -> str:
    """Everything kept for people to read: quarantine, deliveries, sync records, metrics."""
    parts = []
    for key in client.scan_iter("lc:*"):
        kind = client.type(key)
        if kind == b"stream":
            parts.extend(repr(fields) for _, fields in client.xrange(key))
        elif kind == b"hash":
            parts.append(repr(client.hgetall(key)))
        elif kind == b"string":
            parts.append(repr(client.get(key)))
        elif kind == b"list":
            parts.append(repr(client.lrange(key, 0, -1)))
    return "\n".join(parts)
