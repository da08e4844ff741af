"""The edge where aggregates leave. A sink is a PTransform over the dict `AggregateClicks` returns."""

from urllib.parse import urlparse

import apache_beam as beam

SQLITE_SCHEME = "sqlite"


def sqlite_path(url: str) -> str:
    """The file path of a `sqlite:///PATH` URL (`sqlite:////abs/path` or `sqlite:///rel/path`)."""
    parsed = urlparse(url)
    if parsed.scheme != SQLITE_SCHEME or parsed.netloc or not parsed.path.startswith("/") or len(parsed.path) < 2:
        raise ValueError(f"not a sqlite:///PATH URL: {url!r}")
    return parsed.path[1:]


def sink_for(url: str) -> beam.PTransform:
    """The sink a URL names: `sqlite:///PATH`."""
    scheme = urlparse(url).scheme
    if scheme == SQLITE_SCHEME:
        from sinks.sqlite import WriteToSqlite
        return WriteToSqlite(sqlite_path(url))
    raise ValueError(f"unknown sink {url!r}: expected sqlite:///PATH")
