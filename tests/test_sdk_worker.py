"""runners/sdk_worker.py: a Prism job's Python runs in the SDK worker process it is pointed at, not the launcher."""

import os

import apache_beam as beam
import psutil
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from runners import prism
from runners.sdk_worker import external_worker

pytestmark = pytest.mark.prism


class _NoteWhere(beam.DoFn):
    def __init__(self, path: str):
        self._path = path

    def process(self, number):
        with open(self._path, "a") as notes:
            notes.write(f"{number} {os.getpid()}\n")


def test_a_prism_job_runs_its_python_in_the_external_worker_which_stops_after(tmp_path):
    notes = tmp_path / "notes.txt"
    with external_worker() as worker:
        assert worker.pid != os.getpid()
        options = prism.configure(PipelineOptions(["--runner", "prism"] + worker.pipeline_args))
        with beam.Pipeline(options=options) as pipeline:
            _ = pipeline | beam.Create(range(50)) | beam.ParDo(_NoteWhere(str(notes)))
    seen = [line.split() for line in notes.read_text().splitlines()]
    assert sorted(int(number) for number, _ in seen) == list(range(50))
    assert {int(pid) for _, pid in seen} == {worker.pid}
    assert not psutil.pid_exists(worker.pid)
