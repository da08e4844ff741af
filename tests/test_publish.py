"""What the generator publishes to a stream: event times around now, and an exact account of what was sent."""

import itertools

import orjson

from loadgen.generator import GeneratorConfig
from loadgen.publish import emissions_around_now

NOW = 1_767_225_600_000 + 123_456
MINUTE = 60_000


def test_all_at_once_the_log_spans_the_minutes_before_now():
    emissions = list(emissions_around_now(GeneratorConfig(events=500, minutes=2, seed=3), now_ms=NOW))
    times = [e.event_ms for e in emissions if e.event_ms is not None]
    assert NOW - 2 * MINUTE <= min(times) and max(times) < NOW
    valid = [e for e in emissions if e.truth is not None]
    assert len({e.truth["event_id"] for e in valid}) == 500
    assert all(orjson.loads(e.line)["event_id"] == e.truth["event_id"] for e in valid)


def test_at_a_rate_each_minute_of_event_time_holds_a_minute_of_messages():
    rate = 20
    config = GeneratorConfig(seed=4, duplicate_rate=0.05, malformed_rate=0.01)
    emissions = list(itertools.islice(emissions_around_now(config, rate=rate, now_ms=NOW), 3 * rate * 60))
    for minute in range(3):
        chunk = emissions[minute * rate * 60:(minute + 1) * rate * 60]
        times = [e.event_ms for e in chunk if e.event_ms is not None]
        # Each generated minute follows the last; its late stragglers come at its end.
        assert sum(NOW + minute * MINUTE <= t < NOW + (minute + 1) * MINUTE for t in times) >= 0.95 * len(times)
    ids = [e.truth["event_id"] for e in emissions if e.truth is not None]
    assert len(set(ids)) < len(ids)  # resends are there
