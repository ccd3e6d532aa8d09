"""One worker serves the events and the sync queues: neither starves the other.

Steady traffic keeps the events queue busy; a backlog of pushes keeps the sync queue busy. The
worker takes its queues in turn (RQ's round-robin dequeuing), and a drain or sync job that has run
its slice hands over to a fresh job of its kind, at the back of its queue, when the other
queue has work waiting (measured end to end by bench/crm_latency.py).
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from rq import Queue
from rq.serializers import JSONSerializer

from engine import pipeline
from engine.config import Settings
from engine.model import BehaviorEvent
from engine.pipeline import EVENTS_QUEUE, SYNC_QUEUE, Runtime, build_runtime, drain_events

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


@pytest.fixture
def runtime(redis_client, monkeypatch):
    monkeypatch.setattr(pipeline, "SLICE_SECONDS", 0.0)  # hand over after every batch
    settings = Settings(rules_file="rules.yaml", event_batch_size=10)
    rt = Runtime.install(build_runtime(settings, redis_client, lambda: datetime.now(UTC)))
    yield rt
    Runtime._current = None


def accept(rt: Runtime, count: int, prefix: str) -> None:
    events = [
        BehaviorEvent(f"{prefix}-{i}", "content_downloaded", f"{prefix}{i}@example.com",
                      T0 + timedelta(seconds=i))
        for i in range(count)
    ]  # fmt: skip
    rt.store.accept(events, rt.clock())


def queued(rt: Runtime, name: str) -> list[str]:
    return [
        job.func_name for job in Queue(name, connection=rt.redis, serializer=JSONSerializer).jobs
    ]


def test_a_drain_job_hands_over_when_contacts_wait_for_a_push(runtime):
    accept(runtime, 30, "a")
    runtime.redis.delete("rq:queue:events", "rq:queue:sync")  # what accept would have enqueued

    handled = drain_events()

    assert handled == 10  # one batch, then the sync's turn
    assert runtime.store.dirty_count("sandbox") == 10
    assert queued(runtime, SYNC_QUEUE) == ["engine.pipeline.sync_dirty"]
    assert drain_args(runtime) == [[True], [False]]  # a helper for the backlog, then the rest
    assert runtime.store.backlog() == 20


def drain_args(rt: Runtime) -> list[list]:
    """The `helper` argument of each queued drain job."""
    jobs = Queue(EVENTS_QUEUE, connection=rt.redis, serializer=JSONSerializer).jobs
    return [list(job.args) for job in jobs]


def test_a_backlog_invites_a_helper_job_so_idle_workers_join_in(runtime):
    """The job holding the flag keeps it (accepts enqueue nothing), so other workers would idle
    through a backlog: a full batch invites a helper, at most one per HELPER_EVERY_SECONDS."""
    runtime.queues = (EVENTS_QUEUE,)
    accept(runtime, 30, "a")
    runtime.redis.delete("rq:queue:events")

    assert drain_events() == 30
    assert drain_args(runtime) == [[True]]  # three full batches, one invitation
    runtime.store.set_wake("events")  # as if another job were on its way
    accept(runtime, 10, "b")
    assert drain_events(helper=True) == 10
    assert runtime.store.set_wake("events") is False  # the helper left that job's flag alone


def test_a_drain_job_runs_on_while_nothing_waits_for_a_push(runtime, monkeypatch):
    monkeypatch.setattr(pipeline, "_sync_waiting", lambda rt: False)
    accept(runtime, 30, "a")

    assert drain_events() == 30


def test_a_sync_job_hands_over_when_events_wait(runtime, monkeypatch):
    monkeypatch.setattr(runtime.crms["sandbox"], "batch_size", 10, raising=False)
    accept(runtime, 30, "a")
    monkeypatch.setattr(pipeline, "_sync_waiting", lambda rt: False)
    drain_events()
    accept(runtime, 5, "b")  # events arrive while the pushes are pending
    runtime.redis.delete("rq:queue:events", "rq:queue:sync")

    pushed = pipeline.sync_dirty("sandbox")

    assert pushed == 10  # one batch, then the events' turn
    assert runtime.store.dirty_count("sandbox") == 20
    assert queued(runtime, SYNC_QUEUE) == ["engine.pipeline.sync_dirty"]


def test_a_sync_job_drains_everything_while_no_event_waits(runtime, monkeypatch):
    monkeypatch.setattr(runtime.crms["sandbox"], "batch_size", 10, raising=False)
    accept(runtime, 30, "a")
    monkeypatch.setattr(pipeline, "_sync_waiting", lambda rt: False)
    drain_events()

    assert pipeline.sync_dirty("sandbox") == 30
    assert runtime.store.dirty_count("sandbox") == 0


def test_a_worker_on_one_queue_never_hands_over_to_the_other(runtime, monkeypatch):
    """`lifecycle worker --queues events` next to a `--queues sync` one: handing over would only
    re-enqueue itself, so its jobs run on whatever waits on the other queue."""
    monkeypatch.setattr(runtime.crms["sandbox"], "batch_size", 10, raising=False)
    runtime.queues = (EVENTS_QUEUE,)
    accept(runtime, 30, "a")
    assert drain_events() == 30  # contacts wait for a push all along

    runtime.queues = (SYNC_QUEUE,)
    accept(runtime, 5, "b")  # events wait all along
    assert pipeline.sync_dirty("sandbox") == 30


def test_a_sync_job_hands_over_when_another_crms_push_waits(runtime, monkeypatch):
    """One CRM's backlog (or its rate limit) never holds another CRM's pushes back."""
    monkeypatch.setattr(runtime.crms["sandbox"], "batch_size", 10, raising=False)
    runtime.crms["second"] = runtime.crms["sandbox"]  # a second CRM target
    accept(runtime, 30, "a")
    runtime.queues = (EVENTS_QUEUE,)
    drain_events()
    runtime.queues = (SYNC_QUEUE,)
    runtime.redis.delete("rq:queue:sync")

    assert pipeline.sync_dirty("sandbox") == 10  # one batch, then the other CRM's turn
    assert queued(runtime, SYNC_QUEUE) == ["engine.pipeline.sync_dirty"]
    assert runtime.store.dirty_count("sandbox") == 20
    assert runtime.store.dirty_count("second") == 30


class Budgeted:
    """The sandbox behind a rate limit whose budget frees up at `budget_at` (time.monotonic())."""

    def __init__(self, inner, name: str):
        self.inner, self.name, self.batch_size, self.budget_at = inner, name, 10, 0.0
        self.pushes: list[int] = []

    def ready_in(self) -> float:
        return max(0.0, self.budget_at - time.monotonic())

    def push(self, contacts, known_ids, profiles):
        self.pushes.append(len(contacts))
        return self.inner.push(contacts, known_ids, profiles)

    def emails_for(self, crm_ids):
        return self.inner.emails_for(crm_ids)


def pushes_waiting(runtime: Runtime, count: int, **budgets: float) -> dict[str, Budgeted]:
    """`count` contacts due for a push to each CRM named, whose budget frees up that many seconds
    from now; the worker serves only the sync queue."""
    sandbox = runtime.crms["sandbox"]
    crms = {name: Budgeted(sandbox, name) for name in budgets}
    runtime.crms = dict(crms)
    accept(runtime, count, "a")
    runtime.queues = (EVENTS_QUEUE,)
    drain_events()
    runtime.queues = (SYNC_QUEUE,)
    runtime.redis.delete("rq:queue:sync")
    for name, seconds in budgets.items():
        crms[name].budget_at = time.monotonic() + seconds
    return crms


def test_a_sync_job_whose_budget_is_spent_gives_the_worker_to_another_crm(runtime):
    """No sleeping in a rate limit while another CRM's push could go: the job hands over at once
    and comes back; the other CRM's job does not hand back to a CRM that cannot push yet."""
    crms = pushes_waiting(runtime, 30, limited=5.0, free=0.0)
    started = time.monotonic()

    assert pipeline.sync_dirty("limited") == 0
    assert time.monotonic() - started < 1.0
    assert crms["limited"].pushes == []
    assert queued(runtime, SYNC_QUEUE) == ["engine.pipeline.sync_dirty"]  # its own, again
    assert pipeline.sync_dirty("free") == 30  # three batches, no hand-over to "limited"
    assert crms["free"].pushes == [10, 10, 10]


def test_a_sync_job_with_nothing_else_to_do_waits_for_its_budget(runtime):
    crms = pushes_waiting(runtime, 5, limited=0.3)
    started = time.monotonic()

    assert pipeline.sync_dirty("limited") == 5
    assert time.monotonic() - started >= 0.25
    assert crms["limited"].pushes == [5]


def test_an_events_only_drain_job_lingers_so_steady_accepts_enqueue_nothing(runtime):
    """One job takes batch after batch of a steady stream: accepts find it on its way (no RQ job,
    no enqueue in the web per event); once the inbox stays empty it ends and clears its flag."""
    runtime.queues = (EVENTS_QUEUE,)
    accept(runtime, 5, "a")
    runtime.redis.delete("rq:queue:events")
    job = threading.Thread(target=lambda: handled.append(drain_events()))
    handled: list[int] = []
    job.start()
    wakes = []
    for wave in range(3):
        time.sleep(0.3)
        events = [
            BehaviorEvent(f"w{wave}-{i}", "content_downloaded", f"w{wave}{i}@example.com", T0)
            for i in range(4)
        ]
        wakes.append(runtime.store.accept(events, runtime.clock()).wake)
    job.join(10)
    assert not job.is_alive() and handled == [17]
    assert wakes == [False, False, False]  # the lingering job was on its way for every wave
    assert queued(runtime, EVENTS_QUEUE) == []
    assert not runtime.redis.exists("lc:wake:events")  # gone: the next accept sends a job
    assert runtime.store.accept([BehaviorEvent("later", "deal_won", "z@example.com", T0)],
                                runtime.clock()).wake  # fmt: skip


def mark(name: str) -> None:
    """A job that notes it ran (in order)."""
    from rq import get_current_job

    get_current_job().connection.rpush("test:ran", name)


def test_the_worker_takes_its_queues_in_turn(redis_client, redis_url):
    from engine import worker

    for queue in (EVENTS_QUEUE, SYNC_QUEUE):
        for k in range(3):
            Queue(queue, connection=redis_client, serializer=JSONSerializer).enqueue(
                mark, f"{queue}-{k}", result_ttl=0
            )

    worker.run_worker(Settings(redis_url=redis_url, rules_file="rules.yaml"), burst=True)
    Runtime._current = None

    ran = [item.decode() for item in redis_client.lrange("test:ran", 0, -1)]
    assert ran == ["events-0", "sync-0", "events-1", "sync-1", "events-2", "sync-2"]
