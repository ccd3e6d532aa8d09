"""The dashboard through Flask's test client on a real Redis: sign-in, CSRF, every panel with a
known history (tests/browser/story.py), the dead-letter retry, rq-dashboard behind the same login,
and no 500 for anything a browser can send."""

from __future__ import annotations

import json
import re
import shutil
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from rq import Queue
from rq.serializers import JSONSerializer

from engine.pipeline import SYNC_QUEUE, Runtime, build_runtime, drain_events, sync_dirty
from engine.web import create_app
from tests.browser import story

TOKEN = "dash-token-123"
ROOT = Path(__file__).resolve().parent.parent
PAGES = ["/", "/contacts", "/contacts/ann@example.com", "/rules", "/sync", "/deliveries", "/rq/"]


def make_app(redis_url: str, rules_file: Path | str = ROOT / "rules.yaml", **extra):
    config = {
        "redis_url": redis_url,
        "api_token": TOKEN,
        "webhook_secrets": {"standard": story.WEBHOOK_SECRET},
        "rules_file": str(rules_file),
        **extra,
    }
    return create_app(config)


@pytest.fixture
def app(redis_url, redis_client):
    return make_app(redis_url)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def seeded(app, client, redis_client):
    """The story processed and pushed to the sandbox; one dead letter; one delivery quarantined
    and one with an ignored event."""
    settings = app.extensions["lifecycle"].settings
    Runtime.install(build_runtime(settings, redis_client))
    now = datetime.now(UTC)
    reply = client.post("/api/events", json=story.events(now), headers=bearer())
    assert reply.status_code == 202, reply.json
    drain_events()
    sync_dirty("sandbox")
    store = app.extensions["lifecycle"].store
    store.mark_failed("sandbox", story.DEAD_LETTER_EMAIL, story.DEAD_LETTER_ERROR, True, now)
    body, headers = story.unusable_delivery(now)
    assert client.post("/webhooks/standard", data=body, headers=headers).json["quarantined"] == 1
    store.accept([], now, channel="calendly", ignored=1)
    yield store
    Runtime._current = None


def bearer() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


def login_form(client, path: str = "/login") -> str:
    page = client.get(path).get_data(as_text=True)
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


def sign_in(client, token: str = TOKEN, **extra):
    return client.post("/login", data={"csrf_token": login_form(client), "token": token, **extra})


def csrf(client) -> str:
    with client.session_transaction() as session:
        return session["csrf"]


def text(response) -> str:
    return response.get_data(as_text=True)


# --- access --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PAGES)
def test_signed_out_pages_redirect_to_the_login(client, path):
    response = client.get(path)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=")


def test_login_with_the_api_token_lands_where_asked(client):
    response = sign_in(client, next="/rules")
    assert (response.status_code, response.headers["Location"]) == (302, "/rules")
    assert client.get("/rules").status_code == 200
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and TOKEN not in cookie


def test_bad_token_is_refused(client):
    response = sign_in(client, token="guess")
    assert response.status_code == 401
    assert "That is not the API token" in text(response)
    assert client.get("/").status_code == 302


def test_login_without_its_csrf_token_is_refused(client):
    login_form(client)
    response = client.post("/login", data={"token": TOKEN})
    assert response.status_code == 400
    assert client.get("/").status_code == 302


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "/\\evil"])
def test_login_never_redirects_off_site(client, target):
    assert sign_in(client, next=target).headers["Location"] == "/"


def test_sign_out_needs_csrf_and_ends_the_session(client):
    sign_in(client)
    assert client.post("/logout").status_code == 403
    assert client.get("/").status_code == 200
    assert client.post("/logout", data={"csrf_token": csrf(client)}).status_code == 302
    assert client.get("/").status_code == 302


def test_the_json_api_stays_bearer_only(client):
    sign_in(client)
    assert client.get("/api/funnel").status_code == 401
    assert client.get("/api/funnel", headers=bearer()).status_code == 200


def test_the_session_key_is_derived_from_the_token(redis_url, redis_client):
    first, second = make_app(redis_url), make_app(redis_url, api_token="another-token")
    assert first.secret_key and first.secret_key != second.secret_key
    assert TOKEN not in first.secret_key
    client = first.test_client()
    sign_in(client)
    cookie = client.get_cookie("lifecycle_session")
    other = second.test_client()
    other.set_cookie("lifecycle_session", cookie.value)
    assert other.get("/").status_code == 302  # a new token signs everyone out


def test_without_an_api_token_the_dashboard_is_disabled(redis_url, redis_client):
    client = create_app({"redis_url": redis_url, "rules_file": "rules.yaml"}).test_client()
    assert client.get("/").status_code == 302
    response = client.get("/login")
    assert response.status_code == 503 and "disabled until" in text(response)


def test_action_without_the_csrf_token_is_refused(client, seeded):
    sign_in(client)
    email = story.DEAD_LETTER_EMAIL
    for data in ({"email": email}, {"email": email, "csrf_token": "forged"}):
        response = client.post("/sync/sandbox/retry", data=data)
        assert response.status_code == 403
        assert "did not come from this dashboard" in text(response)
    assert [row["email"] for row in seeded.dead_letters("sandbox")] == [email]


def test_signed_out_action_changes_nothing(client, seeded):
    response = client.post("/sync/sandbox/retry", data={"email": story.DEAD_LETTER_EMAIL})
    assert response.status_code == 302
    assert len(seeded.dead_letters("sandbox")) == 1


# --- panels --------------------------------------------------------------------------------------


def chart_data(page: str) -> dict:
    found = re.search(r'<script type="application/json" id="funnel-data">(.*?)</script>', page)
    assert found, page
    return json.loads(found.group(1))


def test_funnel_panel_matches_the_api(client, seeded):
    sign_in(client)
    api = client.get("/api/funnel", headers=bearer()).json
    page = text(client.get("/"))
    chart = chart_data(page)
    assert chart["reached"] == [row["reached"] for row in api["stages"]]
    assert chart["current"] == [row["current"] for row in api["stages"]]
    assert chart["labels"][:3] == ["Subscriber", "Lead", "Marketing qualified lead"]
    assert f"{api['total_contacts']} contact(s)" in page
    assert 'id="funnel-chart"' in page and "chart.umd.min.js" in page


def test_funnel_over_a_period_counts_contacts_first_seen_in_it(client, seeded):
    sign_in(client)
    everyone = chart_data(text(client.get("/?period=365d")))
    api = client.get("/api/funnel", headers=bearer()).json
    assert everyone["reached"] == [row["reached"] for row in api["stages"]]
    assert everyone["current"] == [row["current"] for row in api["stages"]]
    for mine, theirs in zip(everyone["median_hours"], api["stages"], strict=True):
        assert mine == pytest.approx(theirs["median_hours_to_reach"], abs=0.01)
    week = text(client.get("/?period=7d"))
    assert "3 contact(s) first seen" in week  # cy, ed and fay; not ann, bo or di
    reached = dict(zip(chart_data(week)["labels"], chart_data(week)["reached"], strict=True))
    assert (reached["Subscriber"], reached["Customer"], reached["Opportunity"]) == (3, 1, 1)


def test_funnel_custom_period_and_bad_input(client, seeded):
    sign_in(client)
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    page = text(client.get(f"/?period=custom&since={today}&until={today}"))
    assert "contact(s) first seen" in page
    bad = client.get("/?period=custom&since=yesterday")
    assert bad.status_code == 200 and "dates are written YYYY-MM-DD" in text(bad)
    assert "unknown period" in text(client.get("/?period=forever"))


def test_contact_search_and_timeline(client, seeded):
    sign_in(client)
    exact = client.get("/contacts?q=ANN@example.com")
    assert exact.headers["Location"] == "/contacts/ann@example.com"
    listing = text(client.get("/contacts?q=example"))
    assert all(email in listing for email in story.EMAILS)
    assert "No contact's email contains" in text(client.get("/contacts?q=nobody"))
    assert "Most recently first seen" in text(client.get("/contacts"))
    page = text(client.get(exact.headers["Location"]))
    view = client.get("/api/contacts/ann@example.com", headers=bearer()).json
    assert "Opportunity" in page and view["stage"] == "opportunity"
    assert page.count('class="event"') == len(view["timeline"]) == 9
    assert "wrong-number-is-unqualified" in page and "refused" in page
    refusal = next(c for e in view["timeline"] for c in e["changes"] if c["outcome"] == "refused")
    assert refusal["reason"] in page.replace("&#39;", "'")
    assert view["timeline"][0]["rules_version"][:10] in page


def test_rules_panel_with_fire_counts_warnings_and_a_refused_reload(
    redis_url, redis_client, tmp_path
):
    rules_file = tmp_path / "rules.yaml"
    text_ = (ROOT / "rules.yaml").read_text().replace(
        "rules:\n", "rules:\n  - name: odd-event\n    when: {event: webinar_atended}\n"
        "    then: {promote: lead}\n", 1
    )  # fmt: skip
    rules_file.write_text(text_)
    shutil.copy(ROOT / "rules.test.yaml", tmp_path / "rules.test.yaml")
    app = make_app(redis_url, rules_file)
    client = app.test_client()
    sign_in(client)
    page = text(client.get("/rules"))
    version = app.extensions["lifecycle"].rules.current().version
    assert version in page and "odd-event" in page and "meeting-booked-makes-sql" in page
    assert "webinar_atended" in page  # the lint warning, with file:line
    rules = app.extensions["lifecycle"].rules
    rules_file.write_text(text_ + "\n  - name: broken\n")
    rules.interval = 0
    page = text(client.get("/rules"))
    assert "refused" in page and 'id="reload-error"' in page and version in page


def test_rules_panel_counts_fires(client, seeded):
    sign_in(client)
    page = text(client.get("/rules"))
    row = re.search(r"<strong>meeting-booked-makes-sql</strong>.*?</tr>", page, re.S)
    assert row and re.search(r'<td class="num">2</td>\s*</tr>', row.group(0)), row


def test_sync_panel_shows_dead_letters_and_retry_requeues(app, client, seeded, redis_client):
    queue = Queue(SYNC_QUEUE, connection=redis_client, serializer=JSONSerializer)
    queued = queue.count
    sign_in(client)
    page = text(client.get("/sync"))
    assert story.DEAD_LETTER_EMAIL in page and "INVALID_OPTION" in page
    assert "no limiter (local)" in page
    response = client.post(
        "/sync/sandbox/retry", data={"email": story.DEAD_LETTER_EMAIL, "csrf_token": csrf(client)}
    )
    assert (response.status_code, response.headers["Location"]) == (302, "/sync")
    assert "1 contact(s) queued for another push to sandbox" in text(client.get("/sync"))
    assert seeded.dead_letters("sandbox") == [] and seeded.dirty_count("sandbox") == 1
    assert queue.count == queued + 1  # a sync job on its way
    sync_dirty("sandbox")
    view = client.get(f"/api/contacts/{story.DEAD_LETTER_EMAIL}", headers=bearer()).json
    assert view["sync"]["sandbox"]["state"] == "synced"


def test_retry_all(client, seeded):
    now = datetime.now(UTC)
    seeded.mark_failed("sandbox", "cy@example.com", "refused", True, now)
    sign_in(client)
    response = client.post("/sync/sandbox/retry", data={"csrf_token": csrf(client)})
    assert response.status_code == 302
    assert seeded.dead_letters("sandbox") == [] and seeded.dirty_count("sandbox") == 2
    unknown = client.post("/sync/nowhere/retry", data={"csrf_token": csrf(client)})
    assert unknown.status_code == 404


def test_sync_panel_shows_budget_and_salesforce_usage(redis_url, redis_client):
    app = make_app(
        redis_url,
        crm_targets=("hubspot", "salesforce"),
        hubspot_access_token="pat-na1-00000000-0000-0000-0000-000000000000",
        salesforce_login_url="https://acme.my.salesforce.com",
        salesforce_client_id="id",
        salesforce_client_secret="secret",
    )
    redis_client.hset(
        "lc:crm:salesforce:api_usage",
        mapping={"used": "4200", "limit": "15000", "header": "api-usage=4200/15000", "at": "1"},
    )
    client = app.test_client()
    sign_in(client)
    page = text(client.get("/sync"))
    assert "0 of 100 requests in use per 10.1 s" in page  # HubSpot: 100/10s and a guard
    assert "0 of 100 requests in use per 10.0 s" in page  # Salesforce
    assert "4200 of 15000 today" in page and "28%" in page


def test_sync_panel_says_when_a_crm_is_not_configured(redis_url, redis_client):
    client = make_app(redis_url, crm_targets=("hubspot",)).test_client()
    sign_in(client)
    page = client.get("/sync")
    assert page.status_code == 200 and "not configured: HUBSPOT_ACCESS_TOKEN" in text(page)


def test_deliveries_panel_shows_ignored_and_quarantined(client, seeded):
    sign_in(client)
    page = text(client.get("/deliveries"))
    assert "calendly" in page and "event is missing email" in page
    assert "gus@example.com" in page  # the kept body, for inspection
    assert page.count('class="num warn"') == 2


def test_static_assets_ship_with_the_package(client):
    for name in ("vendor/chart.js/chart.umd.min.js", "dashboard.js", "dashboard.css"):
        response = client.get(f"/assets/{name}")
        assert response.status_code == 200, name
        response.close()
    assert (ROOT / "engine/web/static/vendor/chart.js/LICENSE.md").exists()
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    shipped = config["tool"]["setuptools"]["package-data"]["engine.web"]
    assert set(shipped) == {"templates/**/*", "static/**/*"}  # in the wheel, not only the repo


def test_pages_are_locked_down(client, seeded):
    sign_in(client)
    response = client.get("/")
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["Cache-Control"] == "no-store"


# --- rq-dashboard --------------------------------------------------------------------------------


def test_rq_dashboard_behind_the_login_with_csrf_on_its_actions(client, seeded):
    assert client.get("/rq/0/data/queues.json").status_code == 401
    sign_in(client)
    page = client.get("/rq/")
    assert page.status_code == 200 and "rq-csrf.js" in text(page)
    queues = client.get("/rq/0/data/queues.json").json["queues"]
    assert {q["name"] for q in queues} >= {"sync"}
    assert client.post("/rq/queue/sync/compact").status_code == 403
    assert client.get("/rq/requeue/sync").status_code == 403  # a GET that changes things
    ok = client.post("/rq/queue/sync/compact", headers={"X-CSRF-Token": csrf(client)})
    assert ok.status_code == 200


# --- never a 500 ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/?period=custom&since=2026-13-45&until=x",
        "/?period=custom&until=2026-01-01",
        "/?period=%00",
        "/contacts?q=" + "a" * 5000,
        "/contacts?q=%5B%2A%3F%5C",
        "/contacts/not-an-email",
        "/contacts/nobody@example.com",
        "/contacts/%00",
        "/assets/../dashboard.py",
        "/nowhere",
    ],
)
def test_never_a_500(client, seeded, path):
    sign_in(client)
    response = client.get(path)
    assert response.status_code < 500, text(response)[:500]


def test_redis_down_is_a_503_page_not_a_500(tmp_path):
    app = make_app("redis://127.0.0.1:1/0")
    client = app.test_client()
    sign_in(client)
    for path in ("/", "/contacts?q=ann", "/rules", "/sync", "/deliveries"):
        response = client.get(path)
        assert response.status_code == 503, (path, text(response)[:300])
        assert "Redis is unavailable" in text(response)
