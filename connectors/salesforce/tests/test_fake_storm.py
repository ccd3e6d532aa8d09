"""The fake org's storm mode (used by tests/test_fault_storms.py): a seeded share of API requests
answered 403 REQUEST_LIMIT_EXCEEDED, 429 with Retry-After, or a 5xx, until `calm()`."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter

import pytest

from connectors.salesforce.fake_server import FakeSalesforce


def call(fake: FakeSalesforce, path: str, data: bytes | None = None, headers=None):
    request = urllib.request.Request(f"{fake.base_url}{path}", data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return reply.status, dict(reply.headers), reply.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers), exc.read()


def token(fake: FakeSalesforce) -> str:
    fields = {
        "grant_type": "client_credentials",
        "client_id": fake.client_id,
        "client_secret": fake.client_secret,
    }
    form = urllib.parse.urlencode(fields).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    status, _, body = call(fake, "/services/oauth2/token", form, headers)
    assert status == 200, body
    return json.loads(body)["access_token"]


def query(fake: FakeSalesforce, bearer: str) -> tuple[int, dict[str, str], bytes]:
    q = urllib.parse.quote_plus("SELECT Id, Email FROM Lead")
    path = f"/services/data/{fake.version}/query?q={q}"
    return call(fake, path, headers={"Authorization": f"Bearer {bearer}"})


@pytest.fixture
def fake():
    server = FakeSalesforce().start()
    yield server
    server.stop()


def test_a_storm_fails_a_seeded_share_of_api_requests(fake):
    bearer = token(fake)

    def run(seed: int) -> list[int]:
        fake.storm(0.5, seed=seed)
        return [query(fake, bearer)[0] for _ in range(200)]

    seen = run(3)
    counts = Counter(seen)
    failed = len(seen) - counts[200]
    assert 70 <= failed <= 130, counts
    assert {403, 429, 500, 502, 503} <= set(counts), counts
    assert run(3) == seen
    fake.calm()
    assert query(fake, bearer)[0] == 200


def test_storm_answers_look_like_salesforces_and_the_token_endpoint_is_spared(fake):
    fake.storm(1.0, statuses=(403,))
    bearer = token(fake)  # the login is not part of the storm
    status, _, body = query(fake, bearer)
    assert status == 403 and json.loads(body)[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"
    fake.storm(1.0, statuses=(429,), retry_after="3")
    status, headers, _ = query(fake, bearer)
    assert (status, headers.get("Retry-After")) == (429, "3")
    fake.storm(1.0, statuses=(503,))
    status, headers, _ = query(fake, bearer)
    assert status == 503 and headers["Content-Type"] == "text/html"
    assert query(fake, "not-a-token")[0] == 401  # auth is checked first
    fake.calm()
    assert query(fake, bearer)[0] == 200
    assert fake.stormed == Counter({403: 1, 429: 1, 503: 1})


def test_leads_with_finds_every_lead_of_an_email(fake):
    first = fake.add_lead("Ann@example.com")
    second = fake.add_lead("ann@example.com")
    fake.add_lead("bo@example.com")
    found = fake.leads_with("ANN@example.com")
    assert sorted(r["Id"] for r in found) == sorted([first, second])
    found[0]["Status"] = "changed"  # copies: the org is not touched
    assert all(r["Status"] != "changed" for r in fake.leads.values())
