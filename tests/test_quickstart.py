"""What `make run` starts, tried as a new user would: no REDIS_URL, nothing configured. The
Procfile under honcho brings up web + worker + embedded Redis; an event posted to /api/events shows
up in /api/contacts/<email>, pushed to the sandbox CRM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def call(url: str, token: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    request.add_header("Authorization", f"Bearer {token}")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def wait_for(check, timeout: float, what: str):
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except (OSError, ValueError) as exc:
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what} (last error: {last})")


def test_make_run_processes_serves_a_first_event(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "API_TOKEN")}
    env.update(
        PORT=str(port),
        LIFECYCLE_VAR_DIR=str(tmp_path / "var"),
        PATH=f"{BIN}:{env.get('PATH', '')}",
        RULES_FILE=str(ROOT / "rules.yaml"),
    )
    log = open(tmp_path / "honcho.log", "w")  # noqa: SIM115 (closed in finally)
    honcho = subprocess.Popen(
        [str(BIN / "honcho"), "start", "-f", str(ROOT / "Procfile"), "-p", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        token_file = tmp_path / "var" / "api_token"
        wait_for(
            lambda: urllib.request.urlopen(f"{base}/healthz", timeout=2).status == 200,
            60,
            "the web service and embedded Redis",
        )
        token = wait_for(lambda: token_file.read_text().strip(), 10, "the generated API token")
        event = {
            "id": "first-1",
            "type": "content_downloaded",
            "email": "ann@example.com",
            "occurred_at": "2026-11-26T10:00:00Z",
            "properties": {"asset": "guide.pdf"},
        }
        status, body = call(f"{base}/api/events", token, event)
        assert (status, body["accepted"]) == (202, 1), body

        def processed():
            code, view = call(f"{base}/api/contacts/ann@example.com", token)
            return view if code == 200 and view["sync"]["sandbox"]["state"] == "synced" else None

        view = wait_for(processed, 30, "the event to be processed and pushed")
        assert (view["stage"], view["timeline"][0]["event_id"]) == ("lead", "first-1")
        assert (tmp_path / "var" / "appendonly.aof").exists()
    finally:
        os.killpg(honcho.pid, signal.SIGTERM)
        try:
            honcho.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(honcho.pid, signal.SIGKILL)
            honcho.wait()
        log.close()
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True)
    assert leftovers.stdout == "", f"processes left running: {leftovers.stdout}"
