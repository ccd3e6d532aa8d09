"""The worker process: one RQ SimpleWorker (no fork per job, so rules stay compiled) on the events
and sync queues, and one background thread that runs RQ's scheduler (for `schedule:` actions and
retries) and a sweep that re-enqueues work left without a job (a process killed between accepting
and enqueueing).

RQ's own `with_scheduler=True` forks the scheduler into a child process that outlives a worker
killed with SIGKILL (an orphan holding the scheduler lock); a thread dies with its worker, and its
lock expires so another worker's scheduler takes over.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Sequence

import redis
from rq import SimpleWorker
from rq.scheduler import RQScheduler
from rq.serializers import JSONSerializer
from rq.worker import DequeueStrategy

from engine import embedded, logs
from engine.config import Settings
from engine.pipeline import EVENTS_QUEUE, SYNC_QUEUE, Runtime, build_runtime, sweep

log = logging.getLogger("engine.worker")
QUEUES = (EVENTS_QUEUE, SYNC_QUEUE)
TICK_SECONDS = 1.0
SWEEP_EVERY = 5
"""ticks between sweeps"""


def connect(settings: Settings) -> redis.Redis:
    embedded.wait_for_redis(settings, timeout=30.0)
    return redis.Redis.from_url(embedded.redis_url(settings), health_check_interval=30)


def run_worker(settings: Settings, burst: bool = False, queues: Sequence[str] = QUEUES) -> None:
    """Work on `queues` (default both). A worker on both takes them in turn; one per queue keeps
    a push waiting on a CRM's rate limit from ever holding events back."""
    logs.to_stderr()
    client = connect(settings)
    runtime = Runtime.install(build_runtime(settings, client))
    runtime.queues = tuple(queues)
    sweep(runtime)
    if not burst:
        _start_background(settings)
    while True:
        worker, failed = _Worker(list(queues), connection=client, serializer=JSONSerializer), False
        try:
            worker.work(
                with_scheduler=False, burst=burst, dequeue_strategy=DequeueStrategy.ROUND_ROBIN
            )
        except redis.RedisError:
            log.warning("the worker loop stopped on a Redis error", exc_info=True)
            with contextlib.suppress(Exception):
                worker.unsubscribe()
            failed = True
        if worker.stop_requested or (burst and not failed):
            return
        # RQ's loop gives up when Redis fails outside its own wait for a job (a job's bookkeeping,
        # a heartbeat): Redis restarted, a failover. Wait for Redis and work on, in this process,
        # so nothing needs a restart; what the lost job held is reclaimed from the inbox.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # nothing in hand: a stop just ends us
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _wait_for_redis(settings)
        log.info("Redis answers again; the worker loop starts again")
        with contextlib.suppress(redis.RedisError):
            sweep(runtime)


class _Worker(SimpleWorker):
    """Remembers whether a stop was asked for (SIGTERM, SIGINT), to tell it from a loop RQ left."""

    stop_requested = False

    def request_stop(self, signum, frame):  # type: ignore[no-untyped-def]
        self.stop_requested = True
        super().request_stop(signum, frame)


def _wait_for_redis(settings: Settings) -> None:
    while True:
        try:
            embedded.wait_for_redis(settings, timeout=30.0)
            return
        except RuntimeError:
            log.warning("Redis still does not answer; waiting on")


def _start_background(settings: Settings) -> None:
    def loop() -> None:
        # its own connections: the worker's are used by the job thread
        runtime = build_runtime(settings, connect(settings))
        scheduler = RQScheduler(list(QUEUES), connection=runtime.redis, serializer=JSONSerializer)
        ticks, stop = 0, threading.Event()
        while not stop.wait(TICK_SECONDS):
            ticks += 1
            try:
                _schedule(scheduler)
                if ticks % SWEEP_EVERY == 0:
                    sweep(runtime)
            except redis.RedisError:
                log.warning("scheduler/sweep tick failed; will try again", exc_info=True)

    threading.Thread(target=loop, name="scheduler", daemon=True).start()


def _schedule(scheduler: RQScheduler) -> None:
    """One tick of RQ's scheduler loop: hold the per-queue locks, move due jobs to their queues."""
    if scheduler.should_reacquire_locks:
        scheduler.acquire_locks(auto_start=False)
    if scheduler.acquired_locks:
        scheduler.heartbeat()
        scheduler.enqueue_scheduled_jobs()
