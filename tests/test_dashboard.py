"""The dashboard in headless Chromium over a real `adclick serve`: the chart and the top table show
the numbers plain Python counts, the country filter and the ad choice change them, and it follows
new minutes as they land."""

import pytest

from sinks import sink_for
from sinks.sqlite import connect, write_rows
from tests.serving_cases import MINUTE, T0, expected_per_minute, expected_top, load
from tests.servers.api import api_server
from tests.servers.chromium import page  # noqa: F401 (fixture)
from transforms.records import AdCount, TopAds

pytestmark = pytest.mark.browser
LATEST = T0 + 3 * MINUTE


@pytest.fixture
def server(tmp_path):
    db = tmp_path / "clicks.db"
    load(sink_for(f"sqlite:///{db}"), tmp_path / "dead.jsonl")
    with api_server(f"sqlite:///{db}", tmp_path / "serve.log") as (base, _):
        yield base, db


def refreshes(page):
    return int(page.evaluate("document.body.dataset.refreshes || 0"))


def wait_for_refresh(page, after):
    page.wait_for_function("n => Number(document.body.dataset.refreshes || 0) > n", arg=after, timeout=15_000)


def table(page):
    return [(row.get_attribute("data-ad"), int(row.query_selector_all("td")[2].inner_text().replace(",", "")))
            for row in page.query_selector_all("#top tbody tr[data-ad]")]


def chart(page):
    """{ad: {minute: clicks}} read from the chart's points."""
    points = {}
    for point in page.query_selector_all("#chart circle"):
        ad = point.get_attribute("data-ad")
        points.setdefault(ad, {})[int(point.get_attribute("data-minute"))] = int(point.get_attribute("data-count"))
    return points


def expected_chart(ads, at, span, filter_text=None):
    minutes = range(at - (span - 1) * MINUTE, at + MINUTE, MINUTE)
    return {ad: {m: expected_per_minute(ad, minutes[0], at + MINUTE, filter_text).get(m, 0) for m in minutes}
            for ad in ads}


def test_dashboard_shows_filters_and_follows_the_numbers(server, page, tmp_path):
    base, db = server
    page.goto(f"{base}/")
    wait_for_refresh(page, 0)

    top = expected_top(LATEST - 4 * MINUTE, LATEST + MINUTE, count=20)  # the last 5 minutes up to the newest
    assert table(page) == top
    assert chart(page) == expected_chart([ad for ad, _ in top[:5]], LATEST, 30)
    assert "2026-01-01 00:03 UTC" in page.inner_text("#status")
    page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)

    before = refreshes(page)
    page.select_option("#country", "US")
    wait_for_refresh(page, before)
    top_us = expected_top(LATEST - 4 * MINUTE, LATEST + MINUTE, "country=US", count=20)
    assert table(page) == top_us and top_us != top
    assert chart(page) == expected_chart([ad for ad, _ in top_us[:5]], LATEST, 30, "country=US")
    assert "country=US" in page.url

    before = refreshes(page)
    page.fill("#ads", "c, ad-10")
    page.fill("#window", "2")
    page.click("#apply")
    wait_for_refresh(page, before)
    assert chart(page) == expected_chart(["c", "ad-10"], LATEST, 30, "country=US")
    assert table(page) == expected_top(LATEST - MINUTE, LATEST + MINUTE, "country=US", count=20)
    assert [item.get_attribute("data-ad") for item in page.query_selector_all("#legend li")] == ["c", "ad-10"]

    before = refreshes(page)
    page.click('#top tbody tr[data-ad="b"]')  # a click on a row adds its ad to the chart
    wait_for_refresh(page, before)
    assert list(chart(page)) == ["c", "ad-10", "b"]
    page.screenshot(path=str(tmp_path / "dashboard-us.png"), full_page=True)

    # A stream lands a new minute: the page, refreshing every 5 s, follows it.
    newest = LATEST + MINUTE
    connection = connect(str(db))
    write_rows(connection, per_ad=[AdCount("z", newest, 50), AdCount("c", newest, 7)],
               top_ads=[TopAds(newest, (("z", 50), ("c", 7)))])
    connection.close()
    page.select_option("#country", "")
    page.wait_for_function("() => document.getElementById('status').innerText.includes('00:04 UTC')",
                           timeout=15_000)
    before = refreshes(page)
    wait_for_refresh(page, before)
    expected = expected_top(newest - MINUTE, newest, count=20)
    expected = sorted(dict(expected, z=50, c=dict(expected).get("c", 0) + 7).items(), key=lambda i: (-i[1], i[0]))
    assert table(page) == expected
    assert chart(page)["c"][newest] == 7
    assert page.console_errors == []
