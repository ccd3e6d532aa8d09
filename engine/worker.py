"""The worker process: one RQ SimpleWorker (no fork per job, so rules stay compiled) on the events
and sync queues, and one background thread that runs RQ's scheduler (for `schedule:` actions and
retries) and a sweep that re-enqueues work left without a job (a process killed between accepting
and enqueueing).

RQ's own `with_scheduler=True` forks the scheduler into a child process that outlives a worker
killed with SIGKILL (an orphan holding the scheduler lock); a thread dies with its worker, and its
lock expires so another worker's scheduler takes over.
"""

from __future__ import annotations

import logging
import threading

import redis
from rq import SimpleWorker
from rq.scheduler import RQScheduler
from rq.serializers import JSONSerializer

from engine import embedded
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


def run_worker(settings: Settings, burst: bool = False) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    client = connect(settings)
    runtime = Runtime.install(build_runtime(settings, client))
    sweep(runtime)
    if not burst:
        _start_background(settings)
    worker = SimpleWorker(list(QUEUES), connection=client, serializer=JSONSerializer)
    worker.work(with_scheduler=False, burst=burst)


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
