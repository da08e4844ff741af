"""The run summary: every input record accounted for, from the pipeline's Beam metrics."""

import datetime
import json

from apache_beam.metrics.metric import MetricsFilter

from sinks import restatement
from sources.files import INCOMPLETE_FILES

NAMESPACE = "adclick"
MALFORMED_PREFIX = "malformed."


def counters(result, namespace: str = NAMESPACE) -> dict:
    """The committed counters of a pipeline in `namespace` (adclick's own by default), by name, and
    its string sets (such as the files not read whole) as sets."""
    query = result.metrics().query(MetricsFilter().with_namespace(namespace))
    totals = {}
    for counter in query["counters"]:
        name = counter.key.metric.name
        totals[name] = totals.get(name, 0) + (counter.committed or 0)
    for strings in query["string_sets"]:
        name = strings.key.metric.name
        totals[name] = totals.get(name, set()) | set(strings.committed or ())
    return totals


def restatement_summary(result) -> dict:
    """The minutes a replay restated in its sink (first and last window_start in epoch ms) and how
    many of them now count fewer clicks; empty where the sink does not report it."""
    query = result.metrics().query(MetricsFilter().with_namespace(restatement.NAMESPACE))
    totals = {counter.key.metric.name: counter.committed for counter in query["counters"]}
    if restatement.RESTATED_WINDOWS not in totals:
        return {}
    window_starts = [distribution.committed for distribution in query["distributions"]
                     if distribution.key.metric.name == restatement.RESTATED_WINDOW_START and distribution.committed]
    return {
        "restated_windows": totals[restatement.RESTATED_WINDOWS],
        "restated_from": min((d.min for d in window_starts), default=None),
        "restated_to": max((d.max for d in window_starts), default=None),
        "lowered_windows": totals.get(restatement.LOWERED_WINDOWS, 0),
    }


ACCOUNTS = ("unique", "duplicates", "malformed", "skewed", "too_late", "flagged")
FLAGGED_PREFIX = "flagged."


def _by_prefix(totals: dict, prefix: str) -> dict:
    return {name[len(prefix):]: count for name, count in sorted(totals.items()) if name.startswith(prefix)}


def summarize(totals: dict) -> dict:
    """read = unique + duplicates + malformed + skewed + too_late + flagged, with malformed records by
    reason and flagged clicks by rule.

    Each record read ends in exactly one account. A skewed click (stamped too
    far ahead of its receive time) and a too-late one (its window had closed)
    are valid but not counted in the aggregates; too-late records are judged
    before dedup, so they are copies, resends included, whose window a replay
    of the raw archive restates. A replay has none too late. Flagged clicks
    (the risk filter's, after dedup) are unique clicks not billed: `unique`
    counts the billed ones, the clicks in the aggregates.
    """
    summary = {name: totals.get(name, 0) for name in ("read",) + ACCOUNTS}
    summary["malformed_by_reason"] = _by_prefix(totals, MALFORMED_PREFIX)
    summary["flagged_by_rule"] = _by_prefix(totals, FLAGGED_PREFIX)
    summary["balanced"] = summary["read"] == sum(summary[name] for name in ACCOUNTS)
    summary[INCOMPLETE_FILES] = sorted((json.loads(text) for text in totals.get(INCOMPLETE_FILES, ())),
                                       key=lambda incomplete: incomplete["file"])
    return summary


def format_summary(summary: dict) -> str:
    lines = [
        f"read        {summary['read']:>12,}",
        f"unique      {summary['unique']:>12,}",
        f"duplicates  {summary['duplicates']:>12,}",
        f"malformed   {summary['malformed']:>12,}",
    ]
    lines += [f"  {reason:<22}{count:>8,}" for reason, count in summary["malformed_by_reason"].items()]
    optional = (("skewed", "skewed"), ("too_late", "too late"), ("flagged", "flagged"))
    for name, label in optional:
        if summary.get(name):
            lines.append(f"{label:<12}{summary[name]:>12,}")
            if name == "flagged":
                lines += [f"  {rule:<22}{count:>8,}" for rule, count in summary["flagged_by_rule"].items()]
    terms = ["unique", "duplicates", "malformed"] + [label for name, label in optional if summary.get(name)]
    lines.append(f"read = {' + '.join(terms)}: " + ("yes" if summary["balanced"] else "NO"))
    lines += [f"WARNING: {incomplete['file']} was not read whole, stopped at {incomplete['offset']}: "
              f"{incomplete['detail']}" for incomplete in summary.get(INCOMPLETE_FILES, ())]
    lines += restatement_lines(summary)
    for key in ("seconds", "events_per_second"):
        if key in summary:
            lines.append(f"{key.replace('_', ' '):<12}{summary[key]:>12,}")
    return "\n".join(lines)


def _minute(window_start: int) -> str:
    return f"{datetime.datetime.fromtimestamp(window_start / 1000, datetime.timezone.utc):%Y-%m-%d %H:%M}"


def restatement_lines(summary: dict) -> list:
    """What a replay restated, and a warning when it lowered minutes it covered only in part."""
    if not summary.get("restated_windows"):
        return []
    lines = [f"restated {summary['restated_windows']:,} minutes from {_minute(summary['restated_from'])} "
             f"to {_minute(summary['restated_to'])} UTC"]
    if summary["lowered_windows"]:
        lines.append(f"WARNING: {summary['lowered_windows']:,} of them now count fewer clicks than before: "
                     "a replay that covered them only in part overwrote them")
    return lines


def started_a_job(result) -> bool:
    """False, said in one line, when the runner only wrote a job description (`--template_location`, as
    Dataflow's Flex Template launcher runs a pipeline): there is no job to wait for or to count."""
    if getattr(result, "has_job", True):
        return True
    print("job description written for Dataflow's template launcher; no job was started from here")
    return False
