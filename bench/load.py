"""Load for the end-to-end benchmarks, and what they measure it with.

- `make_events` / `prefill`: the rules-evaluation workload as events, put straight into the store
  (Store.accept, 500 per Lua call) as if the web had accepted them.
- `paced_send`: one event per POST /api/events at a fixed rate, from separate sender processes
  (`python -m bench.load --sender`), so the load does not share this interpreter.
- `CommitWatcher`: when each `done:<event id>` key is written (the worker's commit), from Redis
  keyspace notifications.
- `stamps`: the `at` the store wrote with each event, and the timelines' processed_at.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import redis

from bench.common import REPO
from bench.processes import HOST, TOKEN, Service, ServiceFailed
from bench.rules_eval import BASE_TIME, Workload, shipped_rules
from engine.model import BehaviorEvent
from engine.store import INBOX, Store, done_key, timeline_key, wake_key

SENDER_PROCESSES = 2
SENDER_THREADS = 4


# --- Events straight into the store -----------------------------------------------------------


def iter_events(count: int, contacts: int, seed: int, prefix: str) -> Iterator[BehaviorEvent]:
    """`count` events of the rules-evaluation workload over `contacts` contacts, one at a time
    (a million of them need not be held at once)."""
    rules, _ = shipped_rules()
    workload = Workload(rules, seed)
    rng = random.Random(seed)
    emails = [f"person{i:06d}@company{i % 613}.example" for i in range(contacts)]
    for i in range(count):
        kind, source, props = workload.template()
        when = BASE_TIME + timedelta(seconds=i)
        yield BehaviorEvent(f"{prefix}-{i}", kind, rng.choice(emails), when, source, props)


def make_events(count: int, contacts: int, seed: int, prefix: str) -> list[BehaviorEvent]:
    return list(iter_events(count, contacts, seed, prefix))


def prefill(store: Store, events: Sequence[BehaviorEvent], chunk: int = 500) -> float:
    """Accept the events straight into the store (500 per Lua call); returns events/s."""
    started = time.perf_counter()
    now = datetime.now(UTC)
    for i in range(0, len(events), chunk):
        store.accept(events[i : i + chunk], now)
    rate = len(events) / (time.perf_counter() - started)
    # No job was enqueued for these: let the worker's start-up sweep enqueue one, as after a
    # restart.
    store.redis.delete(wake_key("events"))
    return rate


# --- Commits as they happen -------------------------------------------------------------------


class CommitWatcher(threading.Thread):
    """Records when each `done:<event id>` key is written (keyspace notifications)."""

    def __init__(self, client: redis.Redis):
        super().__init__(name="commit-watcher", daemon=True)
        client.config_set("notify-keyspace-events", "K$")
        self.pubsub = client.pubsub(ignore_subscribe_messages=True)
        self.prefix = f"__keyspace@0__:{done_key('')}"
        self.pubsub.psubscribe(self.prefix + "*")
        self.seen: dict[str, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            message = self.pubsub.get_message(timeout=0.2)
            if message and message["type"] == "pmessage":
                channel = message["channel"].decode()
                self.seen.setdefault(channel.removeprefix(self.prefix), time.time())

    def close(self) -> None:
        self.stop.set()
        self.join(5)
        self.pubsub.close()


def wait_committed(
    watcher: CommitWatcher, ids: Sequence[str], worker: Service, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while any(i not in watcher.seen for i in ids):
        worker.check()
        if time.monotonic() > deadline:
            missing = sum(i not in watcher.seen for i in ids)
            raise ServiceFailed(f"{missing} events not committed in {timeout:.0f} s")
        time.sleep(0.05)


def stamps(
    client: redis.Redis, events: Sequence[BehaviorEvent]
) -> tuple[dict[str, float], dict[str, float]]:
    """event id -> accepted `at` (from the inbox) and -> processed_at (from the timelines)."""
    wanted = {e.id for e in events}
    accepted = {}
    for _, fields in client.xrange(INBOX):
        event = json.loads(fields[b"e"])
        if event["id"] in wanted:
            accepted[event["id"]] = datetime.fromisoformat(fields[b"at"].decode()).timestamp()
    processed = {}
    for email in {e.email for e in events}:
        for raw in client.lrange(timeline_key(email), 0, -1):
            item = json.loads(raw)
            if item["event_id"] in wanted:
                processed[item["event_id"]] = datetime.fromisoformat(
                    item["processed_at"]
                ).timestamp()
    return accepted, processed


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


# --- Paced sending over HTTP ------------------------------------------------------------------


@dataclass
class Sent:
    answered: dict[str, float] = field(default_factory=dict)  # event id -> 2xx answer time
    failures: list[str] = field(default_factory=list)
    first: float = 0.0
    last: float = 0.0


def paced_send(port: int, events: Sequence[BehaviorEvent], rate: int) -> Sent:
    """Send one event per request at `rate` events/s overall, from SENDER_PROCESSES processes
    (`python -m bench.load --sender`) of SENDER_THREADS threads, one connection each, on
    interleaved time slots. A late slot is sent at once, so a slow server does not lower the
    offered rate."""
    jobs = [(i / rate, e.id, json.dumps(e.to_dict())) for i, e in enumerate(events)]
    argv = [sys.executable, "-m", "bench.load", "--sender"]
    procs: list[subprocess.Popen] = []
    try:
        for k in range(SENDER_PROCESSES):
            procs.append(
                subprocess.Popen(
                    argv, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
                )
            )
            _pipes(procs[-1])[0].write(
                json.dumps({"port": port, "jobs": jobs[k::SENDER_PROCESSES]}) + "\n"
            )
        for proc in procs:
            to_it, from_it = _pipes(proc)
            to_it.flush()
            if from_it.readline().strip() != "ready":
                raise RuntimeError("a sender process did not start")
        sent = Sent(first=time.time() + 0.2)
        for proc in procs:
            to_it = _pipes(proc)[0]
            to_it.write(f"{sent.first}\n")
            to_it.close()
        for proc in procs:
            result = json.loads(_pipes(proc)[1].readline())
            sent.answered.update(result["answered"])
            sent.failures.extend(result["failures"])
    finally:
        for proc in procs:  # done: they exit after answering; on an error, stop them now
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(2)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for pipe in _pipes(proc):
                pipe.close()
    sent.last = max(sent.answered.values(), default=time.time())
    return sent


def _pipes(proc: subprocess.Popen) -> tuple[Any, Any]:
    assert proc.stdin is not None and proc.stdout is not None
    return proc.stdin, proc.stdout


def sender_main() -> None:
    """One sender process: reads {port, jobs} then the start time from stdin, sends each job
    at start + its offset, prints {answered, failures}."""
    task = json.loads(sys.stdin.readline())
    port, jobs = task["port"], task["jobs"]
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
    answered: dict[str, float] = {}
    failures: list[str] = []
    lock = threading.Lock()
    print("ready", flush=True)
    start = float(sys.stdin.readline())

    def sender(mine: list[tuple[float, str, str]]) -> None:
        conn = http.client.HTTPConnection(HOST, port, timeout=10)
        for offset, event_id, body in mine:
            delay = start + offset - time.time()
            if delay > 0:
                time.sleep(delay)
            try:
                conn.request("POST", "/api/events", body, headers)
                response = conn.getresponse()
                response.read()
            except OSError as exc:
                conn.close()
                with lock:
                    failures.append(f"{event_id}: {exc}")
                continue
            at = time.time()
            with lock:
                if 200 <= response.status < 300:
                    answered[event_id] = at
                else:
                    failures.append(f"{event_id}: HTTP {response.status}")
        conn.close()

    threads = [
        threading.Thread(target=sender, args=(jobs[k::SENDER_THREADS],))
        for k in range(SENDER_THREADS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps({"answered": answered, "failures": failures}), flush=True)


if __name__ == "__main__" and sys.argv[1:] == ["--sender"]:
    sender_main()
