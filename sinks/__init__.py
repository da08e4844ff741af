"""The edge where aggregates leave. A sink is a PTransform over the `Aggregates` (transforms/records.py)
that `AggregateClicks` returns."""

import re
from urllib.parse import urlparse

import apache_beam as beam

SQLITE_SCHEME = "sqlite"
BIGTABLE_SCHEME = "bigtable"
_BIGTABLE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*")


def sqlite_path(url: str) -> str:
    """The file path of a `sqlite:///PATH` URL (`sqlite:////abs/path` or `sqlite:///rel/path`)."""
    parsed = urlparse(url)
    if parsed.scheme != SQLITE_SCHEME or parsed.netloc or not parsed.path.startswith("/") or len(parsed.path) < 2:
        raise ValueError(f"not a sqlite:///PATH URL: {url!r}")
    return parsed.path[1:]


def bigtable_table(url: str):
    """The TableRef of a `bigtable://PROJECT/INSTANCE/TABLE` URL."""
    from sinks.bigtable import TableRef
    parsed = urlparse(url)
    parts = [parsed.netloc] + parsed.path[1:].split("/")
    if (parsed.scheme != BIGTABLE_SCHEME or len(parts) != 3 or parsed.query or parsed.fragment
            or not all(_BIGTABLE_ID.fullmatch(part) for part in parts)):
        raise ValueError(f"not a bigtable://PROJECT/INSTANCE/TABLE URL: {url!r}")
    return TableRef(*parts)


def sink_for(url: str) -> beam.PTransform:
    """The sink a URL names: `sqlite:///PATH` or `bigtable://PROJECT/INSTANCE/TABLE`."""
    scheme = urlparse(url).scheme
    if scheme == SQLITE_SCHEME:
        from sinks.sqlite import WriteToSqlite
        return WriteToSqlite(sqlite_path(url))
    if scheme == BIGTABLE_SCHEME:
        from sinks.bigtable import WriteToBigtable
        return WriteToBigtable(bigtable_table(url))
    raise ValueError(f"unknown sink {url!r}: expected sqlite:///PATH or bigtable://PROJECT/INSTANCE/TABLE")
