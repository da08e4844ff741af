"""Beam 2.77's local-runner bugs that runners/beam_compat.py patches: a canary for each, and the patches' scope.

Each check but the drain's runs twice in this process: on stock Beam, where it is a strict xfail (the bug
is still there; the day Beam fixes it the canary XPASSes, the run fails, and the patch can go), and inside
`beam_compat.installed(...)`, where it passes. Only an AssertionError counts as the bug: anything else
(a changed API, an emulator that does not answer) fails the canary. Pipelines use Beam alone, as the
reports in docs/upstream/ do.
"""

import collections
import sys
import threading
import time

import apache_beam as beam
import pytest
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.direct.direct_runner import DirectPipelineResult
from apache_beam.runners.runner import PipelineState
from apache_beam.runners.worker import statesampler
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms import userstate
from apache_beam.transforms.window import TimestampedValue

from runners import beam_compat, replay, stream

BUNDLES, PER_BUNDLE = 6, 3
BACKLOG = 25  # messages waiting before a Pub/Sub read starts
READ_SECONDS = 30  # bound for a read to pull the backlog
MAX_IDLE_PULL_SECONDS = 5  # a timer due while the subscription is idle may wait this long at most
SPECS_FILE = userstate.__file__  # where Beam's own get_dofn_specs is, whatever replaces it


def canary(issue: str, patches):
    """Parameters (patched?) of a check: on stock Beam a strict xfail naming the upstream bug, then with `patches`."""
    return pytest.mark.parametrize("patched", [
        pytest.param((), marks=pytest.mark.xfail(strict=True, raises=AssertionError, reason=issue), id="stock"),
        pytest.param(patches, id="patched")])


def streaming() -> PipelineOptions:
    return PipelineOptions(runner="DirectRunner", streaming=True)


def test_outside_an_installed_block_beam_is_stock():
    """No module installs at import: outside an `installed` block every target is Beam's own."""
    for patch in beam_compat.STREAM + beam_compat.BATCH:
        assert not beam_compat.is_installed(patch)
    assert statesampler.StateSampler("s", None).sampling_period_ms == statesampler.DEFAULT_SAMPLING_PERIOD_MS
    assert userstate.get_dofn_specs.__code__.co_filename == SPECS_FILE


def test_installed_patches_for_the_block_only_and_nests():
    originals = [patch.original() for patch in beam_compat.STREAM]
    with beam_compat.installed(beam_compat.STREAM):
        with beam_compat.installed(beam_compat.STREAM):
            pass
        assert all(beam_compat.is_installed(patch) for patch in beam_compat.STREAM), "an inner block ended"
        assert [patch.original() for patch in beam_compat.STREAM] != originals
    assert [patch.original() for patch in beam_compat.STREAM] == originals


def test_another_beam_is_refused_in_one_line_and_nothing_is_patched(monkeypatch):
    """The patches replace 2.77's internals: on another Beam a local run must not go on without them."""
    monkeypatch.setattr(beam, "__version__", "2.78.0")
    with pytest.raises(beam_compat.UnsupportedBeam) as refused:
        with beam_compat.installed(beam_compat.STREAM):
            pytest.fail("ran on Beam 2.78")
    assert "\n" not in str(refused.value) and "2.77" in str(refused.value) and "2.78.0" in str(refused.value)
    assert not any(beam_compat.is_installed(patch) for patch in beam_compat.STREAM)
    with beam_compat.installed(()):  # a run on another runner needs none
        pass


@pytest.mark.parametrize("command", ["stream", "replay"])
def test_a_local_run_on_another_beam_is_one_line_and_writes_nothing(monkeypatch, tmp_path, command):
    monkeypatch.setattr(beam, "__version__", "2.78.0")
    (tmp_path / "clicks.jsonl").write_text("")
    argv = {"stream": ["--source", "pubsub://projects/p/subscriptions/s", "--runner", "direct"],
            "replay": ["--input", str(tmp_path / "clicks.jsonl"), "--dead-letter", str(tmp_path / "dead.jsonl")]}
    with pytest.raises(SystemExit) as refused:
        (stream if command == "stream" else replay).run(argv[command] + ["--sink", f"sqlite:///{tmp_path / 'a.db'}"])
    assert str(refused.value).startswith(f"adclick {command}: ") and "\n" not in str(refused.value)
    assert "Apache Beam 2.77" in str(refused.value)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["clicks.jsonl"]


def test_a_missing_target_is_refused_in_one_line(monkeypatch):
    monkeypatch.delattr(beam_compat.COUNTERS.owner, beam_compat.COUNTERS.attribute)
    with pytest.raises(beam_compat.UnsupportedBeam, match="fix 1 .*tests/test_beam_compat.py"):
        beam_compat.check()


def test_a_drain_without_the_patch_is_an_error_not_a_silent_no_op():
    with pytest.raises(RuntimeError, match="installed"):
        beam_compat.drain(object())


class _Count(beam.DoFn):
    def __init__(self):
        self.seen = Metrics.counter("canary", "seen")

    def process(self, element):
        self.seen.inc()
        yield element


class _ForgetEachKey(beam.DoFn):
    """Keeps state for a key only while it processes the key's element."""
    BAG = userstate.BagStateSpec("bag", beam.coders.VarIntCoder())

    def process(self, element, bag=beam.DoFn.StateParam(BAG)):
        bag.add(element[1])
        bag.clear()
        yield element


def _bundles() -> TestStream:
    """BUNDLES bundles of PER_BUNDLE elements, each of its own key; the watermark moves between them."""
    stream = TestStream()
    for bundle in range(BUNDLES):
        stream.add_elements([TimestampedValue((f"key-{bundle}-{n}", n), bundle * 10 + n) for n in range(PER_BUNDLE)])
        stream.advance_watermark_to(bundle * 10 + 9)
    return stream.advance_watermark_to_infinity()


def _run_counting(patched):
    """Runs _bundles() through _Count and _ForgetEachKey; the result, and how often Beam computed each DoFn's specs
    (DoFns told apart as the fix caches them: by class, and a Map's by its function too)."""
    computed = collections.Counter()

    def profile(frame, event, _arg):
        if event == "call" and frame.f_code.co_name == "get_dofn_specs" and frame.f_code.co_filename == SPECS_FILE:
            dofn = frame.f_locals["dofn"]
            computed[type(dofn), getattr(dofn, "_fn", None)] += 1

    pipeline = beam.Pipeline(options=streaming())
    _ = pipeline | _bundles() | "Count" >> beam.ParDo(_Count()) | "Forget" >> beam.ParDo(_ForgetEachKey())
    with beam_compat.installed(patched):
        threading.setprofile(profile)
        sys.setprofile(profile)
        try:
            result = pipeline.run()
            result.wait_until_finish()
        finally:
            sys.setprofile(None)
            threading.setprofile(None)
    return result, computed


@canary("Beam (no issue found; docs/upstream/lost-counters.md): the streaming DirectRunner commits a step's "
        "user counters of its first bundle per thread only", (beam_compat.COUNTERS,))
def test_counters_of_every_bundle_are_committed(patched):
    result, _ = _run_counting(patched)
    (seen,) = result.metrics().query(MetricsFilter().with_name("seen"))["counters"]
    assert seen.committed == BUNDLES * PER_BUNDLE


@canary("Beam (no issue found; docs/upstream/dofn-specs-per-bundle.md): the DirectRunner inspects every "
        "DoFn method's signature again at each bundle", beam_compat.DOFN_SPECS)
def test_dofn_specs_are_not_computed_again_for_every_bundle(patched):
    _, computed = _run_counting(patched)
    assert max(computed.values(), default=0) <= 1, f"over {BUNDLES} bundles: {computed}"


@canary("Beam (no issue found; docs/upstream/keys-never-forgotten.md): the DirectRunner keeps an entry for every "
        "key a stateful step saw, empty or not, and scans them all between bundles", (beam_compat.FORGET_KEYS,))
def test_keys_with_no_state_or_timers_are_forgotten(patched):
    result, _ = _run_counting(patched)
    marks = result._evaluation_context._watermark_manager._transform_to_watermarks
    (forget,) = [watermarks for applied, watermarks in marks.items() if applied.full_label == "Forget"]
    assert len(forget._keyed_states) == 0


@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="Beam #29669/#38771 (docs/upstream/no-drain.md): Python's DirectRunner can only cancel")
def test_a_streaming_directrunner_result_can_be_drained():
    """A missing feature, checked where Beam would add it; beam_compat.drain is tested in test_stream_drain.py."""
    assert callable(getattr(DirectPipelineResult, "drain", None))


@canary("Beam (no issue found; docs/upstream/bundle-end-waits-for-sampler.md): a bundle's end joins the state "
        "sampler's thread, which sleeps up to 200 ms", beam_compat.BATCH)
def test_a_bundle_end_waits_at_most_10_ms_for_the_state_sampler(patched):
    """The wait itself is timing; what bounds it is the sampling period a new sampler gets (see the doc)."""
    with beam_compat.installed(patched):
        assert statesampler.StateSampler("stage", None).sampling_period_ms <= 10


class _Pulls:
    """Each pull the runner's read sends to the emulator: (max_messages, timeout, messages received)."""

    def __init__(self, monkeypatch):
        from google.cloud import pubsub_v1
        self.seen, pull = [], pubsub_v1.SubscriberClient.pull

        def recorded(client, *args, **kwargs):
            response = pull(client, *args, **kwargs)
            self.seen.append((kwargs.get("max_messages"), kwargs.get("timeout"), len(response.received_messages)))
            return response

        monkeypatch.setattr(pubsub_v1.SubscriberClient, "pull", recorded)

    def received(self) -> int:
        return sum(received for _, _, received in self.seen)


def _publish(topic: str, count: int) -> None:
    from google.cloud import pubsub_v1
    publisher = pubsub_v1.PublisherClient()
    for future in [publisher.publish(topic, f"m{n}".encode()) for n in range(count)]:
        future.result()


def _stop(result, topic: str) -> None:
    """Drains a patched run; cancels a stock one, publishing meanwhile so that no 30 s pull holds the cancel."""
    if beam_compat.is_installed(beam_compat.DRAIN):
        beam_compat.drain(result)
        assert result.wait_until_finish() == PipelineState.DONE
        return
    stopped = threading.Event()

    def wake_pulls():
        while not stopped.wait(0.2):
            _publish(topic, 1)

    waker = threading.Thread(target=wake_pulls, daemon=True)
    waker.start()
    try:
        result.cancel()
    finally:
        stopped.set()
        waker.join()


def _read_backlog(pubsub_topic, monkeypatch, patched):
    """Reads BACKLOG waiting messages on the streaming DirectRunner: the pulls, and the empty bundles the read's
    watermark keeps pending once the backlog is read."""
    topic, subscription = (url.removeprefix("pubsub://") for url in pubsub_topic)
    _publish(topic, BACKLOG)
    pulls = _Pulls(monkeypatch)
    pipeline = beam.Pipeline(options=streaming())
    _ = pipeline | beam.io.ReadFromPubSub(subscription=subscription) | beam.Map(lambda message: message)
    with beam_compat.installed(patched):
        result = pipeline.run()
        try:
            deadline = time.monotonic() + READ_SECONDS
            while pulls.received() < BACKLOG:
                if time.monotonic() > deadline:
                    pytest.fail(f"the read pulled {pulls.received()} of {BACKLOG} messages in {READ_SECONDS} s")
                time.sleep(0.05)
            marks = result._evaluation_context._watermark_manager._transform_to_watermarks
            (read,) = [watermarks for applied, watermarks in marks.items() if not applied.inputs]
            empty_pending = sum(not bundle.has_elements() for bundle in list(read._pending))
        finally:
            _stop(result, topic)
    return pulls.seen[:], empty_pending


@pytest.mark.pubsub
@canary("Beam (no issue found; docs/upstream/pubsub-pulls-10-messages.md): the DirectRunner's Pub/Sub read pulls "
        "10 messages a call, however many wait", (beam_compat.PULLS,))
def test_a_pull_takes_more_than_10_of_the_waiting_messages(pubsub_topic, monkeypatch, patched):
    pulls, _ = _read_backlog(pubsub_topic, monkeypatch, patched)
    assert max(received for _, _, received in pulls) > 10, pulls


@pytest.mark.pubsub
@canary("Beam #25442 (docs/upstream/pubsub-pull-waits-30-s.md): an idle DirectRunner Pub/Sub pull blocks the "
        "runner's only worker thread, and its timers, for 30 s", (beam_compat.PULLS,))
def test_an_idle_pull_holds_the_worker_thread_a_few_seconds_at_most(pubsub_topic, monkeypatch, patched):
    """The wait is timing; the runner's own bound on it is the timeout each pull asks for (see the doc)."""
    pulls, _ = _read_backlog(pubsub_topic, monkeypatch, patched)
    assert max(timeout for _, timeout, _ in pulls) <= MAX_IDLE_PULL_SECONDS, pulls


@pytest.mark.pubsub
@canary("Beam (no issue found; docs/upstream/empty-pending-bundles.md): each Pub/Sub pull leaves an empty bundle "
        "in the read's pending set for good", (beam_compat.NO_EMPTY_PENDING,))
def test_a_read_keeps_no_empty_bundle_pending(pubsub_topic, monkeypatch, patched):
    _, empty_pending = _read_backlog(pubsub_topic, monkeypatch, patched)
    assert empty_pending == 0
