"""The dashboard in headless Chromium (Debian's, driven by Playwright) against the real service:
sign in, the funnel chart, a contact's timeline, a dead letter retried until the worker pushes it,
the other panels and /rq. The tests share one tab and run in file order."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from tests.browser import story
from tests.browser.conftest import TOKEN
from tests.processes import wait_for

CHART_PIXELS = """() => {
  const canvas = document.getElementById('funnel-chart');
  const chart = canvas && window.Chart && window.Chart.getChart(canvas);
  if (!chart) { return null; }
  const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let painted = 0;
  for (let i = 3; i < pixels.length; i += 4) { if (pixels[i] > 0) { painted += 1; } }
  return {reached: chart.data.datasets[0].data, labels: chart.data.labels, painted: painted};
}"""


def test_sign_in_then_the_funnel_chart(page, served, screenshot, problems):
    page.goto("/")
    assert "/login" in page.url
    page.fill("#token", "not-the-token")
    page.click("button[type=submit]")
    assert "That is not the API token" in page.inner_text("main")
    screenshot(page, "dashboard-login.png")
    page.fill("#token", TOKEN)
    page.click("button[type=submit]")
    page.wait_for_url(f"{served.base}/")
    page.wait_for_function(
        "() => window.Chart && Chart.getChart(document.getElementById('funnel-chart'))"
    )
    drawn = page.evaluate(CHART_PIXELS)
    reached = dict(zip(drawn["labels"], drawn["reached"], strict=True))
    assert (reached["Subscriber"], reached["Lead"], reached["Customer"]) == (6, 5, 1)
    assert drawn["painted"] > 5_000, drawn  # bars, axes and labels, not a blank canvas
    assert page.locator("#funnel-table tbody tr").count() == len(drawn["labels"])
    screenshot(page, "dashboard-funnel.png")
    page.select_option("#period", "7d")
    page.click("form.period button")
    page.wait_for_url(re.compile(r"period=7d"))
    assert "3 contact(s) first seen" in page.inner_text("main")
    assert not page.is_visible("input[name=since]")
    page.select_option("#period", "custom")
    since = (datetime.now(UTC) - timedelta(days=10)).strftime("%Y-%m-%d")
    page.fill("input[name=since]", since)
    page.click("form.period button")
    page.wait_for_url(re.compile(r"period=custom"))
    assert "4 contact(s) first seen" in page.inner_text("main")  # bo too
    assert problems == []


def test_search_a_contact_and_open_its_timeline(page, screenshot, problems):
    page.click("nav >> text=Contacts")
    page.fill("input[name=q]", "ann")
    page.press("input[name=q]", "Enter")
    page.click("#contacts >> text=ann@example.com")
    page.wait_for_url(re.compile(r"/contacts/ann@example.com$"))
    timeline = page.locator("#timeline > li")
    assert timeline.count() == 9
    refused = page.locator("tr.refused")
    assert refused.count() == 1
    assert "wrong-number-is-unqualified" in refused.inner_text()
    assert "stale: event occurred at" in refused.inner_text()
    assert page.inner_text(".facts .stage") == "Opportunity"
    screenshot(page, "dashboard-contact.png")
    assert problems == []


def test_retry_a_dead_letter(page, served, screenshot, problems):
    page.click("nav >> text=Sync")
    card = page.locator("#sync-hubspot")
    row = card.locator("table.dead-letters tbody tr")
    assert row.count() == 1 and story.DEAD_LETTER_EMAIL in row.inner_text()
    assert "INVALID_OPTION" in row.inner_text()
    assert re.search(r"\d+ of 100 requests in use per 10\.1 s", card.inner_text())
    screenshot(page, "dashboard-sync.png")
    row.locator("button.retry").click()
    page.wait_for_selector(".flash")
    assert "1 contact(s) queued for another push to hubspot" in page.inner_text(".flash")
    assert card.locator("table.dead-letters").count() == 0

    def pushed() -> bool:
        record = served.store.sync_records(story.DEAD_LETTER_EMAIL, ["hubspot"])["hubspot"]
        return record.get("state") == "synced"

    wait_for(pushed, 20, "the worker to push the retried contact", served.worker.log_tail)
    assert served.hubspot.contact(story.DEAD_LETTER_EMAIL) is not None
    page.reload()
    assert page.inner_text("#sync-hubspot .dead") == "0"
    assert problems == []


def test_rules_deliveries_and_queues(page, screenshot, problems):
    page.click("nav >> text=Rules")
    assert page.locator("#rules tbody tr").count() >= 15
    assert "meeting-booked-makes-sql" in page.inner_text("#rules")
    screenshot(page, "dashboard-rules.png")
    page.click("nav >> text=Deliveries")
    assert "event is missing email" in page.inner_text("#quarantine")
    assert "calendly" in page.inner_text("#deliveries")
    screenshot(page, "dashboard-deliveries.png")
    assert problems == []
    page.click("nav >> text=Queues")
    page.wait_for_url(re.compile(r"/rq/$"))
    page.wait_for_selector("#queues tbody >> text=sync")  # filled by its XHR polling
    screenshot(page, "dashboard-rq.png")
