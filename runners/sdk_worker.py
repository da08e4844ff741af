"""Beam's Python SDK worker in a process of its own, for Prism's `--environment_type EXTERNAL`.

LOOPBACK, Prism's default here, runs the DAG's Python in the launcher's process, which shares its
memory and its interpreter lock with whatever else the launcher does (a bench's bookkeeping and
watchers). `python -m runners.sdk_worker --port P` serves the same worker (Beam's external worker
pool, which LOOPBACK starts inside the launcher) in a process that does nothing else, as a Flink
TaskManager's or a Dataflow VM's SDK harness does; the launcher then passes `--environment_type
EXTERNAL --environment_config 127.0.0.1:P`. `external_worker()` starts one and stops it by its PID.
"""

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from typing import Iterator, List, NamedTuple

from apache_beam.options.pipeline_options import WorkerOptions
from apache_beam.runners.worker.worker_pool_main import BeamFnExternalWorkerPoolServicer

from runners.jvm import NotListening, free_port, stop_group, wait_until_listening

START_TIMEOUT_SECONDS = 60
STOP_GRACE_SECONDS = 5


class ExternalWorker(NamedTuple):
    pid: int
    pipeline_args: List[str]  # what points a Prism job at it


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m runners.sdk_worker",
                                     description="Serve Beam's Python SDK worker pool for Prism (EXTERNAL).")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-cache-memory-usage-mb", type=int, default=WorkerOptions().max_cache_memory_usage_mb,
                        help="the worker's state cache, as the pipeline option of that name (default: %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s sdk worker: %(message)s")
    # Threads, not a process per worker: LOOPBACK's pool, and Beam's own (use_process) would start `python` from
    # PATH, which need not be this one.
    _, server = BeamFnExternalWorkerPoolServicer.start(
        port=args.port, state_cache_size=args.max_cache_memory_usage_mb << 20, use_process=False)
    stopped = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopped.set())
    stopped.wait()
    server.stop(STOP_GRACE_SECONDS).wait()


@contextlib.contextmanager
def external_worker(cache_mb: int = 0, timeout: float = START_TIMEOUT_SECONDS) -> Iterator[ExternalWorker]:
    """A worker pool of its own (a state cache of `cache_mb`, as `--max_cache_memory_usage_mb`) for the jobs run
    inside the block, stopped (with its group) after it."""
    port = free_port()
    # The launcher's import path, as LOOPBACK has it in-process: a job pickles its DoFns by reference to their
    # modules, which the worker must import wherever the launcher found them, whatever its working directory.
    path = os.pathsep.join(os.path.abspath(entry or os.curdir) for entry in sys.path)
    process = subprocess.Popen([sys.executable, "-m", "runners.sdk_worker", "--port", str(port),
                                "--max-cache-memory-usage-mb", str(cache_mb)],
                               env=dict(os.environ, PYTHONPATH=path), start_new_session=True,
                               stdin=subprocess.DEVNULL)
    try:
        try:
            wait_until_listening(process, port, timeout)
        except NotListening as failed:
            raise RuntimeError(f"the SDK worker pool did not listen on port {port} within {timeout:g} s"
                               if failed.returncode is None else
                               f"the SDK worker pool exited ({failed.returncode}) before it listened") from None
        yield ExternalWorker(process.pid, ["--environment_type", "EXTERNAL",
                                           "--environment_config", f"127.0.0.1:{port}"])
    finally:
        stop_group(process, grace=STOP_GRACE_SECONDS)


if __name__ == "__main__":
    main()
