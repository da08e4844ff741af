"""Settings of the DAG's middle, the same for a stream and a replay."""

from dataclasses import dataclass, field
from typing import FrozenSet, Optional, Tuple


@dataclass(frozen=True)
class WindowConfig:
    """Event-time windowing. Defaults: one-minute windows, an early pane every
    10 s of processing time, late panes for 10 minutes after the watermark, each
    1 s of processing time after the first late click it holds.

    `late_firing_seconds` 0 fires a late pane per late click. Prism then cannot combine
    before its shuffle (it lifts no combine under a trigger that counts elements) and
    re-sends every click of a window to each of its panes: 20x slower (docs/performance.md)."""
    size_seconds: int = 60
    allowed_lateness_seconds: int = 600
    early_firing_seconds: int = 10
    late_firing_seconds: int = 1


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
    # Windows that closed before this time (epoch ms) are closed from the start. The DirectRunner's Pub/Sub
    # watermark is the wall clock, but a stream's first bundles are judged before any timer tells it so: a
    # stream started again would reopen a closed window with the few late clicks they hold. None: no such time.
    closed_before_ms: Optional[int] = None


RATE_DIMENSIONS = {"user": "user_id", "ip": "ip"}  # a rate rule's `by`: the click field it counts by
BLOCKED_IP, BLOCKED_USER = "blocked_ip", "blocked_user"  # the block lists' rule names


@dataclass(frozen=True)
class RateRule:
    """More than `max_clicks` clicks of one user (or one IP) on one ad in one minute of event time:
    in (click_ts, event_id) order, every click after the `max_clicks`-th is flagged as `name`."""
    name: str
    by: str  # a key of RATE_DIMENSIONS
    max_clicks: int

    @property
    def field(self) -> str:
        return RATE_DIMENSIONS[self.by]


@dataclass(frozen=True)
class RiskConfig:
    """The risk filter's rules (transforms/risk.py): block lists first, then each rate rule over the
    clicks they let through. `blocked_networks` are CIDR texts (IPv4 and IPv6)."""
    rates: Tuple[RateRule, ...] = ()
    blocked_networks: Tuple[str, ...] = ()
    blocked_users: FrozenSet[str] = frozenset()

    @property
    def rule_names(self) -> Tuple[str, ...]:
        """Every rule, in the order a click is judged: the first that flags it names it."""
        return ((BLOCKED_IP,) * bool(self.blocked_networks) + (BLOCKED_USER,) * bool(self.blocked_users)
                + tuple(rule.name for rule in self.rates))


@dataclass(frozen=True)
class PipelineConfig:
    window: WindowConfig = field(default_factory=WindowConfig)
    aggregates: AggregateConfig = field(default_factory=AggregateConfig)
    dedup_ttl_seconds: Optional[int] = 3600
    max_skew_seconds: int = 300  # a click_ts further ahead of its receive time is set aside
    stream: StreamConfig = field(default_factory=StreamConfig)
    parse_processes: int = 0  # worker processes that judge a replay's batches; 0: the runner's own
    spill_dir: Optional[str] = None  # where a replay's shuffles wait in files; None: in the runner
    risk: Optional[RiskConfig] = None  # the risk filter's rules; None: no filter (every unique click is billed)
