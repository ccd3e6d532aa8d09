"""The real service for the browser tests: `lifecycle serve --workers 1` and `lifecycle worker`
against the test Redis, syncing to the sandbox and to a fake HubSpot on loopback, with the story
(story.py) sent through the HTTP API; and Debian's Chromium driven by Playwright.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from connectors.hubspot.fake_server import FakeHubSpot
from engine.store import Store
from tests.browser import chromium, story
from tests.processes import (
    REPO,
    Service,
    free_port,
    lifecycle_serve,
    lifecycle_worker,
    product_env,
    wait_for,
)

TOKEN = "browser-test-token"
DOCS = REPO / "docs"


@dataclass
class Served:
    base: str
    store: Store
    hubspot: FakeHubSpot
    web: Service
    worker: Service


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    """Debian's Chromium, installed first on a fresh machine. Missing and not installable: the
    tests fail (never skip) with the command that installs it."""
    try:
        return chromium.ensure()
    except chromium.ChromiumMissing as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="module")
def served(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    logs = tmp_path_factory.mktemp("browser-service")
    port = free_port()
    with FakeHubSpot() as hubspot:
        env = product_env(
            REDIS_URL=redis_url,
            API_TOKEN=TOKEN,
            RULES_FILE="rules.yaml",  # the service runs in the repository
            CRM_TARGETS="sandbox,hubspot",
            HUBSPOT_ACCESS_TOKEN=hubspot.token,
            HUBSPOT_API_BASE=hubspot.base_url,
            STANDARD_WEBHOOK_SECRET=story.WEBHOOK_SECRET,
            LIFECYCLE_VAR_DIR=str(logs / "var"),
        )
        web = lifecycle_serve(env, logs / "web.log", port)
        worker = None
        try:
            worker = lifecycle_worker(env, logs / "worker.log")
            served = Served(f"http://127.0.0.1:{port}", Store(client), hubspot, web, worker)
            _tell_the_story(served)
            yield served
        finally:
            if worker is not None:
                worker.stop()
            web.stop()
            client.flushdb()
            client.close()


def _tell_the_story(served: Served) -> None:
    """The story through the HTTP API, processed and pushed by the worker; then one HubSpot dead
    letter, one delivery kept in quarantine and one with an ignored event."""
    now = datetime.now(UTC)
    events = story.events(now)
    reply = _post(f"{served.base}/api/events", json.dumps(events).encode(), _bearer())
    assert reply["accepted"] == len(events), reply
    store = served.store

    def done() -> bool:
        applied = sum(len(store.timeline(email)) for email in story.EMAILS)
        return applied == len(events) and not any(
            store.dirty_count(crm) for crm in ("sandbox", "hubspot")
        )

    wait_for(done, 30, "the story processed and pushed", lambda: served.worker.log_tail())
    store.mark_failed("hubspot", story.DEAD_LETTER_EMAIL, story.DEAD_LETTER_ERROR, True, now)
    body, headers = story.unusable_delivery(now)
    assert _post(f"{served.base}/webhooks/standard", body, headers)["quarantined"] == 1
    store.accept([], now, channel="calendly", ignored=1)


def _bearer() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


def _post(url: str, body: bytes, headers: dict[str, str]) -> Any:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def browser(chromium_path: Path) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(chromium_path), headless=True, args=chromium.LAUNCH_ARGS
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def problems() -> list[str]:
    """What went wrong in the tab: console errors (a CSP violation is one), uncaught exceptions,
    and answers >= 400 (a missing asset), except the 401 of a refused sign-in."""
    return []


@pytest.fixture(scope="module")
def page(browser: Any, served: Served, problems: list[str]) -> Iterator[Any]:
    """One browser tab for the module (the tests follow one session: sign in first)."""
    context = browser.new_context(
        viewport={"width": 1280, "height": 860}, base_url=served.base, locale="en-US"
    )
    tab = context.new_page()
    tab.set_default_timeout(10_000)

    def console(message: Any) -> None:
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            problems.append(f"{tab.url}: {message.text}")

    def answered(response: Any) -> None:
        refused_sign_in = response.status == 401 and "/login" in response.url
        if response.status >= 400 and not refused_sign_in:
            problems.append(f"{response.status} {response.request.method} {response.url}")

    tab.on("console", console)
    tab.on("pageerror", lambda exc: problems.append(f"{tab.url}: {exc}"))
    tab.on("response", answered)
    try:
        yield tab
    finally:
        context.close()


@pytest.fixture(scope="session")
def screenshot(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Any, str], Path]:
    """Save a full-page PNG: into docs/ when asked (UPDATE_SCREENSHOTS=1) or when docs/ lacks
    it, else into a temporary folder, so a test run does not rewrite the committed pictures."""
    scratch = tmp_path_factory.mktemp("screenshots")
    update = os.environ.get("UPDATE_SCREENSHOTS") == "1"

    def shoot(tab: Any, name: str) -> Path:
        target = DOCS / name if update or not (DOCS / name).exists() else scratch / name
        target.parent.mkdir(parents=True, exist_ok=True)
        tab.screenshot(path=str(target), full_page=True)
        assert target.stat().st_size > 10_000, f"{target} looks empty"
        return target

    return shoot
