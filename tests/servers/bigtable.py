"""The Cloud Bigtable emulator (cbtemulator) on a free loopback port, stopped by its PID."""

import itertools
import os
import shutil
import subprocess

import pytest

from tests.servers import environment, free_port, require_executable, start_listening, stop_group

CBTEMULATOR = (shutil.which("cbtemulator")
               or "/usr/lib/google-cloud-sdk/platform/bigtable-emulator/cbtemulator")
PROJECT, INSTANCE = "test-project", "test-instance"
_tables = itertools.count()


def start_emulator(port: int) -> subprocess.Popen:
    """Starts cbtemulator on 127.0.0.1:port and waits until it accepts connections."""
    require_executable(CBTEMULATOR, "cbtemulator (Debian package google-cloud-cli-bigtable-emulator)")
    return start_listening([CBTEMULATOR, "-host", "127.0.0.1", "-port", str(port)], port, "cbtemulator", 20)


def stop_emulator(process: subprocess.Popen) -> None:
    stop_group(process, grace=10)


@pytest.fixture(scope="session")
def bigtable_emulator():
    """host:port of a running emulator; BIGTABLE_EMULATOR_HOST points at it meanwhile."""
    port = free_port()
    process = start_emulator(port)
    try:
        with environment("BIGTABLE_EMULATOR_HOST", f"127.0.0.1:{port}") as host:
            yield host
    finally:
        stop_emulator(process)


def new_table_url(prefix: str = "clicks") -> str:
    """A table URL no other test uses (the emulator is shared by the session)."""
    return f"bigtable://{PROJECT}/{INSTANCE}/{prefix}-{os.getpid()}-{next(_tables)}"


@pytest.fixture
def bigtable_url(bigtable_emulator):
    """A fresh, created table on the emulator, as a sink URL."""
    from sinks import bigtable_table
    from sinks.bigtable import create_table
    url = new_table_url()
    create_table(bigtable_table(url))
    return url


def all_cells(url: str) -> dict:
    """Every cell of a table: {(row key, family, qualifier): [(version, value), ...]}, all versions."""
    from sinks import bigtable_table
    from sinks.bigtable import client
    ref = bigtable_table(url)
    table = client(ref.project).instance(ref.instance).table(ref.table)
    return {(row.row_key, family, qualifier): [(cell.timestamp, cell.value) for cell in cells]
            for row in table.read_rows()
            for family, columns in row.cells.items()
            for qualifier, cells in columns.items()}
