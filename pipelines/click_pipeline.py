"""The adclick DAG, the only one there is: a stream and a replay run this same code.

raw records → parse/validate (dead letters aside) → raw archive (optional) → clock skew
check → event time → lateness check → dedup by event_id → risk filter (optional:
flagged clicks to their own output) → one-minute event-time windows → aggregates
(per ad, per ad and filter, top N per minute and over the last M minutes) → sink.
Malformed, skewed and too-late records → dead letters.

Clicks move as Arrow batches, a stream's as a replay's (transforms/batches.py). The source and
the sinks are passed in: the middle never knows which ones it runs on.
"""

from typing import Optional

import apache_beam as beam

from pipelines.config import PipelineConfig
from transforms.aggregates import AggregateClicks
from transforms.dedup import DedupByEventId
from transforms.event_time import StampEventTime
from transforms.lateness import SetAsideTooLate
from transforms.parse import DEAD_LETTER, VALID, ParseClicks
from transforms.risk import FLAGGED, RiskFilter
from transforms.set_aside import SKEWED, TOO_LATE
from transforms.skew import SetAsideSkewed
from transforms.windowing import WindowClicks


def build_pipeline(
        pipeline: beam.Pipeline,
        source: beam.PTransform,
        sink: beam.PTransform,
        dead_letter_sink: beam.PTransform,
        config: PipelineConfig = PipelineConfig(),
        archive: Optional[beam.PTransform] = None,
        flagged_sink: Optional[beam.PTransform] = None) -> beam.Pipeline:
    """Adds the DAG to `pipeline` and returns it, ready to run. With `config.risk`, the clicks its
    rules flag go to `flagged_sink` (only counted without one)."""
    window, aggregates, stream = config.window, config.aggregates, config.stream
    parsed = pipeline | "ReadRaw" >> source | "Parse" >> ParseClicks(config.parse_processes)
    if archive is not None:
        parsed[VALID] | "ArchiveRaw" >> archive
    timely = parsed[VALID] | "CheckSkew" >> SetAsideSkewed(config.max_skew_seconds)
    in_time = (
        timely[VALID]
        | "StampEventTime" >> StampEventTime(window.size_seconds)
        | "CheckLateness" >> SetAsideTooLate(
            window.size_seconds, window.allowed_lateness_seconds, stream.lateness_shards, stream.closed_before_ms))
    # A replay's dedup keeps the columns the steps after it read: every one for the risk filter's output.
    columns = None if config.risk else (
        ("click_ts", "receive_ts", "ad_id") + tuple(sorted(set(sum(aggregates.filter_dimensions, ())))))
    unique = in_time[VALID] | "Dedup" >> DedupByEventId(
        config.dedup_ttl_seconds, bucket_seconds=stream.dedup_bucket_seconds,
        shards_per_bucket=stream.dedup_shards_per_bucket, per_key=stream.dedup_per_key,
        columns=columns, spill_dir=config.spill_dir, window_seconds=window.size_seconds)
    if config.risk:
        judged = unique | "Risk" >> RiskFilter(config.risk, window.allowed_lateness_seconds, spill_dir=config.spill_dir,
                                               window_seconds=window.size_seconds)
        unique = judged[VALID]
        if flagged_sink is not None:
            judged[FLAGGED] | "WriteFlagged" >> flagged_sink
    clicks = (
        unique
        | "Window" >> WindowClicks(
            window.size_seconds, window.allowed_lateness_seconds, window.early_firing_seconds,
            window.late_firing_seconds))
    (clicks
     | "Aggregate" >> AggregateClicks(aggregates.filter_dimensions, aggregates.top_n, aggregates.hot_key_fanout,
                                      aggregates.sliding_minutes, window, spill_dir=config.spill_dir)
     | "WriteAggregates" >> sink)
    ((parsed[DEAD_LETTER], timely[SKEWED], in_time[TOO_LATE])
     | "AllDeadLetters" >> beam.Flatten()
     | "WriteDeadLetters" >> dead_letter_sink)
    return pipeline
