"""Per-process resources of the web app, created lazily (Flask's init_app pattern)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import redis
from flask import Flask, current_app
from rq import Queue
from rq.serializers import JSONSerializer

from engine import embedded
from engine.config import Settings
from engine.pipeline import EVENTS_QUEUE, drain_events
from engine.rules.reload import RulesReloader
from engine.store import Store

log = logging.getLogger("engine.web")


class Services:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._redis: redis.Redis | None = None
        self._store: Store | None = None
        self._rules: RulesReloader | None = None
        self.api_token = embedded.api_token(settings)

    def init_app(self, app: Flask) -> None:
        app.extensions["lifecycle"] = self

    @property
    def redis(self) -> redis.Redis:
        if self._redis is None:
            self._redis = redis.Redis.from_url(
                embedded.redis_url(self.settings),
                socket_timeout=3,
                socket_connect_timeout=2,
                health_check_interval=30,
            )
        return self._redis

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.redis, self.settings.idempotency_days)
        return self._store

    @property
    def rules(self) -> RulesReloader:
        if self._rules is None:
            self._rules = RulesReloader(self.settings.rules_file)
        return self._rules

    def wake_events(self) -> None:
        """Enqueue a drain job; the events stay safe in the inbox if this fails (the workers'
        sweep picks them up)."""
        try:
            queue = Queue(EVENTS_QUEUE, connection=self.redis, serializer=JSONSerializer)
            queue.enqueue(drain_events, result_ttl=0, failure_ttl=86_400)
        except redis.RedisError:
            log.warning("could not enqueue a drain job; the worker sweep will", exc_info=True)

    @staticmethod
    def now() -> datetime:
        return datetime.now(UTC)


def services() -> Services:
    return current_app.extensions["lifecycle"]
