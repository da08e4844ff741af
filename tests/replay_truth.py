"""What a replay of some of a generated log's files should count, from the generator's truth and the raw lines
alone: shared by the partial-replay tests of each sink."""

import collections
import json
from pathlib import Path

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
        except (ValueError, RecursionError):  # a malformed line; the generator nests some deeper than json can
            continue
        if isinstance(record, dict) and record.get("event_id") in truth_by_id:
            ids.add(record["event_id"])
    return [truth_by_id[event_id] for event_id in ids]


def assert_partial_restatement(summary: dict, summary_file, out: str, minutes, lowered) -> None:
    """A partial replay's report: the minutes it restated (first and last), those it lowered, in the
    summary, its JSON file and the terminal's WARNING."""
    assert summary["restated_windows"] == len(minutes) and summary["lowered_windows"] == len(lowered)
    assert (summary["restated_from"], summary["restated_to"]) == (min(minutes), max(minutes))
    assert json.loads(Path(summary_file).read_text())["lowered_windows"] == len(lowered)
    assert f"restated {len(minutes)} minutes from" in out
    assert f"WARNING: {len(lowered)} of them now count fewer clicks than before" in out
