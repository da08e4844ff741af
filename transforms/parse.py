"""Parse and validate raw click records; anything that is not a click is a dead letter.

Validation follows the event table of SPEC.md (transforms/validation.py). It never
raises on input: every record leaves as exactly one row of a batch of valid clicks or
one `DeadLetter`, and each is counted, so read = valid + malformed holds for every bundle.
"""

import collections
import multiprocessing
import os
import weakref
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Dict

import apache_beam as beam
from apache_beam.metrics.metric import Metrics
from apache_beam.transforms.window import GlobalWindows

from transforms.records import BATCH_SIZE, RawRecord
from transforms.validation import Verdicts, judge
from transforms.worker_guard import guard_worker

VALID = "valid"
DEAD_LETTER = "dead_letter"

_started_pools: Dict[int, Any] = {}  # processes -> a pool started ahead of the parse, taken by its first bundle
_live_pools: weakref.WeakSet = weakref.WeakSet()  # every pool not yet shut down, for `stop_workers`
# Set by `stop_workers`: a run unwinding after an interrupt may still run bundles on the runner's threads,
# and a pool they started then would be spawning workers as the launcher exits (each dying loudly).
_workers_stopped = False
# The pools `stop_workers` shut down, kept until the next run starts: a pool collected on another thread (a
# bundle still unwinding) runs its semaphores' finalizers there, and an interrupted launcher's os._exit could
# cut one between unlinking a semaphore and telling the resource tracker, which then warns at the exit.
_stopped_pools: list = []
WORKER_STOP_SECONDS = 30


def _new_pool(processes: int) -> ProcessPoolExecutor:
    # spawn: the runner's threads must not be forked; workers import only transforms.validation
    # and transforms.worker_guard, which ends a worker whose parent is gone.
    pool = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"),
                               initializer=guard_worker, initargs=(os.getpid(),))
    _live_pools.add(pool)
    return pool


def start_workers(processes: int) -> None:
    """Starts the parse's worker processes now: each spends about 0.3 s importing, which a
    launcher can overlap with building and planning the pipeline rather than the parse."""
    global _workers_stopped
    _workers_stopped = False
    _stopped_pools.clear()
    if processes and processes not in _started_pools:
        pool = _started_pools[processes] = _new_pool(processes)
        for _ in range(processes):
            pool.submit(judge, [])


def stop_workers() -> None:
    """Stops every parse worker of this process and waits for them, the started ones not yet taken too:
    a launcher's last word after a run, above all one that ended early (interrupted, failed); bundles
    still running then judge their batches themselves."""
    global _workers_stopped
    _workers_stopped = True
    _started_pools.clear()
    for pool in list(_live_pools):
        pool.shutdown(wait=True, cancel_futures=True)  # a worker finishes the batch it judges, then exits
        _live_pools.discard(pool)
        _stopped_pools.append(pool)
    # A worker a signal caught mid-spawn is one its pool never waits for: it would fail loudly once the
    # pool's semaphores are gone. It has not judged anything yet.
    for child in multiprocessing.active_children():
        child.kill()
        child.join(WORKER_STOP_SECONDS)


class _Counters:
    """The parse counters: read = valid + malformed, malformed by reason."""

    def __init__(self):
        self.read = Metrics.counter("adclick", "read")
        self.valid = Metrics.counter("adclick", "valid")
        self.malformed = Metrics.counter("adclick", "malformed")
        self._by_reason = {}

    def announce(self):
        """Reports the counters from a bundle's first progress report on: Prism 2.77 keeps one pending payload
        per counter it has not yet resolved, so two bundles ending with a counter it has never seen (as the
        first batches of a stream do, counted when they end) lose all but one's count (docs/runners.md)."""
        for counter in (self.read, self.valid, self.malformed):
            counter.inc(0)

    def count_malformed(self, reason: str):
        counter = self._by_reason.get(reason)
        if counter is None:
            counter = self._by_reason[reason] = Metrics.counter("adclick", f"malformed.{reason}")
        counter.inc()
        self.malformed.inc()


class ParseBatchFn(beam.DoFn):
    """Validates raw input (RawLines and RawBatches as they come, RawRecords a bundle or BATCH_SIZE
    at a time) into one Arrow table of clicks (CLICK_SCHEMA) per batch; dead letters go to
    `dead_letter` one by one.

    With `processes`, batches are judged by that many worker processes, a few
    batches ahead, while this one goes on reading and sharding: on one machine
    the runner itself works in one process. When they are all busy, this one
    waits for the oldest: judging batches itself too, it was the slowest of them
    (it judged about half of them besides reading and sharding all).
    """

    def __init__(self, processes: int = 0):
        self._processes = processes

    def setup(self):
        self._counters = _Counters()

    def start_bundle(self):
        self._counters.announce()
        self._pending = collections.deque()
        self._pool = None
        self._records = []

    def process(self, element):
        if isinstance(element, RawRecord):  # a stream's, a bounded Kafka range's: judged a bundle at a time
            self._records.append(element)
            if len(self._records) < BATCH_SIZE:
                return
            element, self._records = self._records, []
        yield from self._judge(element)

    def finish_bundle(self):
        outputs = list(self._judge(self._records)) if self._records else []
        while self._pending:
            outputs.extend(self._outputs(self._pending.popleft().result()))
        for output in outputs:
            tag, value = (output.tag, output.value) if isinstance(output, beam.pvalue.TaggedOutput) else (None, output)
            windowed = GlobalWindows.windowed_value(value)
            yield windowed if tag is None else beam.pvalue.TaggedOutput(tag, windowed)
        self._stop_workers()

    def _judge(self, batch):
        """The outputs of batches judged so far: this one's, or an earlier one's from a worker."""
        if self._processes and self._pool is None:
            self._pool = _started_pools.pop(self._processes, None) or (None if _workers_stopped else
                                                                        _new_pool(self._processes))
        if not self._processes or self._pool is None:  # no workers: asked for none, or stopped by the launcher
            yield from self._outputs(judge(batch))
            return
        if len(self._pending) >= 2 * self._processes:  # enough ahead to keep every worker busy: take the oldest
            yield from self._outputs(self._pending.popleft().result())
        self._pending.append(self._pool.submit(judge, batch))

    def teardown(self):
        self._stop_workers()

    def _stop_workers(self):
        """A replay's parse is one bundle: its workers' memory is free for the steps after it."""
        if getattr(self, "_pool", None) is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)  # idle workers exit on their own
            self._pool = None

    def _outputs(self, verdicts: Verdicts):
        self._counters.read.inc(verdicts.read)
        for letter in verdicts.dead_letters:
            self._counters.count_malformed(letter.reason)
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, letter)
        if verdicts.clicks is not None:
            self._counters.valid.inc(len(verdicts.clicks))
            yield verdicts.clicks


class ParseClicks(beam.PTransform):
    """Raw input -> Arrow tables of clicks (main output `valid`) and DeadLetter (output `dead_letter`).

    Batches of clicks, a stream's as a replay's (transforms/batches.py), so that the per-element
    cost of the runner is paid per batch; a replay's are judged by `processes` worker processes if
    asked.
    """

    def __init__(self, processes: int = 0):
        super().__init__()
        self._processes = processes

    def expand(self, raw):
        return raw | "ValidateBatches" >> beam.ParDo(ParseBatchFn(self._processes)).with_outputs(
            DEAD_LETTER, main=VALID)
