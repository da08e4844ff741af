"""`adclick bench-kafka` against a real Apache Kafka broker: every produced record is read back by
the client, the source alone and the replay; no timing asserts."""

import pytest

from benchmarks import kafka as bench_kafka

pytestmark = pytest.mark.kafka


def test_every_record_is_read_back_three_ways(kafka_broker, capsys):
    report = bench_kafka.run(["--bootstrap", kafka_broker, "--events", "500", "--partitions", "2"])
    assert report["records"] >= 500  # the generator's resends and malformed lines come on top
    for reader in ("client", "source_only", "replay"):
        assert report[reader]["records"] == report["records"]
        assert report[reader]["records_per_second"] > 0
    assert "records_per_second" in capsys.readouterr().out
