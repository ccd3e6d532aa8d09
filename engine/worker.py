"""The worker process: one RQ SimpleWorker (no fork per job, so rules stay compiled) on the events
and sync queues, with RQ's scheduler for `schedule:` actions and retries, plus a sweep thread that
re-enqueues work left without a job (a process killed between accepting and enqueueing)."""

from __future__ import annotations

import logging
import threading

import redis
from rq import SimpleWorker
from rq.serializers import JSONSerializer

from engine import embedded
from engine.config import Settings
from engine.pipeline import EVENTS_QUEUE, SYNC_QUEUE, Runtime, build_runtime, sweep

log = logging.getLogger("engine.worker")
SWEEP_SECONDS = 5.0


def connect(settings: Settings) -> redis.Redis:
    embedded.wait_for_redis(settings, timeout=30.0)
    return redis.Redis.from_url(embedded.redis_url(settings), health_check_interval=30)


def run_worker(settings: Settings, burst: bool = False) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    client = connect(settings)
    runtime = Runtime.install(build_runtime(settings, client))
    sweep(runtime)
    if not burst:
        _start_sweeper(settings)
    worker = SimpleWorker([EVENTS_QUEUE, SYNC_QUEUE], connection=client, serializer=JSONSerializer)
    worker.work(with_scheduler=True, burst=burst)


def _start_sweeper(settings: Settings) -> None:
    def loop() -> None:
        # its own connection and runtime: the worker's are used by the job thread
        runtime = build_runtime(settings, connect(settings))
        stop = threading.Event()
        while not stop.wait(SWEEP_SECONDS):
            try:
                sweep(runtime)
            except redis.RedisError:
                log.warning("sweep failed; will try again", exc_info=True)

    threading.Thread(target=loop, name="sweeper", daemon=True).start()
