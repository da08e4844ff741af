"""Every test module's fixtures, registered once: the servers' (tests/servers/) and the shared sink cases'."""

import os

import pytest
from hypothesis import settings

from tests.servers import free_port

# Hypothesis: `make test` runs each property's bounded number of examples; `make fuzz` (HYPOTHESIS_PROFILE=fuzz) runs
# the fuzz campaign (marker fuzz) 50 times longer. Properties that set their own max_examples keep it.
settings.register_profile("bounded", max_examples=100)
settings.register_profile("fuzz", max_examples=5_000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "bounded"))

pytest_plugins = [
    "tests.servers.bigtable",
    "tests.servers.chromium",
    "tests.servers.kafka",
    "tests.servers.prometheus",
    "tests.servers.pubsub",
    "tests.serving_cases",
    "tests.sink_cases",
]


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def beam_fixes():
    """The local stream's patches of Beam (runners/beam_compat.py) for one test: the rest of the session, the
    canaries included, runs on stock Beam. Imported here, so that tests without Beam do not load its runners."""
    from runners import beam_compat
    with beam_compat.installed(beam_compat.STREAM):
        yield
