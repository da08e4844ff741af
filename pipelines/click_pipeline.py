"""The adclick DAG, the only one there is: a stream and a replay run this same code.

raw records → parse/validate (dead letters aside) → event time → dedup by event_id
→ one-minute event-time windows → aggregates (per ad, per ad and filter, top N) → sink.

The source and the sinks are passed in: the middle never knows which ones it runs on.
"""

import apache_beam as beam

from pipelines.config import PipelineConfig
from transforms.aggregates import AggregateClicks
from transforms.dedup import DedupByEventId
from transforms.event_time import StampEventTime
from transforms.parse import DEAD_LETTER, VALID, ParseClicks
from transforms.windowing import WindowClicks


def build_pipeline(
        pipeline: beam.Pipeline,
        source: beam.PTransform,
        sink: beam.PTransform,
        dead_letter_sink: beam.PTransform,
        config: PipelineConfig = PipelineConfig()) -> beam.Pipeline:
    """Adds the DAG to `pipeline` and returns it, ready to run."""
    window, aggregates = config.window, config.aggregates
    parsed = pipeline | "ReadRaw" >> source | "Parse" >> ParseClicks()
    clicks = (
        parsed[VALID]
        | "StampEventTime" >> StampEventTime()
        | "Dedup" >> DedupByEventId(config.dedup_ttl_seconds)
        | "Window" >> WindowClicks(
            window.size_seconds, window.allowed_lateness_seconds, window.early_firing_seconds))
    (clicks
     | "Aggregate" >> AggregateClicks(aggregates.filter_dimensions, aggregates.top_n, aggregates.hot_key_fanout)
     | "WriteAggregates" >> sink)
    parsed[DEAD_LETTER] | "WriteDeadLetters" >> dead_letter_sink
    return pipeline
