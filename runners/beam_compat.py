"""Apache Beam 2.77's local runners, patched: nine fixes, installed only around the runs that need them.

Eight are for the streaming DirectRunner, the local stream runner (`STREAM`: lost counters, per-bundle
signature inspection, 10-message Pub/Sub pulls, keys never forgotten, no drain, early panes that wait for a
30 s pull, empty bundles kept, timers dropped by the monitor's end check), one for the FnApiRunner, which
runs a local replay (`BATCH`: bundle ends that wait for the state sampler). Other runners use none of these
code paths. Each bug is written up in docs/upstream/ and, but for fix 9 (a timing race), has a strict-xfail
canary in tests/test_beam_compat.py that fails the day Beam fixes it.

`installed(patches)` checks the Beam version and every target first, then patches for the `with` block only
and restores Beam's own code after it, so the rest of a process (the canaries, a test on stock Beam) runs
unpatched. The patches replace Beam internals: on any Beam but 2.77, or when a target is gone, they refuse
with one line (`UnsupportedBeam`) rather than patch what they were not written for or skip a patch, since a
local run without fix 1 would silently under-count clicks.

1. Counters. Each bundle gets a fresh MetricsContainer, committed when the
   bundle ends, but each worker thread's StateSampler caches its scoped states
   by step name with the container of the step's first bundle: user counters
   of later bundles land in that old container and are never committed, so a
   run summary counts one bundle per thread and step. The cached state's
   container is made to serve the current bundle: emptied when the bundle
   starts, shared with the container that is committed.
2. Speed. Every bundle of every ParDo calls `userstate.get_dofn_specs`, which
   inspects the signature of each of the DoFn's methods: on a stream of small
   bundles that is 40% of the run (profiled with `adclick bench-stream`). The
   specs are declared on the DoFn's class (or a Map's function), so they are
   computed once per class and function.
3. Pull size. The Pub/Sub read pulls 10 messages a call, and every pull
   becomes one bundle per step, each followed by a scan of every key's timers
   in every stateful step (the runner's monitor): a fixed cost per pull, paid
   for 10 clicks (docs/streaming.md, Measured). Pulls ask for up to PULL_MESSAGES instead; the emulator and
   Pub/Sub return what is there, so a trickle still comes one message at a
   time. Messages are still acknowledged when pulled, and the watermark is
   still the wall clock at each pull.
4. Keys that stay. The runner keeps a state entry for every key a stateful
   step ever saw, and its monitor scans every entry's timers between bundles.
   The stream's dedup uses 64 new keys a minute of event time, each forgotten
   (state cleared, no timer) after the TTL: a local stream running for hours
   would scan ever more dead entries. Entries with no state, timers or global
   state are dropped before each scan; the runner creates an empty one again if
   the key comes back (`DirectStepContext.get_keyed_state`), so nothing changes
   but the scan's length.
5. Drain. The DirectRunner can only cancel a stream (`PipelineResult.cancel`),
   which drops every open window and pane, though the Pub/Sub messages in them
   were acknowledged when pulled; Beam's Python SDK has no drain. `drain(result)`
   stops the run's Pub/Sub reads: a read evaluator of a draining run pulls
   nothing more, is not scheduled again, and lets its watermark go to the end
   of time (a hold at MAX_TIMESTAMP removes the wall-clock one). What was pulled
   flows on; every window and pane fires when the watermark passes its end, and
   the pipeline finishes by itself (`wait_until_finish`) once every step's
   watermark is at the end: Dataflow's drain, locally.
6. Idle early panes. The runner has one worker thread, which runs the monitor
   that fires timers too, and a Pub/Sub pull waits up to 30 s for messages
   (Beam issue #25442): while the subscription is idle, processing-time timers
   (early panes, the archive's and the dead letters' panes) fired only every 30
   s, once per triggered step. Pulls wait at most PULL_TIMEOUT_SECONDS (the
   emulator answers an empty pull about a second before the deadline; a
   deadline that passes is an empty pull), so timers fire within about a second
   of being due while no message comes.
7. Empty pending bundles. Every pull hands the runner an empty bundle to
   schedule the next one, which it also adds to the read's pending set for its
   watermark and never removes (it only removes bundles that hold elements):
   the set grows by one a pull, and every pull's watermark update walks it.
   Empty bundles hold no watermark, so they are not kept.
8. Bundle ends (the FnApiRunner). A bundle's end joins its state-sampling
   thread, which wakes every 200 ms: each stage of a replay waited up to that
   long for nothing, 0.3 s of a 1M-click replay (profiled with `adclick bench
   --profile`). The sampler wakes every SAMPLING_PERIOD_MS instead.
9. Dropped timers. Between bundles the runner's monitor fires the timers that
   are due, then checks whether the run is over (`_should_shutdown`), which
   extracts the due timers again and discards them: a timer that came due in
   between (the last bundle before it committed and moved a watermark) is
   marked fired, holds its step's watermark, and never runs. With nothing left
   to run and watermarks short of the end, the monitor reports "a pipeline
   stall" as a tuple, so the run fails with "exceptions must derive from
   BaseException" (seen in drains in two CI runs, under load). The check first
   schedules whatever is due, and asks Beam's check only after the run has been
   idle for STALL_GRACE_SECONDS, so a true stall is still reported. No canary:
   the race depends on timing (docs/upstream/monitor-drops-timers.md).
"""

import contextlib
import dataclasses
import threading
import time
import weakref
from typing import Any, Callable

import apache_beam
from apache_beam.runners.direct import executor, transform_evaluator, watermark_manager
from apache_beam.runners.direct.util import TransformResult
from apache_beam.runners.worker import statesampler
from apache_beam.transforms import core, userstate
from apache_beam.utils.timestamp import MAX_TIMESTAMP

SUPPORTED_BEAM = "2.77"
PULL_MESSAGES = 1000
PULL_TIMEOUT_SECONDS = 2
SAMPLING_PERIOD_MS = 10
STALL_GRACE_SECONDS = 5


class UnsupportedBeam(ValueError):
    """The installed Beam is not the one the patches were written for: one line, for the launchers to print."""


@dataclasses.dataclass(frozen=True)
class Patch:
    """Fix `number`: Beam's `owner.attribute` replaced by `replace(original)` while installed."""
    number: int
    owner: Any
    attribute: str
    replace: Callable[[Any], Any]

    @property
    def target(self) -> str:
        return f"{getattr(self.owner, '__qualname__', self.owner.__name__)}.{self.attribute}"

    def original(self):
        """Beam's own value: a class's own attribute (a classmethod stays one), else the attribute."""
        if isinstance(self.owner, type):
            return self.owner.__dict__[self.attribute]
        return getattr(self.owner, self.attribute)


def _fix_counters(original):
    def scoped_state(self, name_context, state_name, io_target=None, metrics_container=None):
        state = original(self, name_context, state_name, io_target, metrics_container)
        cached = state.metrics_container
        if metrics_container is not None and cached is not None and cached is not metrics_container:
            if metrics_container.metrics is not cached.metrics:
                cached.reset()
                metrics_container.metrics = cached.metrics
        return state
    return scoped_state


def _cache_dofn_specs(original):
    cache = {}

    def get_dofn_specs(dofn):
        key = (type(dofn), dofn._fn) if isinstance(dofn, core.CallableWrapperDoFn) else type(dofn)
        try:
            return cache[key]
        except KeyError:
            specs = cache[key] = original(dofn)
            return specs
        except TypeError:  # an unhashable function
            return original(dofn)
    return get_dofn_specs


class _LargerPulls:
    """A SubscriberClient whose pulls ask for PULL_MESSAGES and wait PULL_TIMEOUT_SECONDS at most;
    everything else is the client's."""

    def __init__(self, client):
        self._client = client

    def pull(self, subscription, max_messages, **kwargs):
        from google.api_core.exceptions import DeadlineExceeded
        from google.cloud.pubsub_v1.types import PullResponse
        kwargs["timeout"] = PULL_TIMEOUT_SECONDS
        try:
            return self._client.pull(subscription=subscription, max_messages=max(max_messages, PULL_MESSAGES),
                                     **kwargs)
        except DeadlineExceeded:
            return PullResponse()

    def __getattr__(self, name):
        return getattr(self._client, name)


def _pull_more(original):
    def get_subscriber_client(cls, transform):
        return _LargerPulls(original.__func__(cls, transform))
    return classmethod(get_subscriber_client)


def _is_empty(state) -> bool:
    return not (state.timers or state.global_state or any(state.state.values()))


def _forget_empty_keys(original):
    def extract_transform_timers(self):
        with self._lock:
            for key in [key for key, state in self._keyed_states.items() if _is_empty(state)]:
                del self._keyed_states[key]
        return original(self)
    return extract_transform_timers


_draining = weakref.WeakSet()  # the evaluation contexts of runs asked to drain


def _stop_reads_on_drain(original):
    def finish_bundle(self):
        if self._evaluation_context not in _draining:
            return original(self)
        return TransformResult(self, [], [], None, {None: MAX_TIMESTAMP})
    return finish_bundle


def _schedule_due_timers_first(original):
    def should_shutdown(self):
        if self._is_executing() or self._fire_timers():  # timers due since the monitor's last look: run them
            self.__dict__.pop("_adclick_idle_since", None)
            return False
        if not self._executor.evaluation_context.is_done():
            # Beam's check declares a stall at its first idle look (and takes due timers it never runs);
            # what a race hid shows within moments, so only an idle spell of STALL_GRACE_SECONDS is asked about.
            since = self.__dict__.setdefault("_adclick_idle_since", time.monotonic())
            if time.monotonic() - since < STALL_GRACE_SECONDS:
                return False
        return original(self)
    return should_shutdown


def _keep_no_empty_pending(original):
    def add_pending(self, pending):
        if pending.has_elements():
            original(self, pending)
    return add_pending


def _prompt_bundle_ends(_original):
    return (SAMPLING_PERIOD_MS,)


_PubSubRead, _Watermarks = transform_evaluator._PubSubReadEvaluator, watermark_manager._TransformWatermarks
COUNTERS = Patch(1, statesampler.StateSampler, "scoped_state", _fix_counters)
DOFN_SPECS = (Patch(2, userstate, "get_dofn_specs", _cache_dofn_specs),  # the evaluators' import: the same cache
              Patch(2, transform_evaluator, "get_dofn_specs", lambda _original: userstate.get_dofn_specs))
PULLS = Patch(3, _PubSubRead, "_get_subscriber_client", _pull_more)  # fix 6 too: the pull's timeout
FORGET_KEYS = Patch(4, _Watermarks, "extract_transform_timers", _forget_empty_keys)
DRAIN = Patch(5, _PubSubRead, "finish_bundle", _stop_reads_on_drain)
NO_EMPTY_PENDING = Patch(7, _Watermarks, "add_pending", _keep_no_empty_pending)
DUE_TIMERS = Patch(9, executor._ExecutorServiceParallelExecutor._MonitorTask, "_should_shutdown",
                   _schedule_due_timers_first)
BUNDLE_ENDS = Patch(8, statesampler.StateSampler.__init__, "__defaults__", _prompt_bundle_ends)
# The streaming DirectRunner's:
STREAM = (COUNTERS, *DOFN_SPECS, PULLS, FORGET_KEYS, DRAIN, NO_EMPTY_PENDING, DUE_TIMERS)
BATCH = (BUNDLE_ENDS,)  # the FnApiRunner's

_lock = threading.Lock()
_active = {}  # (id(owner), attribute) -> [Beam's original, how many `installed` blocks use the patch]


def check(patches=STREAM + BATCH) -> None:
    """UnsupportedBeam unless this Beam is the one `patches` were written for and has each of their targets."""
    version = apache_beam.__version__
    if patches and version.split(".")[:2] != SUPPORTED_BEAM.split("."):
        raise UnsupportedBeam(f"the local runners need Apache Beam {SUPPORTED_BEAM}.x (runners/beam_compat.py "
                              f"patches its internals), not {version}: pip install 'apache-beam=={SUPPORTED_BEAM}.*'")
    for patch in patches:
        try:
            patch.original()
        except (KeyError, AttributeError):
            raise UnsupportedBeam(f"Apache Beam {version} has no {patch.target}, which fix {patch.number} of "
                                  "runners/beam_compat.py replaces: check its canary in tests/test_beam_compat.py"
                                  ) from None


@contextlib.contextmanager
def installed(patches):
    """`patches` (STREAM, BATCH or none) in force for the block, after `check`; Beam's own code again after it.
    Blocks may nest and overlap across threads: a patch stays until the last block using it ends."""
    patches = tuple(patches)
    check(patches)
    with _lock:
        for patch in patches:
            key = (id(patch.owner), patch.attribute)
            if key not in _active:
                original = patch.original()
                _active[key] = [original, 0]
                setattr(patch.owner, patch.attribute, patch.replace(original))
            _active[key][1] += 1
    try:
        yield
    finally:
        with _lock:
            for patch in reversed(patches):
                key = (id(patch.owner), patch.attribute)
                _active[key][1] -= 1
                if not _active[key][1]:
                    setattr(patch.owner, patch.attribute, _active.pop(key)[0])


def is_installed(patch: Patch) -> bool:
    return (id(patch.owner), patch.attribute) in _active


def drain(result) -> None:
    """Stops the Pub/Sub reads of the DirectRunner run `result` and lets its watermark go to the end
    (fix 5, which must be installed while the run lasts): the run then finishes by itself."""
    if not is_installed(DRAIN):
        raise RuntimeError("drain() needs the run inside beam_compat.installed(STREAM)")
    _draining.add(result._evaluation_context)
