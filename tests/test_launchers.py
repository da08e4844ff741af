"""Launch kits (docs/launch.md), checked as far as this machine allows: the Flex Template's metadata against
the commands' own options, its launcher's parsing, its image's files, the Dataflow job graph translated
offline (Beam's --dry_run: nothing is submitted) from `adclick stream --runner dataflow`, and the Flink
commands against the installed Beam's option parser. No cluster or cloud project is reachable here."""

import json
import re
import shlex
import tarfile
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.runners.dataflow.dataflow_runner import DataflowPipelineResult
from apache_beam.runners.runner import PipelineResult, PipelineState

from launch.dataflow import main as launcher, template
from runners import replay, stream
from runners.summary import started_a_job

pytestmark = pytest.mark.launchers

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "launch" / "dataflow" / "Dockerfile"
LAUNCH_DOC = ROOT / "docs" / "launch.md"
# The DAG's steps (pipelines/click_pipeline.py), named here by hand: the names Dataflow's update matches on.
DAG_STEPS = {"ReadRaw", "Parse", "ArchiveRaw", "CheckSkew", "StampEventTime", "CheckLateness", "Dedup", "Window",
             "Aggregate", "WriteAggregates", "AllDeadLetters", "WriteDeadLetters"}
PARSERS = {"stream": stream.parser, "replay": replay.parser}


def metadata() -> dict:
    return json.loads(template.METADATA.read_text())


def test_metadata_json_is_what_the_commands_options_make():
    assert template.METADATA.read_text() == template.render(), \
        "launch/dataflow/metadata.json is stale: python -m launch.dataflow.template"


def test_metadata_is_flex_template_metadata():
    data = metadata()
    assert data["name"] and data["description"]
    names = [parameter["name"] for parameter in data["parameters"]]
    assert len(names) == len(set(names))
    for parameter in data["parameters"]:
        assert re.fullmatch(r"[a-zA-Z][a-zA-Z0-9_]*", parameter["name"])
        assert parameter["label"] and parameter["helpText"]
        assert set(parameter) <= {"name", "label", "helpText", "isOptional", "regexes", "paramType"}
        for regex in parameter["regexes"]:
            re.compile(regex)


def test_every_parameter_is_an_option_of_its_commands_and_only_of_them():
    actions = {command: template.option_actions(parser()) for command, parser in PARSERS.items()}
    for parameter in template.PARAMETERS:
        for command in PARSERS:
            assert (parameter.option in actions[command]) == (command in parameter.commands), parameter.name


def test_required_parameters_match_the_commands():
    """Only `command` is required by the template; each command's required options are parameters of it,
    optional in the template (the other command has none of them) and required by the launcher's parse."""
    required = {parameter["name"] for parameter in metadata()["parameters"] if not parameter.get("isOptional")}
    assert required == {template.COMMAND}
    by_name = {parameter.name: parameter for parameter in template.PARAMETERS}
    for command, parser in PARSERS.items():
        for action in parser()._actions:
            if action.required:
                name = action.option_strings[0][2:].replace("-", "_")
                assert by_name[name].commands == (command,)


def accepts(action, text: str) -> bool:
    try:
        (action.type or str)(text)
    except Exception:
        return False
    return not action.choices or text in action.choices


SAMPLES = [str(number) for number in range(-3, 130)] + ["", "x", "1.5", "007", "0x10"]
FILTER_SAMPLES = ["country", "ip", "user_id", "country+user_id", "country;country+user_id", "ip;user_id+ip",
                  "", ";", "city", "country;city", "country+", "Country", "country user_id", "country,ip"]


def test_a_value_the_template_lets_through_is_one_the_option_accepts():
    """Dataflow checks the regexes before it starts a launcher: whatever they pass, the command takes. For
    numbers, windows and formats they pass exactly what the option accepts; the parser's defaults pass."""
    for parameter in template.PARAMETERS:
        for command in parameter.commands:
            action = template.option_actions(PARSERS[command]())[parameter.option]
            if action.type is None and not action.choices:
                continue  # a URL or a name: checked by the command itself (its source, sink and path checks)
            regex = re.compile(parameter.regex)
            samples = FILTER_SAMPLES if parameter.name == "filters" else SAMPLES + list(action.choices or ())
            for text in samples:
                if parameter.name == "filters":
                    assert not regex.match(text) or accepts(action, text), (parameter.name, text)
                else:
                    assert bool(regex.match(text)) == accepts(action, text), (parameter.name, text)
            if action.default is not None:
                default = action.default if isinstance(action.default, (str, int)) else None
                assert default is None or regex.match(str(default)), (parameter.name, action.default)


def test_the_url_regexes_take_the_runs_urls_and_refuse_local_paths():
    regexes = {parameter.name: re.compile(parameter.regex) for parameter in template.PARAMETERS}
    assert regexes["source"].match("pubsub://projects/adclick-prod/subscriptions/clicks")
    assert regexes["source"].match("kafka://broker-1:9092,broker-2:9092/clicks")
    assert not regexes["source"].match("kafka://broker-1:9092/clicks?from=earliest")  # a range is a replay's
    assert regexes["input"].match("gs://adclick-archive/raw/dt=2026-12-01/*.parquet")
    assert regexes["input"].match("kafka://broker-1:9092/clicks?from=earliest&to=latest")
    assert not regexes["input"].match("/var/log/clicks-*.jsonl")  # a worker's disk
    assert regexes["sink"].match("bigtable://adclick-prod/adclick/clicks")
    assert not regexes["sink"].match("sqlite:///adclick.db")  # a file on one worker
    assert not regexes["archive"].match("out/archive")


STREAM_TEMPLATE = ["--command=stream", "--source=kafka://broker-1:9092/clicks",
                   "--sink=bigtable://adclick-prod/adclick/clicks", "--archive=gs://adclick-archive/raw",
                   "--dead_letter_dir=gs://adclick-archive/dead", "--dedup_shards=1024", "--lateness_shards=64",
                   "--filters=country;country+user_id", "--early_firing_seconds=5",
                   "--kafka_expansion_service=expansion:8097",
                   # Dataflow's launcher adds its own: Beam options, and maybe Beam's runner name
                   "--runner=DataflowRunner", "--project=adclick-prod", "--region=europe-west1",
                   "--temp_location=gs://adclick-tmp/beam", "--setup_file=/template/setup.py"]
STREAM_CLI = ["--runner", "dataflow", "--source", "kafka://broker-1:9092/clicks",
              "--sink", "bigtable://adclick-prod/adclick/clicks", "--archive", "gs://adclick-archive/raw",
              "--dead-letter-dir", "gs://adclick-archive/dead", "--dedup-shards", "1024", "--lateness-shards", "64",
              "--filters", "country;country+user_id", "--early-firing-seconds", "5",
              "--kafka-expansion-service", "expansion:8097", "--project", "adclick-prod", "--region", "europe-west1",
              "--temp_location", "gs://adclick-tmp/beam", "--setup_file", "/template/setup.py"]
REPLAY_TEMPLATE = ["--command=replay", "--input=gs://adclick-archive/raw/*/*.parquet", "--input_format=parquet",
                   "--sink=bigtable://adclick-prod/adclick/clicks", "--dead_letter=gs://adclick-archive/replay.jsonl",
                   "--top_n=20", "--window_seconds=30", "--project=adclick-prod", "--region=europe-west1",
                   "--temp_location=gs://adclick-tmp/beam"]
REPLAY_CLI = ["--input", "gs://adclick-archive/raw/*/*.parquet", "--input-format", "parquet",
              "--sink", "bigtable://adclick-prod/adclick/clicks", "--dead-letter", "gs://adclick-archive/replay.jsonl",
              "--top-n", "20", "--window-seconds", "30", "--project", "adclick-prod", "--region", "europe-west1",
              "--temp_location", "gs://adclick-tmp/beam", "--runner", "DataflowRunner"]


def parsed(command: str, argv):
    args, beam_args = PARSERS[command]().parse_known_args(argv)
    return vars(args), PipelineOptions(beam_args).get_all_options()


@pytest.mark.parametrize("template_argv, cli_argv", [(STREAM_TEMPLATE, STREAM_CLI), (REPLAY_TEMPLATE, REPLAY_CLI)],
                         ids=["stream", "replay"])
def test_the_launcher_parses_the_templates_parameters_into_the_commands_options(template_argv, cli_argv):
    command, argv = launcher.adclick_argv(template_argv)
    assert command == template_argv[0].split("=")[1]
    assert parsed(command, argv) == parsed(command, cli_argv)
    # `--name value`, as a person would type it, is the same
    spaced = [part for argument in template_argv for part in argument.split("=", 1)]
    assert launcher.adclick_argv(spaced) == (command, argv)


@pytest.mark.parametrize("argv, message", [
    (["--command=replay", "--input=gs://a/b", "--archive=gs://a/raw"], "archive is not a parameter of command=replay"),
    (["--command=stream", "--source=kafka://b:9092/t", "--input=gs://a/b"], "input is not a parameter of command=str"),
    (["--source=kafka://b:9092/t"], "--command=stream or --command=replay"),
    (["--command=batch"], "not 'batch'"),
])
def test_the_launcher_refuses_what_its_command_would_hand_to_beam_unread(argv, message):
    with pytest.raises(SystemExit, match=re.escape(message)):
        launcher.adclick_argv(argv)


def test_a_missing_required_option_fails_the_commands_parse(capsys):
    _, argv = launcher.adclick_argv(["--command=stream", "--sink=bigtable://p/i/t"])
    with pytest.raises(SystemExit):
        stream.parser().parse_known_args(argv)
    assert "--source" in capsys.readouterr().err


def dockerfile():
    """(FROM image, {ENV name: value with ${WORKDIR} resolved}, [COPY sources])."""
    lines = [line.strip() for line in DOCKERFILE.read_text().splitlines() if line.strip() and line[0] != "#"]
    workdir = next(line.split("=", 1)[1] for line in lines if line.startswith("ARG WORKDIR="))
    image = next(line.split()[1] for line in lines if line.startswith("FROM "))
    env = {}
    for line in lines:
        if line.startswith("ENV "):
            name, value = line[4:].split("=", 1)
            env[name] = value.strip('"').replace("${WORKDIR}", workdir)
    copies = [source for line in lines if line.startswith("COPY ") for source in line.split()[1:-1]]
    return image, env, copies, workdir


def test_the_images_launcher_paths_are_the_repositorys_files():
    image, env, copies, workdir = dockerfile()
    assert image.startswith("gcr.io/dataflow-templates-base/python311-template-launcher-base")
    assert {"FLEX_TEMPLATE_PYTHON_PY_FILE", "FLEX_TEMPLATE_PYTHON_SETUP_FILE"} <= set(env)
    for name in ("FLEX_TEMPLATE_PYTHON_PY_FILE", "FLEX_TEMPLATE_PYTHON_SETUP_FILE"):
        path = Path(env[name])
        assert path.is_relative_to(workdir), name
        assert (ROOT / path.relative_to(workdir)).is_file(), f"{name}={env[name]} is no file of the repository"
    for source in copies:
        assert (ROOT / source).exists(), source
    # every package setup.py installs is in the image, so `pip install -e .` there finds them all
    packages = re.search(r"include=\[([^\]]*)\]", (ROOT / "setup.py").read_text()).group(1)
    for package in re.findall(r'"(\w+)\*"', packages):
        assert package in copies, package


def test_the_launcher_runs_as_a_file_as_dataflows_launcher_runs_it():
    """FLEX_TEMPLATE_PYTHON_PY_FILE is run as a script: it finds the repository's packages itself."""
    import subprocess
    import sys
    _, env, _, workdir = dockerfile()
    main = ROOT / Path(env["FLEX_TEMPLATE_PYTHON_PY_FILE"]).relative_to(workdir)
    done = subprocess.run([sys.executable, str(main), "--command=replay", "--archive=gs://a/raw"], cwd="/",
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == ["adclick launcher: archive is not a parameter of command=replay"]


# Dataflow's own checks want a project id of its pattern and bucket names that could exist.
DATAFLOW = ["--runner", "dataflow", "--project", "test-project", "--region", "europe-west1",
            "--temp_location", "gs://adclick-tmp/beam", "--dry_run", "True"]


def dataflow_job(argv):
    """The Dataflow job `adclick stream ARGV` makes, translated offline: Beam's --dry_run builds the job
    (the Runner API pipeline, its environment and staged files) and returns before any request."""
    args, beam_args = stream.parser().parse_known_args(argv)
    pipeline, _ = stream.build(args, beam_args)
    return pipeline.run().job


def top_level_names(proto: beam_runner_api_pb2.Pipeline) -> set:
    root = proto.components.transforms[proto.root_transform_ids[0]]
    return {proto.components.transforms[child].unique_name for child in root.subtransforms}


def all_names(proto: beam_runner_api_pb2.Pipeline) -> set:
    return {transform.unique_name for transform in proto.components.transforms.values()}


@pytest.mark.pubsub
@pytest.mark.bigtable
def test_the_dataflow_job_graph_is_the_dags_with_stable_step_names(pubsub_topic, bigtable_url, tmp_path):
    """`adclick stream --runner dataflow` over Pub/Sub into Bigtable, checked against the emulators as it would
    be against the services, translated for Dataflow: its steps are the DAG's, named the same in every build
    (what an --update matches), Pub/Sub read natively by Dataflow, the package staged from setup.py."""
    _, subscription = pubsub_topic
    argv = ["--source", subscription, "--sink", bigtable_url, "--archive", "gs://adclick-archive/raw",
            "--dead-letter-dir", "gs://adclick-archive/dead", "--dedup-shards", "1024"] + DATAFLOW
    job = dataflow_job(argv)
    proto = job.proto_pipeline
    assert top_level_names(proto) == DAG_STEPS
    assert all_names(proto) == all_names(dataflow_job(argv).proto_pipeline)
    assert "beam:transform:pubsub_read:v1" in {transform.spec.urn for transform in proto.components.transforms.values()}
    options = job.options.get_all_options()
    assert options["streaming"] is True and options["setup_file"] == str(ROOT / "setup.py")

    (environment,) = proto.components.environments.values()
    image = beam_runner_api_pb2.DockerPayload.FromString(environment.payload).container_image
    assert image.endswith("/beam_python3.11_sdk:2.77.0")  # Dataflow's image of this Beam and Python
    staged = {}
    for dependency in environment.dependencies:
        role = beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(dependency.role_payload)
        staged[role.staged_name] = beam_runner_api_pb2.ArtifactFilePayload.FromString(dependency.type_payload).path
    with tarfile.open(staged["workflow.tar.gz"]) as sdist:  # what the workers pip install
        files = {"/".join(name.split("/")[1:]) for name in sdist.getnames()}
    assert {"setup.py", "pipelines/click_pipeline.py", "runners/stream.py", "sinks/bigtable.py",
            "transforms/dedup.py"} <= files


def doc_commands(prefix: str) -> list:
    """The `prefix ...` commands of docs/launch.md's sh blocks, continuation lines joined, as argv lists."""
    blocks = re.findall(r"```sh\n(.*?)```", LAUNCH_DOC.read_text(), re.S)
    text = "\n".join(blocks).replace("\\\n", " ")
    return [shlex.split(line, comments=True) for line in text.splitlines() if line.strip().startswith(prefix)]


def beam_option_names() -> set:
    """Every option the installed Beam's Python parser knows."""
    return set(PipelineOptions([]).get_all_options())


# Flink's own options (Java FlinkPipelineOptions) that the Python parser does not define: they reach the job
# only through --flink_submit_uber_jar, which keeps options Python does not know (flink_runner.py).
FLINK_JAVA_OPTIONS = {"checkpointing_interval", "externalized_checkpoints_enabled",
                      "retain_externalized_checkpoints_on_cancellation", "savepoint_path", "allow_non_restored_state"}


def test_the_flink_commands_are_valid_options():
    commands = doc_commands("adclick stream --runner flink")
    assert len(commands) >= 2  # the first run and the resume from a savepoint
    known = beam_option_names()
    for argv in commands:
        args, beam_args = stream.parser().parse_known_args(argv[2:])
        options = stream.pipeline_options(args, beam_args)
        assert stream.check(args, options, stream.stream_config(args)) == []
        names = {argument[2:].split("=")[0] for argument in beam_args if argument.startswith("--")}
        assert names - known <= FLINK_JAVA_OPTIONS, names - known
        assert {"flink_master", "parallelism", "flink_version", "flink_submit_uber_jar"} <= names
        if names & FLINK_JAVA_OPTIONS:
            assert "flink_submit_uber_jar" in names
            kept = options.get_all_options(retain_unknown_options=True)
            assert names & FLINK_JAVA_OPTIONS <= set(kept)
        flink = options.get_all_options()
        assert flink["parallelism"] > 1 and ":" in flink["flink_master"]


def test_the_dataflow_commands_name_this_kits_files():
    text = LAUNCH_DOC.read_text()
    for path in ("launch/dataflow/metadata.json", "launch/dataflow/cloudbuild.yaml"):
        assert path in text and (ROOT / path).is_file()
    import yaml
    build_steps = yaml.safe_load((ROOT / "launch" / "dataflow" / "cloudbuild.yaml").read_text())["steps"]
    assert str(DOCKERFILE.relative_to(ROOT)) in build_steps[0]["args"]
    build = doc_commands("gcloud dataflow flex-template build")
    run = doc_commands("gcloud dataflow flex-template run")
    assert build and run and doc_commands("gcloud dataflow jobs drain")
    assert "--metadata-file=launch/dataflow/metadata.json" in build[0]
    names = {parameter["name"] for parameter in metadata()["parameters"]}
    for argv in run:
        given = set()
        for argument in argv:
            if argument.startswith("--parameters="):  # k=v,k=v; or ^~^k=v~k=v for values with commas
                pairs = argument.split("=", 1)[1]
                pairs = pairs[3:].split("~") if pairs.startswith("^~^") else pairs.split(",")
                given |= {pair.split("=", 1)[0] for pair in pairs}
        assert template.COMMAND in given and given <= names, given - names


@pytest.mark.kafka
@pytest.mark.bigtable
@pytest.mark.slow
def test_a_kafka_stream_translates_for_dataflow_with_beams_java_read(kafka_topic, bigtable_url):
    """From Kafka the same steps, ReadRaw holding the Java KafkaIO read that the expansion service (the local
    JVM of runners/expansion.py, as `--kafka-expansion-service` names one on a cluster) expands, in a Java
    environment of its own beside the Python one."""
    from runners import expansion
    argv = ["--source", kafka_topic, "--sink", bigtable_url, "--kafka-expansion-service", expansion.address(),
            "--dedup-shards", "1024"] + DATAFLOW
    proto = dataflow_job(argv).proto_pipeline
    assert top_level_names(proto) == DAG_STEPS - {"ArchiveRaw"}  # no --archive
    names = all_names(proto)
    assert "ReadRaw/ReadFromKafka/KafkaIO.Read" in names and "Parse" in names
    images = sorted(beam_runner_api_pb2.DockerPayload.FromString(environment.payload).container_image
                    for environment in proto.components.environments.values())
    assert [image.rsplit("/", 1)[-1].split(":")[0] for image in images] == ["beam_java17_sdk", "beam_python3.11_sdk"]


def test_a_template_run_is_said_in_one_line_and_waits_for_no_job(capsys):
    """Run with --template_location (as Dataflow's template launcher runs a pipeline), Beam's DataflowRunner
    returns a result without a job: the commands say so instead of failing to wait for it or to count it."""
    template_result = DataflowPipelineResult(None, None)
    assert not started_a_job(template_result)
    assert capsys.readouterr().out.splitlines() == [
        "job description written for Dataflow's template launcher; no job was started from here"]
    assert started_a_job(PipelineResult(PipelineState.DONE))  # a local runner's result: a job that ran
    assert capsys.readouterr().out == ""
