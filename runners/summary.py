"""The run summary: every input record accounted for, from the pipeline's Beam metrics."""

import json

from apache_beam.metrics.metric import MetricsFilter

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


ACCOUNTS = ("unique", "duplicates", "malformed", "skewed", "too_late")


def summarize(totals: dict) -> dict:
    """read = unique + duplicates + malformed + skewed + too_late, with malformed records by reason.

    Each record read ends in exactly one account. A skewed click (stamped too
    far ahead of its receive time) and a too-late one (its window had closed)
    are valid but not counted in the aggregates; too-late records are judged
    before dedup, so they are copies, resends included, whose window a replay
    of the raw archive restates. A replay has none too late.
    """
    summary = {name: totals.get(name, 0) for name in ("read",) + ACCOUNTS}
    summary["malformed_by_reason"] = {
        name[len(MALFORMED_PREFIX):]: count
        for name, count in sorted(totals.items()) if name.startswith(MALFORMED_PREFIX)
    }
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
    lines += [f"{label:<12}{summary[name]:>12,}" for name, label in (("skewed", "skewed"), ("too_late", "too late"))
              if summary.get(name)]
    terms = ["unique", "duplicates", "malformed"] + [label for name, label in (("skewed", "skewed"), (
        "too_late", "too late")) if summary.get(name)]
    lines.append(f"read = {' + '.join(terms)}: " + ("yes" if summary["balanced"] else "NO"))
    lines += [f"WARNING: {incomplete['file']} was not read whole, stopped at {incomplete['offset']}: "
              f"{incomplete['detail']}" for incomplete in summary.get(INCOMPLETE_FILES, ())]
    for key in ("seconds", "events_per_second"):
        if key in summary:
            lines.append(f"{key.replace('_', ' '):<12}{summary[key]:>12,}")
    return "\n".join(lines)
