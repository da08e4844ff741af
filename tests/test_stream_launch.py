"""Launching streams on Flink and Dataflow: options and the ReadFromKafka configuration, checked
without an expansion service, a cluster or a cloud project (none is reachable here)."""

import pytest
from apache_beam.coders import RowCoder
from apache_beam.options.pipeline_options import FlinkRunnerOptions, GoogleCloudOptions, SetupOptions, StandardOptions
from apache_beam.portability.api import external_transforms_pb2

from runners import stream
from sources import stream_source_for
from sources.kafka import ReadKafkaStream

KAFKA = "kafka://broker-1:9092,broker-2:9092/clicks"
DATAFLOW = ["--runner", "dataflow", "--project", "test-project", "--region", "europe-west1",
            "--temp_location", "gs://adclick-tmp/beam"]
FLINK = ["--runner", "flink", "--flink_master", "flink-jobmanager:8081"]


def read_from_kafka_config(transform: ReadKafkaStream):
    payload = external_transforms_pb2.ExternalConfigurationPayload()
    payload.ParseFromString(transform.read._payload)
    return RowCoder(payload.schema).decode(payload.payload)


def checked(argv):
    args, beam_args = stream.parser().parse_known_args(argv)
    options = stream.pipeline_options(args, beam_args)
    return options, stream.check(args, options, stream.stream_config(args))


def test_read_from_kafka_reads_with_metadata_commits_on_finalize_and_uses_record_time():
    transform = stream_source_for(KAFKA, kafka_group="adclick-prod", kafka_expansion_service="expansion:8097")
    config = read_from_kafka_config(transform)
    assert config.consumer_config == {"bootstrap.servers": "broker-1:9092,broker-2:9092", "group.id": "adclick-prod",
                                      "auto.offset.reset": "earliest", "isolation.level": "read_committed"}
    assert config.topics == ["clicks"]
    assert config.commit_offset_in_finalize is True
    assert config.timestamp_policy == "CreateTime"
    assert transform.read._urn.endswith("kafka_read_with_metadata:v1")
    assert transform.read._expansion_service == "expansion:8097"


def test_without_an_address_beams_own_expansion_service_jar_is_named_not_started():
    from apache_beam.transforms.external import BeamJarExpansionService
    assert isinstance(ReadKafkaStream(KAFKA).read._expansion_service, BeamJarExpansionService)


def test_a_kafka_stream_takes_no_range():
    with pytest.raises(ValueError, match="from/to are for replays"):
        ReadKafkaStream(KAFKA + "?from=earliest&to=100")


def test_flink_launch_options():
    options, errors = checked(["--source", KAFKA, "--sink", "bigtable://p/i/t"] + FLINK)
    assert errors == []
    assert options.view_as(StandardOptions).runner == "FlinkRunner"
    assert options.view_as(StandardOptions).streaming is True
    assert options.view_as(FlinkRunnerOptions).flink_master == "flink-jobmanager:8081"


def test_dataflow_launch_options_ship_the_package():
    options, errors = checked(["--source", KAFKA, "--sink", "bigtable://p/i/t"] + DATAFLOW)
    assert errors == []
    assert options.view_as(StandardOptions).runner == "DataflowRunner"
    assert options.view_as(GoogleCloudOptions).project == "test-project"
    assert options.view_as(SetupOptions).setup_file.endswith("setup.py")


@pytest.mark.parametrize("argv, message", [
    (["--source", KAFKA, "--sink", "sqlite:///x.db"], "kafka:// streams run on --runner prism, flink or dataflow"),
    (["--source", KAFKA, "--sink", "bigtable://p/i/t", "--runner", "flink"], "needs --flink_master"),
    (["--source", KAFKA, "--sink", "sqlite:///x.db"] + FLINK, "a SQLite sink is a local file"),
    (["--source", "pubsub://projects/p/subscriptions/s", "--sink", "bigtable://p/i/t"] + FLINK,
     "Pub/Sub streams run on the DirectRunner and Dataflow"),
    (["--source", KAFKA, "--sink", "bigtable://p/i/t", "--runner", "dataflow"],
     "needs --project, --region, --temp_location"),
    (["--source", KAFKA, "--sink", "bigtable://p/i/t", "--runner", "dataflow", "--project", "p", "--region", "r",
      "--temp_location", "/tmp/x"], "gs:// path"),
])
def test_launch_errors_are_clear(argv, message):
    _, errors = checked(argv)
    assert any(message in error for error in errors), errors


def test_stream_exits_with_its_reasons_before_building_anything():
    with pytest.raises(SystemExit, match="kafka:// streams run on"):
        stream.run(["--source", KAFKA, "--sink", "sqlite:///x.db"])
    with pytest.raises(SystemExit, match="unknown stream source"):
        stream.run(["--source", "mqtt://broker/clicks"])
    with pytest.raises(SystemExit, match="not a Pub/Sub subscription URL"):
        stream.run(["--source", "pubsub://projects/p/topics/t"])
