"""A sink holds one window size and knows its filters (issue 10, defects 4 and 5): sizes that do not tile
a minute are refused at the command line, a second size before the run, and a 30-second sink is served
as minutes. On SQLite and on the Bigtable emulator, against plain Python over the hand-made clicks."""

import json
from urllib.parse import quote

import pytest

from runners import replay, stream
from serving.api import create_app
from serving.store import open_store
from tests.servers.bigtable import all_cells
from tests.serving_cases import load
from tests.sink_cases import (
    HALF,
    MINUTE,
    MINUTES,
    PLAIN_ADS,
    T0,
    events,
    expected_count,
    expected_top,
    minute_of,
    replay_into,
    sqlite_meta,
    write_log,
)

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")


def tables(url):
    """Everything the sink holds, to compare before and after a refused run."""
    if url.startswith("sqlite:"):
        import sqlite3

        from sinks import sqlite_path
        with sqlite3.connect(sqlite_path(url)) as connection:
            return {table: sorted(connection.execute(f"SELECT * FROM {table}")) for table in (
                "clicks_per_minute", "clicks_per_minute_by_filter", "top_ads", "top_ads_sliding")}
    return all_cells(url)


def api(url):
    from fastapi.testclient import TestClient
    return TestClient(create_app(open_store(url), max_window_minutes=10, clock=lambda: (T0 + 10 * MINUTE) / 1000))


@pytest.mark.parametrize("launcher", [replay, stream])
@pytest.mark.parametrize("size", ["0", "-5", "7", "45", "90", "120", "thirty"])
def test_window_sizes_that_do_not_tile_a_minute_are_refused_at_the_command_line(launcher, size, capsys):
    with pytest.raises(SystemExit) as exit_info:
        launcher.parser().parse_args(["--input" if launcher is replay else "--source", "x", "--window-seconds", size])
    assert exit_info.value.code != 0
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--window-seconds" in error
    assert "'thirty'" in error if size == "thirty" else "use one of 1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60" in error


@pytest.mark.parametrize("size", [1, 15, 30, 60])
def test_window_sizes_that_tile_a_minute_are_taken(size):
    assert replay.parser().parse_args(["--input", "x", "--window-seconds", str(size)]).window_seconds == size


def test_a_second_window_size_is_refused_before_the_run_and_changes_nothing(sink_url, tmp_path):
    log = write_log(tmp_path / "clicks.jsonl")
    replay_into(sink_url, log, tmp_path)
    before = tables(sink_url)
    with pytest.raises(SystemExit) as refused:
        replay_into(sink_url, log, tmp_path, "--window-seconds", "30")
    message = str(refused.value.code)
    assert message.startswith("adclick replay: ") and "\n" not in message
    assert "holds 60-second windows" in message and "--window-seconds 30" in message
    assert tables(sink_url) == before
    with api(sink_url) as client:
        for ad_id in PLAIN_ADS:
            answer = client.get(f"/v1/ads/{quote(ad_id, safe='')}/aggregated_count",
                                params={"from": T0, "to": T0 + 3 * MINUTE}).json()
            assert answer["count"] == sum(1 for e in events() if e["ad_id"] == ad_id), ad_id


@pytest.mark.pubsub
def test_a_stream_is_refused_a_second_window_size_before_it_starts(pubsub_topic, tmp_path):
    url = f"sqlite:///{tmp_path / 'sink.db'}"
    replay_into(url, write_log(tmp_path / "clicks.jsonl"), tmp_path, "--window-seconds", "30")
    args, beam_args = stream.parser().parse_known_args(["--source", pubsub_topic[1], "--sink", url])
    with pytest.raises(SystemExit) as refused:
        stream.build(args, beam_args)
    assert "holds 30-second windows" in str(refused.value.code) and "\n" not in str(refused.value.code)
    assert sqlite_meta(url)["window_seconds"] == "30"


def test_a_sink_records_its_window_size_and_the_union_of_its_filters(sink_url, tmp_path):
    log = write_log(tmp_path / "clicks.jsonl")
    replay_into(sink_url, log, tmp_path, "--window-seconds", "30")
    replay_into(sink_url, log, tmp_path, "--window-seconds", "30", "--filters", "user_id;ip+country")
    if sink_url.startswith("sqlite:"):
        assert sqlite_meta(sink_url) == {"window_seconds": "30",
                                         "filters": json.dumps(["country", "country+ip", "user_id"])}
    with api(sink_url) as client:
        status = client.get("/v1/status").json()
    assert (status["window_seconds"], status["filters"]) == (30, ["country", "country+ip", "user_id"])
    assert status["filter_dimensions"] == ["country", "ip", "user_id"]


def test_a_sink_of_30_second_windows_is_served_as_minutes(sink_url, tmp_path):
    replay_into(sink_url, write_log(tmp_path / "clicks.jsonl"), tmp_path, "--window-seconds", "30",
                "--top-sliding-minutes", "2")
    with api(sink_url) as client:
        for ad_id in PLAIN_ADS:  # (ad_ids with '/': tests/test_api_filters.py)
            path = f"/v1/ads/{quote(ad_id, safe='')}"
            for start in MINUTES:
                for end in range(start, T0 + 4 * MINUTE, MINUTE):
                    for filter_text in (None, "country=US"):
                        params = {"from": start, "to": end} | ({"filter": filter_text} if filter_text else {})
                        assert client.get(f"{path}/aggregated_count", params=params).json()["count"] == \
                            expected_count(ad_id, start, end, filter_text), (ad_id, params)
            series = client.get(f"{path}/clicks_per_minute", params={"from": T0, "to": T0 + 3 * MINUTE}).json()
            assert series["minutes"] == MINUTES
            assert series["counts"] == [expected_count(ad_id, minute, minute + MINUTE) for minute in MINUTES], ad_id
        for at in MINUTES:
            for window in (1, 2, 3):  # 2: what the pipeline's sliding top ranked, in windows of 30 s
                for count in (1, 3, 100):
                    answer = client.get("/v1/ads/popular_ads", params={"at": at, "window": window, "count": count})
                    top = expected_top(at - (window - 1) * MINUTE, at + MINUTE, count)
                    assert list(zip(answer.json()["ad_ids"], answer.json()["counts"])) == top, (at, window, count)
        latest = max(minute_of(e) for e in events())
        assert client.get("/v1/status").json()["latest_minute"] == latest
    assert any(e["click_ts"] % MINUTE >= HALF for e in events() if minute_of(e) == latest), "a later half-minute"


def test_a_sink_written_before_its_metadata_holds_minutes_and_the_filters_of_its_rows(sink_url, tmp_path):
    """serving_cases.load writes through the DAG alone, as every run did before the sink recorded anything:
    its filters are country and country+user_id."""
    from sinks import sink_for
    load(sink_for(sink_url), tmp_path / "dead.jsonl")
    with api(sink_url) as client:
        assert client.get("/v1/status").json()["filters"] == ["country", "country+user_id"]
    log = write_log(tmp_path / "clicks.jsonl")
    with pytest.raises(SystemExit) as refused:
        replay_into(sink_url, log, tmp_path, "--window-seconds", "30")
    assert "holds 60-second windows" in str(refused.value.code)
    replay_into(sink_url, log, tmp_path, "--filters", "ip")
    if sink_url.startswith("sqlite:"):
        assert sqlite_meta(sink_url) == {"window_seconds": "60",
                                         "filters": json.dumps(["country", "country+user_id", "ip"])}
    with api(sink_url) as client:
        status = client.get("/v1/status").json()
    assert (status["window_seconds"], status["filters"]) == (60, ["country", "country+user_id", "ip"])
