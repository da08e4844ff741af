"""Beam's Prism runner, as `--runner prism`: the binary `make install` built at the SDK's own version.

Beam would download Prism from GitHub at run time, or build it at @latest; adclick runs the one the
Makefile built from the Go module proxy (`go install .../cmd/prism@v<SDK version>`) and never fetches
anything while a job starts. Python steps run in LOOPBACK, in the launching process: no Docker here.
"""

import logging
from pathlib import Path

import apache_beam
from apache_beam.options.pipeline_options import (
    DebugOptions,
    PipelineOptions,
    PortableOptions,
    PrismRunnerOptions,
    StandardOptions,
)
from apache_beam.utils.subprocess_server import SubprocessServer

NAMES = ("prism", "prismrunner")
HOME = Path.home() / ".cache" / "adclick" / "prism" / apache_beam.__version__
BINARY = HOME / "prism"


def is_prism(options: PipelineOptions) -> bool:
    return (options.view_as(StandardOptions).runner or "").lower() in NAMES


def configure(options: PipelineOptions) -> PipelineOptions:
    """Prism's options, defaults filled in (the built binary, LOOPBACK); ValueError if it was never built."""
    options.view_as(StandardOptions).runner = "PrismRunner"
    prism = options.view_as(PrismRunnerOptions)
    if prism.prism_location is None:
        if not BINARY.exists():
            raise ValueError(f"Prism {apache_beam.__version__} is not built ({BINARY}): run make install")
        prism.prism_location = str(BINARY)
    # Beam keeps one Prism job server per process, made by the first PrismRunner: the DirectRunner's own try
    # of Prism for a batch (which has no location and fails to download it) would leave every later run
    # of this process on that server. Each run starts its own, from the binary given.
    options.view_as(DebugOptions).add_experiment("disable_prism_server_singleton")
    portable = options.view_as(PortableOptions)
    portable.environment_type = portable.environment_type or "LOOPBACK"
    # Beam warns "Really starting service" and "Really destroying service" at each start and stop of Prism.
    logging.getLogger("apache_beam.utils.subprocess_server").setLevel(logging.ERROR)
    return options


def kill_servers() -> None:
    """Kills the job servers (Prism) this process started and still runs. Beam stops them at exit; a launcher
    stopped by a signal ends with os._exit, which runs no exit handler, and an orphaned Prism lives on until
    it next writes to its closed log pipe. Beam 2.77's cache of started servers: (process, endpoint) each."""
    for entry in list(SubprocessServer._cache._cache.values()):
        process = entry.obj[0]
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
