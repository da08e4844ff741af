"""What a replay of some of a generated log's files should count, from the generator's truth and the raw lines
alone: shared by the partial-replay tests of each sink."""

import collections
import json

MINUTE_MS = 60_000


def minute_of(event) -> int:
    return event["click_ts"] // MINUTE_MS * MINUTE_MS


def read_truth(log) -> list:
    return [json.loads(line) for line in (log / "truth.jsonl").read_text().splitlines()]


def per_minute(events) -> collections.Counter:
    return collections.Counter(minute_of(event) for event in events)


def per_ad_and_minute(events) -> collections.Counter:
    return collections.Counter((event["ad_id"], minute_of(event)) for event in events)


def events_in(path, truth_by_id) -> list:
    """The unique clicks a file holds: truth events whose id is on one of its lines (a resend counts once)."""
    ids = set()
    for line in path.read_bytes().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("event_id") in truth_by_id:
            ids.add(record["event_id"])
    return [truth_by_id[event_id] for event_id in ids]
