"""Fixes for Beam 2.77's local runners: seven for the streaming DirectRunner, the local stream
runner (lost counters, per-bundle signature inspection, 10-message Pub/Sub pulls, keys never
forgotten, no drain, early panes that wait for a 30 s pull, empty bundles kept), one for the
FnApiRunner, which runs a local replay (bundle ends that wait for the state sampler). Other
runners use none of these code paths.

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
"""

import weakref

from apache_beam.runners.direct import transform_evaluator, watermark_manager
from apache_beam.runners.direct.util import TransformResult
from apache_beam.runners.worker import statesampler
from apache_beam.transforms import core, userstate
from apache_beam.utils.timestamp import MAX_TIMESTAMP

PULL_MESSAGES = 1000
PULL_TIMEOUT_SECONDS = 2
SAMPLING_PERIOD_MS = 10

_installed = False
_draining = weakref.WeakSet()  # the evaluation contexts of runs asked to drain


def _fix_counters() -> None:
    original = statesampler.StateSampler.scoped_state

    def scoped_state(self, name_context, state_name, io_target=None, metrics_container=None):
        state = original(self, name_context, state_name, io_target, metrics_container)
        cached = state.metrics_container
        if metrics_container is not None and cached is not None and cached is not metrics_container:
            if metrics_container.metrics is not cached.metrics:
                cached.reset()
                metrics_container.metrics = cached.metrics
        return state

    statesampler.StateSampler.scoped_state = scoped_state


def _cache_dofn_specs() -> None:
    original = userstate.get_dofn_specs
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

    userstate.get_dofn_specs = get_dofn_specs
    transform_evaluator.get_dofn_specs = get_dofn_specs


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


def _pull_more() -> None:
    evaluator = transform_evaluator._PubSubReadEvaluator
    original = evaluator._get_subscriber_client.__func__

    def get_subscriber_client(cls, transform):
        return _LargerPulls(original(cls, transform))

    evaluator._get_subscriber_client = classmethod(get_subscriber_client)


def _is_empty(state) -> bool:
    return not (state.timers or state.global_state or any(state.state.values()))


def _forget_empty_keys() -> None:
    original = watermark_manager._TransformWatermarks.extract_transform_timers

    def extract_transform_timers(self):
        with self._lock:
            for key in [key for key, state in self._keyed_states.items() if _is_empty(state)]:
                del self._keyed_states[key]
        return original(self)

    watermark_manager._TransformWatermarks.extract_transform_timers = extract_transform_timers


def drain(result) -> None:
    """Stops the Pub/Sub reads of the DirectRunner run `result` and lets its watermark go to the end
    (fix 5; `install()` first): the run then finishes by itself."""
    _draining.add(result._evaluation_context)


def _stop_reads_on_drain() -> None:
    evaluator = transform_evaluator._PubSubReadEvaluator
    original = evaluator.finish_bundle

    def finish_bundle(self):
        if self._evaluation_context not in _draining:
            return original(self)
        return TransformResult(self, [], [], None, {None: MAX_TIMESTAMP})

    evaluator.finish_bundle = finish_bundle


def _keep_no_empty_pending() -> None:
    original = watermark_manager._TransformWatermarks.add_pending

    def add_pending(self, pending):
        if pending.has_elements():
            original(self, pending)

    watermark_manager._TransformWatermarks.add_pending = add_pending


def _prompt_bundle_ends() -> None:
    statesampler.StateSampler.__init__.__defaults__ = (SAMPLING_PERIOD_MS,)


def install() -> None:
    """The streaming DirectRunner's fixes."""
    global _installed
    if not _installed:
        _fix_counters()
        _cache_dofn_specs()
        _pull_more()
        _forget_empty_keys()
        _stop_reads_on_drain()
        _keep_no_empty_pending()
        _installed = True


def install_for_batch() -> None:
    """The FnApiRunner's fix."""
    _prompt_bundle_ends()
