"""Benchmarks: `adclick bench*` time the replay, the stream, a Kafka read and the query API; they are not launchers."""
