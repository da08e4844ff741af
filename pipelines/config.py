"""Settings of the DAG's middle, the same for a stream and a replay."""

from dataclasses import dataclass, field
from typing import Optional, Tuple


@dataclass(frozen=True)
class WindowConfig:
    """Event-time windowing. Defaults: one-minute windows, an early pane every
    10 s of processing time, late panes for 10 minutes after the watermark."""
    size_seconds: int = 60
    allowed_lateness_seconds: int = 600
    early_firing_seconds: int = 10


@dataclass(frozen=True)
class AggregateConfig:
    """What is aggregated: filters are combinations of dimensions (default: country)."""
    filter_dimensions: Tuple[Tuple[str, ...], ...] = (("country",),)
    top_n: int = 100
    hot_key_fanout: int = 4
    sliding_minutes: int = 5  # top N over the last M minutes, every minute; 0 for none


@dataclass(frozen=True)
class StreamConfig:
    """State of the unbounded steps (docs/streaming.md): dedup buckets of event time, each
    spread over shards, and the shards that judge lateness."""
    dedup_bucket_seconds: int = 60
    dedup_shards_per_bucket: int = 64
    lateness_shards: int = 8
    dedup_per_key: bool = False  # Beam's DeduplicatePerKey instead, for comparison


@dataclass(frozen=True)
class PipelineConfig:
    window: WindowConfig = field(default_factory=WindowConfig)
    aggregates: AggregateConfig = field(default_factory=AggregateConfig)
    dedup_ttl_seconds: Optional[int] = 3600
    max_skew_seconds: int = 300  # a click_ts further ahead of its receive time is set aside
    stream: StreamConfig = field(default_factory=StreamConfig)
    parse_processes: int = 0  # worker processes that judge a replay's batches; 0: the runner's own
    spill_dir: Optional[str] = None  # where a replay's dedup shuffle waits in files; None: in the runner
