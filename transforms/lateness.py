"""Clicks too late for their window are set aside and counted, never dropped without a trace.

A runner silently drops an element whose window has expired: window end plus
allowed lateness behind the watermark. This step judges each click first, so
what the runner would drop leaves here instead, as a `too_late` dead letter
(the raw archive keeps the click too; a replay restates its window).

User code cannot read the watermark, but an event-time timer fires once the
watermark reaches it. Each shard keeps a ladder of probe timers, level j at the
next multiple of `step * 2**j` above the horizon: every firing raises the
horizon (a time the watermark is known to have reached) and re-arms the levels
it passed, so after a jump of the watermark the horizon closes in on it in
about log2(jump / step) firings. Runners fire due timers before they take more
input (the DirectRunner reads its sources only when no timer is due; Flink and
Dataflow fire timers as the watermark arrives), so clicks are judged against a
horizon within one step of the watermark. A click whose window closed before the horizon is too late;
any other goes on, and the windowing keeps each window a grace period past
the allowed lateness (`windowing.LATENESS_GRACE_SECONDS`, more than a step)
so that what passes here is always counted.

A bounded input (a replay) has nothing late: its watermark moves only after
all of it is read.
"""

import math
from typing import Any, Optional, Tuple

import apache_beam as beam
from apache_beam.coders import VarIntCoder
from apache_beam.metrics.metric import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Timestamp

from pipelines.config import StreamConfig
from transforms.batches import window_of
from transforms.packed import pack, unpack
from transforms.parse import VALID
from transforms.records import Click, epoch_ms_to_iso, rows
from transforms.set_aside import TOO_LATE, set_aside

PROBE_STEP_MS = 1_000
_FLOOR_MS = math.ceil(MIN_TIMESTAMP.micros / 1_000_000) * 1_000  # whole seconds, so probes land on them
_CEILING_MS = GlobalWindow().max_timestamp().micros // 1_000


def _iso(epoch_ms: int) -> str:
    return "the start" if epoch_ms <= _FLOOR_MS else epoch_ms_to_iso(epoch_ms)


def _arm(probe, horizon_ms: int, previous_ms: Optional[int] = None) -> None:
    """Probe timers above the horizon: the next whole step, two steps, four... up to the end of time. A level
    stands until the horizon passes it, so only the levels the horizon moved past since `previous_ms` are set
    again (every one without it): a watermark that moves a step at a time re-arms about two timers a firing,
    not the whole ladder of about forty (4% of a Prism worker's time in a 1M-click drain, by py-spy)."""
    j, size = 0, PROBE_STEP_MS
    while size <= _CEILING_MS - _FLOOR_MS:
        if previous_ms is not None and previous_ms // size == horizon_ms // size:
            return  # this level's timer stands, and so does every one above it (multiples of its size)
        at = (horizon_ms // size + 1) * size
        if at > _CEILING_MS:
            return
        probe.set(Timestamp(micros=at * 1_000), dynamic_timer_tag=str(j))
        j, size = j + 1, size << 1


class _TooLateFn(beam.DoFn):
    """Per shard: the watermark horizon its probes have seen, and the verdict on each batch of one window."""

    HORIZON = ReadModifyWriteStateSpec("horizon", VarIntCoder())
    PROBE = TimerSpec("probe", TimeDomain.WATERMARK)

    def __init__(self, window_seconds: int, allowed_lateness_seconds: int, closed_before_ms: Optional[int] = None):
        self._window_ms = window_seconds * 1_000
        self._lateness_ms = allowed_lateness_seconds * 1_000
        self._lateness_seconds = allowed_lateness_seconds
        self._start_ms = _FLOOR_MS if closed_before_ms is None else closed_before_ms

    def setup(self):
        self._too_late = Metrics.counter("adclick", "too_late")

    def start_bundle(self):
        # A shard's horizon, read once a bundle: each state read is a round trip to the runner.
        self._horizons = {}

    def process(self, shard_and_packed, horizon=beam.DoFn.StateParam(HORIZON), probe=beam.DoFn.TimerParam(PROBE)):
        shard, packed = shard_and_packed
        known = self._horizons.get(shard)
        if known is None:
            known = self._horizons[shard] = horizon.read()
        if known is None:
            known = self._horizons[shard] = self._start_ms
            horizon.write(known)
            _arm(probe, known)
        if packed is None:  # a shard's boot: only arms the probes
            return
        clicks = unpack(packed)
        window_start = window_of(clicks, self._window_ms)
        closed_at = window_start + self._window_ms + self._lateness_ms
        if closed_at >= known:
            yield clicks
            return
        self._too_late.inc(len(clicks))
        detail = (f"window {_iso(window_start)} closed at {_iso(closed_at)} (allowed lateness "
                  f"{self._lateness_seconds} s); the watermark had reached {_iso(known)}")
        for click in rows(clicks, Click):
            yield beam.pvalue.TaggedOutput(TOO_LATE, set_aside(click, TOO_LATE, detail))

    @on_timer(PROBE)
    def probe_fired(self, shard=beam.DoFn.KeyParam, fired=beam.DoFn.TimestampParam,
                    horizon=beam.DoFn.StateParam(HORIZON), probe=beam.DoFn.TimerParam(PROBE)):
        reached = fired.micros // 1_000
        known = self._horizons.get(shard)
        if known is None:
            known = horizon.read()
        if known is None or reached > known:
            self._horizons[shard] = reached
            horizon.write(reached)
            _arm(probe, reached, known)


class _NothingIsLate(beam.DoFn):
    def process(self, clicks):
        yield clicks


class SetAsideTooLate(beam.PTransform):
    """Batches of clicks of one window each (StampEventTime) -> batches in time (main output `valid`)
    and too-late DeadLetters (output `too_late`), judged per `shards` keys by window. `closed_before_ms`: where the
    horizon starts (a time the watermark is known to reach at once), so that a stream started again
    cannot reopen a window that closed before it with its first bundles (StreamConfig)."""

    def __init__(self, window_seconds: int, allowed_lateness_seconds: int, shards: int = StreamConfig.lateness_shards,
                 closed_before_ms: Optional[int] = None):
        super().__init__()
        self._window_seconds = window_seconds
        self._allowed_lateness_seconds = allowed_lateness_seconds
        self._shards = shards
        self._closed_before_ms = closed_before_ms

    def expand(self, clicks):
        if clicks.is_bounded:
            return clicks | "NothingIsLate" >> beam.ParDo(_NothingIsLate()).with_outputs(TOO_LATE, main=VALID)
        shards, window_ms = self._shards, self._window_seconds * 1000

        def window_shard(clicks):
            return window_of(clicks, window_ms) // window_ms % shards, pack(clicks)

        keyed = clicks | "KeyByShard" >> beam.Map(window_shard)
        boot = (clicks.pipeline
                | "Impulse" >> beam.Impulse()
                | "BootShards" >> beam.FlatMap(lambda _: [(shard, None) for shard in range(shards)]))
        return ((keyed, boot)
                | "WithBoot" >> beam.Flatten()
                | "Judge" >> beam.ParDo(_TooLateFn(self._window_seconds, self._allowed_lateness_seconds,
                                                  self._closed_before_ms))
                .with_input_types(Tuple[int, Any]).with_outputs(TOO_LATE, main=VALID))
