"""Every test module's fixtures, registered once: the servers' (tests/servers/) and the shared sink cases'."""

import pytest

from tests.servers import free_port

pytest_plugins = [
    "tests.servers.bigtable",
    "tests.servers.chromium",
    "tests.servers.kafka",
    "tests.servers.pubsub",
    "tests.serving_cases",
    "tests.sink_cases",
]


@pytest.fixture
def port() -> int:
    return free_port()
