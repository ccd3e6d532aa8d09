"""The accept path's kept connection (engine.store.DedicatedScript) on a real Redis: it recovers
from everything that can happen to a connection between two webhooks, by itself."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from engine.model import BehaviorEvent
from engine.store import DedicatedScript, Store, StoreUnavailable
from tests.processes import redis_server, redis_socket_url

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def event(n: int) -> BehaviorEvent:
    return BehaviorEvent(
        id=f"ev-{n}", type="content_downloaded", email="ann@example.com", occurred_at=NOW
    )


@pytest.fixture
def store(redis_client: redis.Redis) -> Store:
    return Store(redis_client)


def kept_connection(store: Store) -> redis.Connection:
    script = store._accept
    assert isinstance(script, DedicatedScript)
    return script._local.conn


def test_a_killed_connection_is_replaced_without_failing_the_call(store, redis_client):
    assert store.accept([event(1)], NOW).accepted == ["ev-1"]
    conn = kept_connection(store)
    redis_client.client_kill_filter(_id=conn_id(conn))
    assert store.accept([event(2)], NOW).accepted == ["ev-2"]
    assert store.accept([event(2)], NOW).duplicates == ["ev-2"]
    assert store.backlog() == 2


def test_an_emptied_script_cache_falls_back_to_eval(store, redis_client):
    store.accept([event(1)], NOW)
    redis_client.script_flush()
    assert store.accept([event(2)], NOW).accepted == ["ev-2"]
    assert store.accept([event(3)], NOW).accepted == ["ev-3"]  # EVALSHA works again


def test_an_error_reply_keeps_the_connection_in_step(store, redis_client):
    store.accept([event(1)], NOW)
    conn = kept_connection(store)
    redis_client.set("lc:inbox", "not a stream")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        store.accept([event(2)], NOW)
    redis_client.delete("lc:inbox")
    assert store.accept([event(3)], NOW).accepted == ["ev-3"]
    assert kept_connection(store) is conn


def test_a_timeout_answers_unavailable_and_the_next_call_reads_its_own_reply():
    directory = Path(tempfile.mkdtemp(prefix="lc-", dir="/tmp"))
    server = redis_server(directory)
    try:
        store = Store(redis.Redis.from_url(redis_socket_url(directory), socket_timeout=0.3))
        store.accept([event(1)], NOW)
        os.kill(server.pid, signal.SIGSTOP)
        try:
            with pytest.raises(StoreUnavailable, match="did not answer in time"):
                store.accept([event(2)], NOW)
        finally:
            os.kill(server.pid, signal.SIGCONT)
        # The late reply to the timed-out call must not be taken for the answer to the next one.
        assert store.accept([event(3)], NOW).accepted == ["ev-3"]
        assert store.redis.xlen("lc:inbox") == 3  # the timed-out call ran when Redis woke...
        assert store.accept([event(2)], NOW).duplicates == ["ev-2"]  # ...so a retry dedups
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def test_each_thread_and_each_forked_child_has_its_own_connection(store):
    store.accept([event(1)], NOW)
    mine = kept_connection(store)
    seen = []

    def other() -> None:
        store.accept([event(2)], NOW)
        seen.append(kept_connection(store))

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert seen and seen[0] is not mine
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a connection of its own, or the parent's replies get mixed up
        try:
            ok = store.accept([event(3)], NOW).accepted == ["ev-3"]
            ok = ok and kept_connection(store) is not mine
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"
    assert store.accept([event(4)], NOW).accepted == ["ev-4"]
    assert kept_connection(store) is mine


def conn_id(conn: redis.Connection) -> int:
    conn.send_command("CLIENT", "ID")
    return int(conn.read_response())
