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


@dataclass(frozen=True)
class PipelineConfig:
    window: WindowConfig = field(default_factory=WindowConfig)
    aggregates: AggregateConfig = field(default_factory=AggregateConfig)
    dedup_ttl_seconds: Optional[int] = 3600
