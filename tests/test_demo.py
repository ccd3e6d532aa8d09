"""`lifecycle demo`: the story matches the shipped rules, and played against a real service
(redis-server, `lifecycle serve`, `lifecycle worker` as separate processes) it shows each contact
at the end of its story, through signed webhooks first and the API token second."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from engine import demo
from engine.lifecycle import scheduled_event_id
from engine.model import BehaviorEvent, ContactState, format_time
from engine.process import ContactReplay
from engine.rules import load
from tests.processes import (
    Service,
    free_port,
    lifecycle_serve,
    lifecycle_worker,
    live_members,
    product_env,
    redis_server,
    redis_socket_url,
)

REPO = Path(__file__).resolve().parent.parent
TOKEN = "demo-test-token"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


# --- the story, without a service --------------------------------------------------------------


def test_each_story_ends_where_the_shipped_rules_take_it():
    rules = load(REPO / "rules.yaml")
    ends = {}
    for person in demo.PEOPLE:
        replay = ContactReplay(rules, ContactState(person.email))
        for event in person.events(NOW):
            replay.process(BehaviorEvent.from_dict(event))
        replay.fire_due(NOW)
        ends[person.key] = (replay.state.stage, replay.state.status)
        assert ends[person.key] == (person.stage, person.status), person.key
    assert ends == {
        "ava": ("evangelist", "open_deal"),
        "ben": ("customer", "open_deal"),
        "cleo": ("sales_qualified_lead", "future_opportunity"),
        "dan": ("marketing_qualified_lead", None),
        "eve": ("sales_qualified_lead", "bad_timing"),
        "finn": ("lead", None),
    }


def test_event_times_are_spread_over_past_days_and_ids_are_fixed():
    events = [e for person in demo.PEOPLE for e in person.events(NOW)]
    times = sorted(datetime.fromisoformat(e["occurred_at"]) for e in events)
    assert times[-1] < NOW
    assert NOW - times[0] > timedelta(days=90)
    assert len({t.date() for t in times}) > 20
    ids = [e["id"] for e in events]
    assert len(set(ids)) == len(ids)
    later = [e["id"] for person in demo.PEOPLE for e in person.events(NOW + timedelta(days=3))]
    assert later == ids  # a second run sends duplicates, not new events


def test_the_token_comes_from_api_token_else_var_api_token(tmp_path):
    assert demo.find_token("set", tmp_path) == "set"
    assert demo.find_token(None, tmp_path) is None
    assert not (tmp_path / "api_token").exists()  # never created by the demo
    (tmp_path / "api_token").write_text("generated\n")
    assert demo.find_token(None, tmp_path) == "generated"


def test_missing_waits_for_events_due_delayed_events_and_pushes():
    due = NOW - timedelta(days=5)
    view = {
        "timeline": [
            {
                "event_id": "e1",
                "changes": [
                    {
                        "rule": "not-now-is-bad-timing",
                        "field": "schedule",
                        "to": f"revisit_due due {format_time(due)}",
                        "outcome": "applied",
                    },
                    {
                        "rule": "later",
                        "field": "schedule",
                        "to": f"revisit_due due {format_time(NOW + timedelta(days=1))}",
                        "outcome": "applied",
                    },
                ],
            }
        ],
        "sync": {"sandbox": {"state": "pending"}},
    }
    assert demo.missing(view, ["e1", "e2"], NOW) == [
        "event e2",
        f"the delayed revisit_due (due {format_time(due)})",
        "the push to sandbox",
    ]
    delayed = scheduled_event_id("e1", "not-now-is-bad-timing", "revisit_due")
    view["timeline"].append({"event_id": delayed, "changes": []})
    view["timeline"].append({"event_id": "e2", "changes": []})
    view["sync"]["sandbox"]["state"] = "synced"
    assert demo.missing(view, ["e1", "e2"], NOW) == []


# --- against a real service --------------------------------------------------------------------


def run_demo(url: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`lifecycle demo` as a user runs it, in its own process."""
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", "demo", "--url", url, "--timeout", "90"],
        cwd=REPO,
        env=product_env(**env),
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_a_clear_message_when_the_service_is_not_running():
    url = f"http://127.0.0.1:{free_port()}"
    result = run_demo(url, API_TOKEN=TOKEN)
    assert result.returncode == 1
    assert f"no lifecycle service answers at {url}" in result.stderr
    assert "make run" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


class Running:
    """redis-server, `lifecycle serve` and `lifecycle worker`, each its own process group."""

    def __init__(self, directory: Path, logs: Path):
        self.started: list[Service] = []
        self.redis_url = redis_socket_url(directory / "redis")
        self.url = ""
        try:
            self.started.append(redis_server(directory / "redis"))
            env = product_env(
                REDIS_URL=self.redis_url,
                API_TOKEN=TOKEN,
                STANDARD_WEBHOOK_SECRET=SECRET,
                RULES_FILE=str(REPO / "rules.yaml"),
                CRM_TARGETS="sandbox",
                LIFECYCLE_VAR_DIR=str(logs / "var"),
            )
            self.started.append(lifecycle_worker(env, logs / "worker.log"))
            port = free_port()
            self.started.append(lifecycle_serve(env, logs / "web.log", port))
            self.url = f"http://127.0.0.1:{port}"
        except BaseException:
            self.stop()  # what did start must not outlive a failed start
            raise

    def get(self, path: str) -> dict:
        request = urllib.request.Request(f"{self.url}{path}")
        request.add_header("Authorization", f"Bearer {TOKEN}")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def logs(self) -> str:
        return "\n".join(f"--- {s.name}\n{s.log_tail(40)}" for s in self.started)

    def stop(self) -> None:
        errors = []
        for service in reversed(self.started):
            try:
                service.stop()
            except Exception as exc:  # keep stopping the others
                errors.append(f"{service}: {exc}")
        left = [m for s in self.started for m in live_members(s.pgid)]
        assert not errors and not left, f"processes not stopped: {errors} {left}"


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    short = Path(tempfile.mkdtemp(prefix="lcd-"))  # a unix socket path must stay short
    service = None
    try:
        service = Running(short, tmp_path)
        yield service
    finally:
        if service is not None:
            service.stop()
        shutil.rmtree(short, ignore_errors=True)


def test_the_demo_plays_the_story_through_signed_webhooks_then_again_through_the_api(running):
    first = run_demo(running.url, API_TOKEN=TOKEN, STANDARD_WEBHOOK_SECRET=SECRET)
    assert first.returncode == 0, f"{first.stdout}\n{first.stderr}\n{running.logs()}"
    out = first.stdout
    assert "signed Standard Webhooks to /webhooks/standard" in out
    for person in demo.PEOPLE:
        assert f"{person.name} <{person.email}>" in out
    assert out.count("(as the story goes)") == len(demo.PEOPLE), out
    assert "stage evangelist, status open_deal" in out
    assert "stage sales_qualified_lead, status future_opportunity" in out
    assert "not-now-is-bad-timing" in out and "revisit-later" in out
    assert "scheduled: revisit_due, due 20" in out and "(fired)" in out and "(waiting)" in out
    assert out.count("sandbox: synced") == len(demo.PEOPLE), out

    sent = sum(len(person.beats) for person in demo.PEOPLE)
    client = redis.Redis.from_url(running.redis_url, decode_responses=True)
    try:
        metrics = client.hgetall("lc:metrics")
    finally:
        client.close()
    assert int(metrics["accepted|standard"]) == sent
    assert int(metrics.get("accepted|api", 0)) == 0

    cleo = running.get("/api/contacts/cleo@demo.example.com")
    delayed = [e for e in cleo["timeline"] if e["source"] == "schedule"]
    assert [e["type"] for e in delayed] == ["revisit_due"]
    assert cleo["sync"]["sandbox"]["pushed"]["status"] == "future_opportunity"

    funnel = running.get("/api/funnel")
    rows = {row["stage"]: row for row in funnel["stages"]}
    assert funnel["total_contacts"] == len(demo.PEOPLE)
    assert {stage: row["current"] for stage, row in rows.items() if row["current"]} == {
        "lead": 1,
        "marketing_qualified_lead": 1,
        "sales_qualified_lead": 2,
        "customer": 1,
        "evangelist": 1,
    }
    assert rows["customer"]["reached"] == 2
    assert rows["customer"]["median_hours_to_reach"] == 30 * 24.0  # both took 30 days

    again = run_demo(running.url, API_TOKEN=TOKEN)  # no secret: POST /api/events
    assert again.returncode == 0, f"{again.stdout}\n{again.stderr}"
    assert "POST /api/events with the API token" in again.stdout
    assert "Every event was already there" in again.stdout
    assert again.stdout.count("(as the story goes)") == len(demo.PEOPLE)

    wrong = run_demo(running.url, API_TOKEN="not-the-token")
    assert wrong.returncode == 1
    assert "the service refused the API token" in wrong.stderr
