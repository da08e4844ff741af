"""Hand-made clicks for the store, API and dashboard tests, their answers in plain Python, and
a session fixture that puts them into a SQLite and a Bigtable sink through the real DAG."""

import collections

import apache_beam as beam
import orjson
import pytest

from pipelines.click_pipeline import build_pipeline
from pipelines.config import AggregateConfig, PipelineConfig
from sinks import sink_for
from sinks.dead_letters import WriteDeadLetters
from transforms.records import RawRecord

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
MINUTE = 60_000
TOP_N = 3  # small, so that queries for more ads than the stored ranking holds are exercised
SLIDING_MINUTES = 4  # the top N the pipeline also ranks over the last 4 minutes, every minute
CONFIG = PipelineConfig(aggregates=AggregateConfig(
    filter_dimensions=(("country",), ("country", "user_id")), top_n=TOP_N, hot_key_fanout=2,
    sliding_minutes=SLIDING_MINUTES))

# (ad_id, minute after T0, country, user_id). Ties on purpose (a/b, a#.../ad-10, the ones), ad_ids
# that extend others (ad-1/ad-10, a/a#<digits>), a non-ASCII ad_id, unknown countries and users.
ROWS = [
    ("a", 0, "US", "u1"), ("a", 0, "US", "u2"), ("a", 0, "DE", "u1"),
    ("b", 0, "US", "u1"), ("b", 0, "FR", None), ("b", 0, None, "u3"),
    ("c", 0, "US", "u1"),
    ("a#1767225600000", 0, "US", None), ("a#1767225600000", 0, "US", None),
    ("ad-1", 0, "JP", None), ("ad-10", 0, "JP", None), ("ad-10", 0, "JP", "u9"),
    ("广告-1", 0, "JP", None),
    ("a", 1, "US", "u1"), ("b", 1, "US", None), ("b", 1, "GB", None),
    ("c", 1, "US", "u1"), ("c", 1, "US", "u1"), ("c", 1, "DE", "u2"), ("c", 1, None, None),
    ("b", 3, "US", "u1"),
]
ADS = sorted({row[0] for row in ROWS}) + ["never-clicked"]


def events():
    """The clicks as raw events, plus one resend of the first (same event_id): it must count once."""
    made = []
    for n, (ad_id, minute, country, user_id) in enumerate(ROWS):
        event = {"event_id": f"e{n}", "ad_id": ad_id, "click_ts": T0 + minute * MINUTE + (n * 7 % 60) * 1000}
        if country:
            event["country"] = country
        if user_id:
            event["user_id"] = user_id
        made.append(event)
    return made + [dict(made[0])]


def _unique():
    seen = {}
    for event in events():
        seen.setdefault(event["event_id"], event)
    return list(seen.values())


def _matches(event, filter_text):
    if not filter_text:
        return True
    wanted = dict(part.split("=", 1) for part in filter_text.split(","))
    return all((event.get(name) or "unknown") == value for name, value in wanted.items())


def expected_clicks(ad_id, start, end, filter_text=None):
    return sum(1 for e in _unique()
               if e["ad_id"] == ad_id and start <= e["click_ts"] - e["click_ts"] % MINUTE < end
               and _matches(e, filter_text))


def expected_per_minute(ad_id, start, end, filter_text=None):
    counts = collections.Counter(
        e["click_ts"] - e["click_ts"] % MINUTE for e in _unique()
        if e["ad_id"] == ad_id and start <= e["click_ts"] < end and _matches(e, filter_text))
    return dict(counts)


def expected_top(start, end, filter_text=None, count=100):
    totals = collections.Counter(
        e["ad_id"] for e in _unique() if start <= e["click_ts"] < end and _matches(e, filter_text))
    return sorted(totals.items(), key=lambda item: (-item[1], item[0]))[:count]


def load(sink, dead_letters_path):
    """Runs the DAG over `events()` into `sink`."""
    records = [RawRecord(orjson.dumps(event), "hand-made", n) for n, event in enumerate(events(), 1)]
    with beam.Pipeline() as pipeline:
        build_pipeline(pipeline, beam.Create(records), sink, WriteDeadLetters(str(dead_letters_path)), CONFIG)


@pytest.fixture(scope="session", params=["sqlite", pytest.param("bigtable", marks=pytest.mark.bigtable)])
def loaded_sink(request, tmp_path_factory):
    """A sink URL holding the aggregates of `events()`: SQLite, then Bigtable on the emulator."""
    out = tmp_path_factory.mktemp(f"serving-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite:///{out / 'clicks.db'}"
    else:
        from sinks import bigtable_table
        from sinks.bigtable import create_table
        from tests.servers.bigtable import new_table_url
        request.getfixturevalue("bigtable_emulator")
        url = new_table_url("serving")
        create_table(bigtable_table(url))
    load(sink_for(url), out / "dead.jsonl")
    return url
