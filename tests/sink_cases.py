"""Hand-made clicks replayed with `adclick replay` (the launcher, so the sink's metadata is checked and
recorded as a user's run does), their answers in plain Python, and a fresh sink of each kind per test."""

import collections
import sqlite3

import orjson
import pytest

from runners import replay

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
MINUTE = 60_000
HALF = MINUTE // 2

# (ad_id, seconds after T0, country, user_id). In minute 0, "a" leads the first half-minute and "b" the
# whole minute, so that a ranking of one 30-second window is not the minute's; ad_ids with '/' and
# ones that look like the API's own paths.
CLICKS = [
    ("a", 5, "US", "u1"), ("a", 10, "DE", "u2"), ("b", 20, "US", "u1"),
    ("b", 35, "US", "u1"), ("b", 40, "FR", None), ("b", 50, None, "u3"), ("c", 55, "US", "u1"),
    ("a", 62, "US", "u1"), ("c", 70, "US", None), ("c", 95, "DE", "u2"), ("c", 100, "US", "u1"),
    ("ad/with/slash", 3, "US", "u1"), ("ad/with/slash", 33, "JP", None), ("ad/with/slash", 130, "JP", "u4"),
    ("x/aggregated_count", 12, "US", None), ("popular_ads", 14, "US", None), ("/lead//double/", 15, "GB", None),
    ("b", 125, "US", "u1"), ("a", 170, "US", "u2"),
]
ADS = sorted({ad for ad, *_ in CLICKS})
PLAIN_ADS = [ad_id for ad_id in ADS if "/" not in ad_id]
MINUTES = [T0 + n * MINUTE for n in range(3)]


def events():
    made = []
    for n, (ad_id, second, country, user_id) in enumerate(CLICKS):
        event = {"event_id": f"e{n}", "ad_id": ad_id, "click_ts": T0 + second * 1000}
        event |= {"country": country} if country else {}
        event |= {"user_id": user_id} if user_id else {}
        made.append(event)
    return made


def matches(event, filter_text):
    wanted = dict(part.split("=", 1) for part in filter_text.split(",")) if filter_text else {}
    return all((event.get(name) or "unknown") == value for name, value in wanted.items())


def minute_of(event):
    return event["click_ts"] - event["click_ts"] % MINUTE


def expected_count(ad_id, start, end, filter_text=None):
    return sum(1 for e in events() if e["ad_id"] == ad_id and start <= minute_of(e) < end and matches(e, filter_text))


def expected_top(start, end, count=100):
    totals = collections.Counter(e["ad_id"] for e in events() if start <= minute_of(e) < end)
    return sorted(totals.items(), key=lambda item: (-item[1], item[0]))[:count]


def write_log(path):
    path.write_bytes(b"".join(orjson.dumps(event) + b"\n" for event in events()))
    return path


def replay_into(url, log, tmp_path, *extra):
    """`adclick replay` of `log` into `url`; the run summary, or SystemExit when the launcher refuses."""
    return replay.run(["--input", str(log), "--sink", url, "--dead-letter", str(tmp_path / "dead.jsonl"),
                       "--parse-processes", "0", *extra])


def sqlite_meta(url):
    from sinks import sqlite_path
    with sqlite3.connect(sqlite_path(url)) as connection:
        return dict(connection.execute("SELECT key, value FROM sink_meta"))


@pytest.fixture(params=["sqlite", pytest.param("bigtable", marks=pytest.mark.bigtable)])
def sink_url(request, tmp_path):
    """A fresh sink: a SQLite database that does not exist yet, then a created table on the emulator."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'sink.db'}"
    return request.getfixturevalue("bigtable_url")
