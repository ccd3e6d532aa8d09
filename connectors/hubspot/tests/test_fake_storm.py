"""The fake HubSpot's storm mode (used by tests/test_fault_storms.py): a seeded share of requests
answered 429 with Retry-After or a 5xx page, until `calm()`."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections import Counter

import pytest

from connectors.hubspot.fake_server import FakeHubSpot


def read(fake: FakeHubSpot, token: str | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(
        f"{fake.base_url}/crm/v3/properties/contacts/lifecyclestage",
        headers={"Authorization": f"Bearer {token or fake.token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return reply.status, dict(reply.headers), reply.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers), exc.read()


def statuses(seed: int, count: int = 200) -> list[int]:
    with FakeHubSpot(rate=None) as fake:
        fake.storm(0.5, seed=seed)
        return [read(fake)[0] for _ in range(count)]


def test_a_storm_fails_a_seeded_share_of_requests_with_429s_and_5xx():
    seen = statuses(seed=7)
    counts = Counter(seen)
    failed = len(seen) - counts[200]
    assert 70 <= failed <= 130, counts  # about half
    assert {429, 500, 502, 503, 504} <= set(counts), counts
    assert statuses(seed=7) == seen  # the same requests meet the same failures
    assert statuses(seed=8) != seen


def test_storm_answers_look_like_hubspots_and_calm_ends_the_storm():
    with FakeHubSpot(rate=None) as fake:
        fake.storm(1.0, statuses=(429,), retry_after="2")
        status, headers, body = read(fake)
        assert (status, headers.get("Retry-After")) == (429, "2")
        assert json.loads(body)["policyName"] == "TEN_SECONDLY_ROLLING"
        fake.storm(1.0, statuses=(502,))
        status, headers, body = read(fake)
        assert status == 502 and headers["Content-Type"] == "text/html" and b"502" in body
        assert read(fake, token="pat-wrong")[0] == 401  # auth is checked first
        fake.calm()
        assert read(fake)[0] == 200
        assert fake.stormed == Counter({429: 1, 502: 1})


def test_a_storm_needs_a_share_and_statuses():
    with FakeHubSpot(rate=None) as fake:
        with pytest.raises(ValueError):
            fake.storm(1.5)
        with pytest.raises(ValueError):
            fake.storm(0.5, statuses=())
