"""`adclick stream --runner prism`: Prism's options filled in, what it cannot run refused in one line."""

import pytest
from apache_beam.options.pipeline_options import PortableOptions, PrismRunnerOptions, StandardOptions

from runners import prism, stream

pytestmark = pytest.mark.prism

KAFKA = "kafka://127.0.0.1:9092/clicks"


def test_a_person_types_only_runner_prism():
    args, beam_args = stream.parser().parse_known_args(["--source", KAFKA, "--runner", "prism"])
    options = stream.pipeline_options(args, beam_args)
    assert options.view_as(StandardOptions).runner == "PrismRunner"
    assert options.view_as(PrismRunnerOptions).prism_location == str(prism.BINARY)
    assert options.view_as(PortableOptions).environment_type == "LOOPBACK"
    assert stream.check(args, options, stream.stream_config(args)) == [], "a local SQLite sink is fine on Prism"
    assert stream.stream_config(args).aggregates.hot_key_fanout == 1, "Prism loses late clicks behind the fanout"


def test_options_given_are_kept():
    args, beam_args = stream.parser().parse_known_args(
        ["--source", KAFKA, "--runner", "prism", "--environment_type", "PROCESS", "--prism_location", "/opt/prism"])
    options = stream.pipeline_options(args, beam_args)
    assert options.view_as(PrismRunnerOptions).prism_location == "/opt/prism"
    assert options.view_as(PortableOptions).environment_type == "PROCESS"


def test_a_pubsub_stream_on_prism_is_one_line():
    with pytest.raises(SystemExit, match=r"^adclick stream: Pub/Sub streams run on the DirectRunner and Dataflow "
                                         r"\(Beam's Python ReadFromPubSub\); on Prism read Kafka$"):
        stream.run(["--source", "pubsub://projects/p/subscriptions/s", "--runner", "prism"])
