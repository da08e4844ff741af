"""The risk filter (--risk-rules): its rules file, a replay's batches, a stream on TestStream and
`adclick replay` end to end, each against the flags worked out in plain Python (tests/risk_truth.py)."""

import collections
import json
import os
import random
import subprocess
import sys

import apache_beam as beam
import orjson
import pyarrow as pa
import pytest
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.windowed_value import PaneInfoTiming

from pipelines.click_pipeline import build_pipeline
from pipelines.config import AggregateConfig, PipelineConfig, RateRule, RiskConfig, WindowConfig
from runners.summary import counters, summarize
from tests.clicks import T0
from tests.risk_truth import abusive_clicks, verdicts
from tests.stream_cases import PaneSink, stream_batches, streaming_options
from transforms.parse import VALID
from transforms.records import CLICK_SCHEMA, Click, RawRecord
from transforms.risk import FLAGGED, RiskFilter, RiskRulesError, load_rules

pytestmark = pytest.mark.risk

ADCLICK = os.path.join(os.path.dirname(sys.executable), "adclick")
RATES = (RateRule("user_rate", "user", 8), RateRule("ip_rate", "ip", 12))
RULES = RiskConfig(RATES, ("10.0.0.2/32", "2001:db8:1::/48"), frozenset({"u5"}))
MINUTE = 60_000


def truth_of(clicks, config: RiskConfig = RULES) -> dict:
    return verdicts(clicks, [(rule.name, rule.field, rule.max_clicks) for rule in config.rates],
                    config.blocked_networks, config.blocked_users)


# The rules file ------------------------------------------------------------------------------------------------

RULES_TOML = """
[[rate]]
name = "user_rate"
by = "user"
max_clicks = 8

[[rate]]
by = "ip"
max_clicks = 12

[blocked]
ips = ["10.0.0.2"]
ip_files = ["ips.txt"]
users = ["u5"]
"""


def test_a_toml_and_a_json_file_give_the_same_rules(tmp_path):
    (tmp_path / "ips.txt").write_text("# bad ranges\n2001:db8:1::5/48   # strict=False: the range of the address\n\n")
    (tmp_path / "rules.toml").write_text(RULES_TOML)
    (tmp_path / "rules.json").write_text(json.dumps({
        "rate": [{"name": "user_rate", "by": "user", "max_clicks": 8}, {"by": "ip", "max_clicks": 12}],
        "blocked": {"ips": ["10.0.0.2/32", "2001:db8:1::/48"], "users": ["u5"]}}))
    assert load_rules(str(tmp_path / "rules.toml")) == load_rules(str(tmp_path / "rules.json")) == RULES
    assert RULES.rule_names == ("blocked_ip", "blocked_user", "user_rate", "ip_rate")


@pytest.mark.parametrize("text, message", [
    ('[[rate]]\nby = "user"\nmax_clicks = 0\n', "rules.toml: rate[0].max_clicks: must be an integer >= 1, not 0"),
    ('[[rate]]\nby = "country"\nmax_clicks = 3\n', "rules.toml: rate[0].by: must be one of user, ip, not 'country'"),
    ('[[rate]]\nby = "ip"\nmax_clicks = 3\nwindow = 60\n', "rules.toml: rate[0].window: unknown key"),
    ('[[rate]]\nby = "ip"\nmax_clicks = 3\n[[rate]]\nby = "ip"\nmax_clicks = 9\n',
     "rules.toml: rate[1].name: 'ip_rate' names two rules"),
    ('[[rate]]\nname = "Bad Name"\nby = "ip"\nmax_clicks = 3\n', "rules.toml: rate[0].name: must be 1..64"),
    ('[blocked]\nips = ["10.0.0.300/8"]\n', "rules.toml: blocked.ips: not an IPv4 or IPv6 address or CIDR range"),
    ('[blocked]\nusers = "u1"\n', "rules.toml: blocked.users: must be a list of strings"),
    ('[blocked]\nip_files = ["nowhere.txt"]\n', "rules.toml: blocked.ip_files: cannot read nowhere.txt"),
    ('[blocked]\nip_files = ["bad.txt"]\n', "rules.toml: blocked.ip_files: bad.txt:2: not an IPv4 or IPv6"),
    ('[blockd]\nusers = ["u1"]\n', "rules.toml: blockd: unknown key (known: blocked, rate)"),
    ('rate = 3\n', "rules.toml: rate: must be a list of tables"),
    ('[blocked]\n', "rules.toml: no rules"),
    ('[[rate]\n', "rules.toml: not valid TOML"),
])
def test_a_bad_rules_file_is_one_line_naming_the_file_and_the_key(tmp_path, monkeypatch, text, message):
    (tmp_path / "bad.txt").write_text("10.0.0.0/8\nnot-an-ip\n")
    (tmp_path / "rules.toml").write_text(text)
    monkeypatch.chdir(tmp_path)  # and back after the test: a later test's subprocess may rely on the cwd
    with pytest.raises(RiskRulesError) as raised:
        load_rules("rules.toml")
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_the_command_line_refuses_a_bad_rules_file_in_one_line(tmp_path):
    (tmp_path / "rules.json").write_text('{"rate": [{"by": "user", "max_clicks": -1}]}')
    (tmp_path / "log.jsonl").write_text("")
    done = subprocess.run([ADCLICK, "replay", "--input", "log.jsonl", "--risk-rules", "rules.json"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == ("adclick replay: error: argument --risk-rules: rules.json: "
                                                    "rate[0].max_clicks: must be an integer >= 1, not -1")


# A replay's batches and a stream's elements: the same flags ----------------------------------------------------

@pytest.mark.parametrize("spilled", [False, True])
def test_a_replay_flags_exactly_the_clicks_the_rules_name(spilled, tmp_path):
    clicks = abusive_clicks(T0)
    truth = truth_of(clicks)
    assert set(truth.values()) == {"blocked_ip", "blocked_user", "user_rate", "ip_rate"}  # every rule bites
    random.Random(1).shuffle(clicks)
    batches = [pa.Table.from_pylist(clicks[i:i + 60], schema=CLICK_SCHEMA) for i in range(0, len(clicks), 60)]
    with beam.Pipeline() as pipeline:
        judged = pipeline | beam.Create(batches) | RiskFilter(RULES, 600, shards=3,
                                                              spill_dir=str(tmp_path) if spilled else None)
        assert_that(judged[VALID] | beam.FlatMap(lambda table: table["event_id"].to_pylist()),
                    equal_to(sorted({c["event_id"] for c in clicks} - set(truth))), label="Billed")
        assert_that(judged[FLAGGED] | beam.Map(lambda f: (f.event_id, f.rule)), equal_to(sorted(truth.items())),
                    label="Flagged")


@pytest.mark.usefixtures("beam_fixes")
def test_block_lists_alone_need_no_shuffle_and_flag_the_same_in_a_replay_and_a_stream():
    clicks = abusive_clicks(T0)
    lists = RiskConfig((), RULES.blocked_networks, RULES.blocked_users)
    truth = truth_of(clicks, lists)
    assert set(truth.values()) == {"blocked_ip", "blocked_user"}
    with beam.Pipeline() as pipeline:
        judged = (pipeline | beam.Create([pa.Table.from_pylist(clicks, schema=CLICK_SCHEMA)])
                  | RiskFilter(lists, 600))
        assert_that(judged[FLAGGED] | beam.Map(lambda f: (f.event_id, f.rule)), equal_to(sorted(truth.items())))
    pipeline = beam.Pipeline(options=streaming_options())
    judged = pipeline | disordered_stream(clicks, 5_000) | RiskFilter(lists, 0)
    assert_that(judged[FLAGGED] | beam.Map(lambda f: (f.event_id, f.rule)), equal_to(sorted(truth.items())))
    pipeline.run().wait_until_finish()


def test_a_flagged_click_says_which_rule_and_why():
    clicks = abusive_clicks(T0)
    with beam.Pipeline() as pipeline:
        judged = (pipeline | beam.Create([pa.Table.from_pylist(clicks, schema=CLICK_SCHEMA)])
                  | RiskFilter(RULES, 600))
        bot = judged[FLAGGED] | beam.Filter(lambda f: f.user_id == "bot" and f.click_ts == T0 + 120_000 + 8_000)
        assert_that(bot, equal_to([(
            "user_rate", "click 9 of user_id bot on ad ad-a in the minute of 2026-01-01T00:02:00.000Z: more than 8",
            "bot08", "ad-a", T0 + 128_000, "bot", "203.0.113.50", "US", None)]))


def disordered_stream(clicks, disorder_ms: int, seed: int = 3) -> TestStream:
    """The clicks as a stream delivers them: out of order by up to `disorder_ms`, 50 a bundle (as
    batches of one window each), the watermark just behind the earliest click still to come (so none
    is late)."""
    rng = random.Random(seed)
    order = sorted(clicks, key=lambda c: c["click_ts"] + rng.uniform(0, disorder_ms))
    stream = TestStream().advance_watermark_to(T0 / 1000)
    for start in range(0, len(order), 50):
        stream = stream.add_elements(stream_batches([Click(**c) for c in order[start:start + 50]]))
        rest = order[start + 50:]
        if rest:
            stream = stream.advance_watermark_to(min(c["click_ts"] for c in rest) / 1000 - 0.001)
    return stream.advance_watermark_to_infinity()


@pytest.mark.usefixtures("beam_fixes")
def test_a_stream_flags_what_a_replay_flags_whatever_the_arrival_order():
    clicks = abusive_clicks(T0)
    truth = truth_of(clicks)
    pipeline = beam.Pipeline(options=streaming_options())
    judged = pipeline | disordered_stream(clicks, 20_000) | RiskFilter(RULES, 0)
    assert_that(judged[VALID] | beam.FlatMap(lambda table: table["event_id"].to_pylist()),
                equal_to(sorted({c["event_id"] for c in clicks} - set(truth))), label="Billed")
    assert_that(judged[FLAGGED] | beam.Map(lambda f: (f.event_id, f.rule)), equal_to(sorted(truth.items())),
                label="Flagged")
    pipeline.run().wait_until_finish()


@pytest.mark.usefixtures("beam_fixes")
def test_a_late_click_is_ranked_after_the_clicks_judged_on_time():
    """K = 2: three clicks judged at the watermark (the third flagged), then a late one at second 5:
    the stream flags the late one, where a replay would flag the one at second 30. As many flagged."""
    rules = RiskConfig((RateRule("user_rate", "user", 2),))

    def click(event_id, second):
        return Click(event_id, "ad-1", T0 + second * 1000, user_id="u1")

    stream = (TestStream().advance_watermark_to(T0 / 1000)
              .add_elements(stream_batches([click("a", 10), click("b", 20), click("c", 30)]))
              .advance_watermark_to(T0 / 1000 + 90)
              .add_elements(stream_batches([click("late", 5)]))
              .advance_watermark_to_infinity())
    pipeline = beam.Pipeline(options=streaming_options())
    judged = pipeline | stream | RiskFilter(rules, 600)
    assert_that(judged[FLAGGED] | beam.Map(lambda f: (f.event_id, f.detail.split(" of ")[0])),
                equal_to([("c", "click 3"), ("late", "click 4")]), label="Flagged")
    pipeline.run().wait_until_finish()
    assert sorted(truth_of([c._asdict() for c in (click("a", 10), click("b", 20), click("c", 30),
                                                         click("late", 5))], rules)) == ["b", "c"]


# The whole DAG as a stream: resends do not count, billed counts on time, the summary balances ------------------

def message(event_id, second, user_id, ad_id="ad-1", ip=None, received=None):
    received = second if received is None else received
    payload = orjson.dumps({"event_id": event_id, "ad_id": ad_id, "click_ts": T0 + int(second * 1000),
                            "user_id": user_id, "ip": ip, "country": "US"})
    return TimestampedValue(RawRecord(payload, "test", -1, T0 + int(received * 1000)), T0 / 1000 + received)


@pytest.mark.usefixtures("beam_fixes")
def test_the_stream_dag_bills_what_the_rules_let_through_and_counts_the_rest(tmp_path):
    bot = [message(f"bot{i}", 5 + i, "bot") for i in range(6)]           # 6 clicks of one user on ad-1, minute 0
    people = [message(f"p{i}", 10 + i, f"u{i}") for i in range(4)]       # one click each
    blocked = [message("ip1", 12, "u9", ip="10.0.0.2"), message("ip2", 70, None, ip="2001:db8:1::9")]
    resends = [message("bot0", 5, "bot"), message("bot1", 6, "bot")]     # dedup takes them out first
    stream = (TestStream().advance_watermark_to(T0 / 1000)
              .add_elements(bot[3:] + people[:2])
              .add_elements(bot[:3] + resends + blocked + people[2:] + [message("late-bot", 4, "bot", received=65)])
              .advance_watermark_to(T0 / 1000 + 61)
              .advance_watermark_to_infinity())
    rules = RiskConfig((RateRule("user_rate", "user", 3),), ("10.0.0.2/32", "2001:db8:1::/48"))
    config = PipelineConfig(window=WindowConfig(60, 120, 0), aggregates=AggregateConfig(hot_key_fanout=1,
                                                                                       sliding_minutes=0), risk=rules)
    pipeline = beam.Pipeline(options=streaming_options())

    def check(name, pcoll):
        if name == "per_ad":
            assert_that(pcoll, equal_to([(("ad-1", T0, 3 + 4), PaneInfoTiming.ON_TIME)]), label="PerAd")

    class Flagged(beam.PTransform):
        def expand(self, flagged):
            assert_that(flagged | beam.Map(lambda f: (f.rule, f.event_id)), equal_to(
                [("user_rate", f"bot{i}") for i in range(2, 6)] + [("blocked_ip", "ip1"), ("blocked_ip", "ip2")]),
                label="Flagged")

    build_pipeline(pipeline, stream, PaneSink(check), beam.Map(lambda _: None), config, flagged_sink=Flagged())
    result = pipeline.run()
    result.wait_until_finish()
    summary = summarize(counters(result))
    # 15 read: 2 resends; 7 billed (3 of the bot's 7, 4 people); 6 flagged
    assert (summary["read"], summary["unique"], summary["duplicates"], summary["flagged"]) == (15, 7, 2, 6)
    assert summary["flagged_by_rule"] == {"blocked_ip": 2, "user_rate": 4} and summary["balanced"]


def test_the_summary_balances_with_flagged_clicks():
    summary = summarize({"read": 10, "unique": 5, "duplicates": 2, "malformed": 1, "flagged": 2,
                         "flagged.user_rate": 1, "flagged.blocked_ip": 1})
    assert summary["balanced"] and summary["flagged_by_rule"] == {"blocked_ip": 1, "user_rate": 1}
    assert not summarize({"read": 10, "unique": 5, "duplicates": 2, "malformed": 1})["balanced"]


# `adclick replay` end to end -----------------------------------------------------------------------------------

def replay(tmp_path, *extra):
    done = subprocess.run([ADCLICK, "replay", "--input", "logs/*.jsonl", "--sink", "sqlite:///out/adclick.db",
                           "--dead-letter", "out/dead.jsonl", "--summary", "out/summary.json", *extra],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads((tmp_path / "out" / "summary.json").read_text()), done.stdout


def sink_per_ad(tmp_path) -> dict:
    import sqlite3
    with sqlite3.connect(tmp_path / "out" / "adclick.db") as connection:
        return {(ad, minute): clicks for ad, minute, clicks in connection.execute("SELECT * FROM clicks_per_minute")}


@pytest.mark.slow
def test_adclick_replay_with_rules_bills_the_rest_and_writes_the_flagged_with_their_rule(tmp_path):
    clicks = abusive_clicks(T0, seed=5, events=1500)
    rng = random.Random(2)
    resends = rng.sample(clicks, 150)  # resends of any click, bots' included: a resend never counts toward K
    lines = [orjson.dumps(c).decode() for c in clicks + resends] + ["not json", '{"event_id": 1}']
    rng.shuffle(lines)
    (tmp_path / "logs").mkdir()
    (tmp_path / "out").mkdir()
    for part in range(2):
        (tmp_path / "logs" / f"clicks-{part}.jsonl").write_text("\n".join(lines[part::2]) + "\n")
    (tmp_path / "ips.txt").write_text("2001:db8:1::/48\n")
    (tmp_path / "rules.toml").write_text(RULES_TOML)
    truth = truth_of(clicks)

    summary, out = replay(tmp_path, "--risk-rules", "rules.toml")
    flagged = [json.loads(line) for line in (tmp_path / "out" / "flagged.jsonl").read_text().splitlines()]
    assert sorted((f["event_id"], f["rule"]) for f in flagged) == sorted(truth.items())
    assert all(f["detail"] for f in flagged) and {f["ad_id"] for f in flagged} <= {"ad-a", "ad-b", "ad-c"}
    billed = [c for c in clicks if c["event_id"] not in truth]
    assert sink_per_ad(tmp_path) == collections.Counter((c["ad_id"], c["click_ts"] // MINUTE * MINUTE)
                                                        for c in billed)
    assert (summary["read"], summary["unique"], summary["duplicates"], summary["malformed"], summary["flagged"]) == (
        len(lines), len(billed), len(resends), 2, len(truth))
    assert summary["flagged_by_rule"] == dict(sorted(collections.Counter(truth.values()).items()))
    assert summary["balanced"] and "read = unique + duplicates + malformed + flagged: yes" in out

    # Without rules nothing is flagged: every unique click is billed, and no flagged file is written.
    (tmp_path / "out" / "flagged.jsonl").unlink()
    summary, _ = replay(tmp_path)
    assert (summary["unique"], summary["flagged"], summary["flagged_by_rule"]) == (len(clicks), 0, {})
    assert sink_per_ad(tmp_path) == collections.Counter((c["ad_id"], c["click_ts"] // MINUTE * MINUTE)
                                                        for c in clicks)
    assert not (tmp_path / "out" / "flagged.jsonl").exists()


@pytest.mark.parametrize("args, message", [
    (["--flagged-dir", "x"], "--flagged-dir is the risk filter's output: give --risk-rules FILE too"),
    (["--risk-rules", "rules.json", "--window-seconds", "30", "--allowed-lateness-seconds", "0"],
     "30-second windows need --allowed-lateness-seconds 20 or more"),
])
def test_a_stream_refuses_risk_options_it_cannot_honour_in_one_line(tmp_path, args, message):
    (tmp_path / "rules.json").write_text('{"rate": [{"by": "user", "max_clicks": 3}]}')
    done = subprocess.run([ADCLICK, "stream", "--source", "pubsub://projects/p/subscriptions/s", *args],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and message in done.stderr and "Traceback" not in done.stderr


def test_a_replay_refuses_flagged_without_rules(tmp_path):
    (tmp_path / "log.jsonl").write_text("")
    done = subprocess.run([ADCLICK, "replay", "--input", "log.jsonl", "--flagged", "f.jsonl"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stderr.strip() == (
        "adclick replay: --flagged is the risk filter's output: give --risk-rules FILE too")
