"""The dashboard in headless Chromium over a real `adclick serve`: the chart and the top table show
the numbers plain Python counts, the country filter and the ad choice change them, and it follows
new minutes as they land. Then its edges: a span chosen by the data, times in UTC, a window over the
API's limit, more ads than colours, a day-long span, ad ids with `/` or markup, an ad the API refuses,
and a phone-wide page."""

import collections

import pytest

from sinks import sink_for
from sinks.sqlite import connect, write_rows
from tests.servers.api import api_server
from tests.serving_cases import MINUTE, T0, expected_per_minute, expected_top, load
from transforms.records import AdCount, TopAds

pytestmark = pytest.mark.browser
LATEST = T0 + 3 * MINUTE
AUTO_SPAN = 60  # minutes an empty span looks back (dashboard.js)
MAX_SPAN = 1440


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
    for ad, minute, count in page.evaluate(
            "() => [...document.querySelectorAll('#chart circle')]"
            ".map(c => [c.dataset.ad, Number(c.dataset.minute), Number(c.dataset.count)])"):
        points.setdefault(ad, {})[minute] = count
    return points


def chart_minutes(at, span=None, per_minute=None):
    """The minutes a chart up to `at` shows: `span` of them, or by default up to AUTO_SPAN from the
    first in which `per_minute` ({ad: {minute: clicks}}, the charted ads) has a click."""
    if span is None:
        looked_at = range(at - (AUTO_SPAN - 1) * MINUTE, at + MINUTE, MINUTE)
        clicked = [m for m in looked_at if any(counts.get(m) for counts in per_minute.values())]
        first = clicked[0] if clicked else looked_at[0]
        return range(first, at + MINUTE, MINUTE)
    return range(at - (span - 1) * MINUTE, at + MINUTE, MINUTE)


def expected_chart(ads, at, span=None, filter_text=None):
    per_minute = {ad: expected_per_minute(ad, at - MAX_SPAN * MINUTE, at + MINUTE, filter_text) for ad in ads}
    minutes = chart_minutes(at, span, per_minute)
    return {ad: {m: per_minute[ad].get(m, 0) for m in minutes} for ad in ads}


def test_dashboard_shows_filters_and_follows_the_numbers(server, page, tmp_path):
    base, db = server
    page.goto(f"{base}/")
    wait_for_refresh(page, 0)

    top = expected_top(LATEST - 4 * MINUTE, LATEST + MINUTE, count=20)  # the last 5 minutes up to the newest
    assert table(page) == top
    assert chart(page) == expected_chart([ad for ad, _ in top[:5]], LATEST)
    assert list(chart(page)["a"])[0] == T0  # the span starts at the first minute with clicks
    assert "2026-01-01 00:03 UTC" in page.inner_text("#status")
    page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)

    shows_a_country(page, top)
    shows_the_ads_asked_for(page, tmp_path)
    follows_a_new_minute(page, db)


def shows_a_country(page, top):
    """The country filter: its top ads and chart, and the URL that keeps it."""
    before = refreshes(page)
    page.select_option("#country", "US")
    wait_for_refresh(page, before)
    top_us = expected_top(LATEST - 4 * MINUTE, LATEST + MINUTE, "country=US", count=20)
    assert table(page) == top_us and top_us != top
    assert chart(page) == expected_chart([ad for ad, _ in top_us[:5]], LATEST, filter_text="country=US")
    assert "country=US" in page.url


def shows_the_ads_asked_for(page, tmp_path):
    """Ads typed in, a shorter window, and a row clicked: the chart follows each."""
    before = refreshes(page)
    page.fill("#ads", "c, ad-10")
    page.fill("#window", "2")
    page.click("#apply")
    wait_for_refresh(page, before)
    assert chart(page) == expected_chart(["c", "ad-10"], LATEST, filter_text="country=US")
    assert table(page) == expected_top(LATEST - MINUTE, LATEST + MINUTE, "country=US", count=20)
    assert [item.get_attribute("data-ad") for item in page.query_selector_all("#legend li")] == ["c", "ad-10"]

    before = refreshes(page)
    page.click('#top tbody tr[data-ad="b"]')  # a click on a row adds its ad to the chart
    wait_for_refresh(page, before)
    assert list(chart(page)) == ["c", "ad-10", "b"]
    page.screenshot(path=str(tmp_path / "dashboard-us.png"), full_page=True)


def follows_a_new_minute(page, db):
    """A stream lands a new minute: the page, refreshing every 5 s, follows it."""
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


# A sample like `make run`'s: ten minutes of clicks, more ads than the chart has colours, and ad ids
# that a URL or the page could mangle. Clicks of ad k in minute m: 100 - 5k + m (no ties).
SAMPLE_MINUTES = 10
SLASH, MARKUP = "ad/with/slash", "<b>bold</b> & co"
SAMPLE_ADS = [SLASH, MARKUP] + [f"ad-{k:02d}" for k in range(15)]
SAMPLE = {ad: {T0 + m * MINUTE: 100 - 5 * k + m for m in range(SAMPLE_MINUTES)} for k, ad in enumerate(SAMPLE_ADS)}
SAMPLE_LATEST = T0 + (SAMPLE_MINUTES - 1) * MINUTE
TOO_LONG = "x" * 300  # the API takes ad ids of at most 256 characters


def sample_top(start, end, count=20):
    totals = collections.Counter()
    for ad, counts in SAMPLE.items():
        totals[ad] += sum(clicks for minute, clicks in counts.items() if start <= minute < end)
    return sorted(((ad, n) for ad, n in totals.items() if n), key=lambda item: (-item[1], item[0]))[:count]


def sample_chart(ads, minutes):
    return {ad: {m: SAMPLE[ad].get(m, 0) for m in minutes} for ad in ads}


@pytest.fixture
def sample_server(tmp_path):
    db = tmp_path / "sample.db"
    connection = connect(str(db))
    minutes = range(T0, SAMPLE_LATEST + MINUTE, MINUTE)
    write_rows(connection, per_ad=[AdCount(ad, m, counts[m]) for ad, counts in SAMPLE.items() for m in minutes],
               top_ads=[TopAds(m, tuple(sample_top(m, m + MINUTE, count=len(SAMPLE)))) for m in minutes])
    connection.close()
    with api_server(f"sqlite:///{db}", tmp_path / "serve.log") as (base, _):
        yield base


def open_dashboard(page, url):
    before = refreshes(page)
    page.goto(url)
    wait_for_refresh(page, before)


def show(page, **fields):
    """Fills the form's fields (by id) and presses Show; waits for the refresh it starts."""
    before = refreshes(page)
    for name, value in fields.items():
        page.fill(f"#{name}", value)
    page.click("#apply")
    wait_for_refresh(page, before)


def test_the_default_span_starts_at_the_first_minute_with_clicks(sample_server, page):
    open_dashboard(page, f"{sample_server}/")
    top5 = [ad for ad, _ in sample_top(SAMPLE_LATEST - 4 * MINUTE, SAMPLE_LATEST + MINUTE)[:5]]
    assert chart(page) == sample_chart(top5, range(T0, SAMPLE_LATEST + MINUTE, MINUTE))  # 10 minutes, not 30
    assert page.inner_text("#chart-caption") == "2026-01-01 00:00 – 00:10 UTC"
    show(page, span="30")  # a span typed in is kept, empty minutes and all
    assert chart(page) == sample_chart(top5, chart_minutes(SAMPLE_LATEST, 30))


def test_up_to_is_utc_and_24_hour_in_any_time_zone(sample_server, page):
    cdp = page.context.new_cdp_session(page)
    cdp.send("Emulation.setTimezoneOverride", {"timezoneId": "America/New_York"})
    cdp.send("Emulation.setLocaleOverride", {"locale": "en-US"})
    open_dashboard(page, f"{sample_server}/")
    assert page.input_value("#at") == "2026-01-01 00:09"
    before = refreshes(page)
    page.uncheck("#follow")
    wait_for_refresh(page, before)
    show(page, at="2026-01-01 00:04", window="3")
    assert page.input_value("#at") == "2026-01-01 00:04"
    assert page.inner_text("#top-caption") == "2026-01-01 00:02 – 00:05 UTC"
    assert table(page) == sample_top(T0 + 2 * MINUTE, T0 + 5 * MINUTE)
    assert "at=1767225840000" in page.url


def test_a_window_over_the_apis_limit_is_bounded_not_blank(sample_server, page):
    open_dashboard(page, f"{sample_server}/?window=61")
    assert table(page) == sample_top(SAMPLE_LATEST - 59 * MINUTE, SAMPLE_LATEST + MINUTE)
    assert "at most 60" in page.inner_text("#notice")
    assert len(chart(page)) == 5
    assert page.evaluate("document.getElementById('window').validity.rangeOverflow")  # the form says so too
    show(page, window="2")
    assert page.is_hidden("#notice")
    before = refreshes(page)
    page.fill("#window", "61")
    page.click("#apply")  # refused by the form: nothing is asked of the API
    page.wait_for_timeout(1_000)
    assert refreshes(page) == before and "window=2" in page.url
    assert table(page) == sample_top(SAMPLE_LATEST - MINUTE, SAMPLE_LATEST + MINUTE)


def test_more_ads_than_colours_says_which_are_not_charted(sample_server, page):
    open_dashboard(page, f"{sample_server}/")
    asked = SAMPLE_ADS[2:14]
    show(page, ads=", ".join(asked))
    assert list(chart(page)) == asked[:10]
    notice = page.inner_text("#notice")
    assert "12 ads asked: the chart shows the first 10" in notice and "ad-10, ad-11" in notice


def test_a_day_long_span_has_both_dates_in_its_caption(sample_server, page):
    open_dashboard(page, f"{sample_server}/?span=1440")
    assert page.inner_text("#chart-caption") == "2025-12-31 00:10 – 2026-01-01 00:10 UTC"
    top5 = [ad for ad, _ in sample_top(SAMPLE_LATEST - 4 * MINUTE, SAMPLE_LATEST + MINUTE)[:5]]
    assert chart(page) == sample_chart(top5, chart_minutes(SAMPLE_LATEST, 1440))


def test_ad_ids_with_a_slash_or_markup_are_charted_and_shown_as_text(sample_server, page):
    open_dashboard(page, f"{sample_server}/")
    assert [ad for ad, _ in table(page)[:2]] == [SLASH, MARKUP]
    assert page.query_selector("#top b") is None  # the id is text, not markup
    assert page.inner_text(f'#top tbody tr[data-ad="{SLASH}"] td.ad') == SLASH
    assert page.inner_text("#top tbody tr:nth-child(2) td.ad") == MARKUP
    clicked = {ad: {minute: n for minute, n in counts.items() if n} for ad, counts in chart(page).items()}
    assert clicked[SLASH] == SAMPLE[SLASH] and clicked[MARKUP] == SAMPLE[MARKUP]
    assert page.is_hidden("#error") and page.console_errors == []


def test_an_ad_the_api_refuses_leaves_the_others_charted(sample_server, page):
    open_dashboard(page, f"{sample_server}/")
    show(page, ads=f"ad-00, {TOO_LONG}, {SLASH}")
    minutes = range(T0, SAMPLE_LATEST + MINUTE, MINUTE)
    assert chart(page) == sample_chart(["ad-00", SLASH], minutes)
    error = page.inner_text("#error")
    assert TOO_LONG in error and "at most 256 characters" in error  # the API's own message


@pytest.mark.parametrize("width", [420, 1400])
@pytest.mark.parametrize("span", ["", "30", "1440"])
def test_time_labels_are_legible_and_never_overlap(sample_server, page, width, span):
    page.set_viewport_size({"width": width, "height": 900})
    open_dashboard(page, f"{sample_server}/?span={span}")
    labels = sorted(page.evaluate("""() => {
        const texts = [...document.querySelectorAll('#chart text')];
        const bottom = Math.max(...texts.map(t => Number(t.getAttribute('y'))));  // the time axis
        return texts.filter(t => Number(t.getAttribute('y')) === bottom)
          .map(t => { const r = t.getBoundingClientRect(); return [r.left, r.right, r.height]; });
    }"""))
    assert len(labels) >= 2
    assert all(height >= 10 for _, _, height in labels), labels  # a 12 px font, not scaled down to a smudge
    assert all(right <= next_left for (_, right, _), (next_left, _, _) in zip(labels, labels[1:])), labels
