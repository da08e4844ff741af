"""End to end on the emulator: a generated log replayed into Bigtable, served by `adclick serve`,
answers equal to plain Python over the generator's truth; a second replay changes no cell."""

import collections
import json
from urllib.parse import quote

import httpx
import pytest

from loadgen.generator import GeneratorConfig, write_log
from runners import replay
from sinks.bigtable import COUNTS, MAX_MINUTE, META_ROW, TOP, parse_ad_key, parse_minute_key, parse_top_key
from tests.servers.api import api_server
from tests.servers.bigtable import all_cells

pytestmark = [pytest.mark.bigtable, pytest.mark.slow]
CONFIG = GeneratorConfig(events=4_000, seed=23, ads=300, minutes=6, duplicate_rate=0.08, late_rate=0.05,
                         malformed_rate=0.01)
MINUTE = 60_000


def minute_of(event):
    return event["click_ts"] // MINUTE * MINUTE


def ranked(counter, count):
    return sorted(counter.items(), key=lambda item: (-item[1], item[0]))[:count]


def window_of(key: bytes, family: str) -> int:
    if key.startswith(b"ad#"):
        return parse_ad_key(key)[1]
    if key.startswith(b"min#"):
        return parse_minute_key(key)[0]
    assert family == TOP
    if key.startswith(b"tops#"):
        minutes, reversed_end = key[5:].split(b"#")
        return MAX_MINUTE - int(reversed_end) - int(minutes) * MINUTE
    return parse_top_key(key)


def test_replay_into_bigtable_serves_the_truth_and_a_second_replay_changes_no_cell(bigtable_url, tmp_path):
    out = tmp_path / "log"
    manifest = write_log(CONFIG, out, "jsonl", files=2)
    truth = [json.loads(line) for line in (out / "truth.jsonl").read_text().splitlines()]
    arguments = ["--input", str(out / "clicks-*"), "--sink", bigtable_url, "--dead-letter", str(tmp_path / "dead")]
    summary = replay.run(arguments)
    assert {k: summary[k] for k in ("read", "unique", "duplicates", "malformed")} == \
        {k: manifest[k] for k in ("read", "unique", "duplicates", "malformed")}

    cells = all_cells(bigtable_url)
    assert all(len(versions) == 1 for versions in cells.values()), "a cell holds more than one version"
    assert all(versions[0][0].timestamp() * 1000 == window_of(key, family)
               for (key, family, _), versions in cells.items() if key != META_ROW), "a cell's version is not its window"
    assert {family for _, family, _ in cells} == {COUNTS, TOP}

    minutes = sorted({minute_of(event) for event in truth})
    per_minute = {minute: collections.Counter(e["ad_id"] for e in truth if minute_of(e) == minute)
                  for minute in minutes}
    totals = collections.Counter(e["ad_id"] for e in truth)
    with api_server(bigtable_url, tmp_path / "serve.log") as (base, _), httpx.Client(base_url=base) as http:
        for minute in minutes:
            for count in (10, 100, 150):  # 150 is more than the stored top 100: summed from the per-minute rows
                answer = http.get("/v1/ads/popular_ads", params={"at": minute, "count": count}).json()
                assert list(zip(answer["ad_ids"], answer["counts"])) == ranked(per_minute[minute], count)
        for minute in minutes:  # the pipeline's sliding top 100 of the last 5 minutes, and more ads than it holds
            over_five = sum((per_minute[m] for m in minutes if minute - 5 * MINUTE < m <= minute),
                            collections.Counter())
            for count in (10, 150):
                answer = http.get("/v1/ads/popular_ads", params={"at": minute, "window": 5, "count": count}).json()
                assert list(zip(answer["ad_ids"], answer["counts"])) == ranked(over_five, count)
        us = collections.Counter(e["ad_id"] for e in truth if e["country"] == "US")
        answer = http.get("/v1/ads/popular_ads",
                          params={"at": minutes[-1], "window": len(minutes), "filter": "country=US",
                                  "count": 20}).json()
        assert (answer["window_start"], answer["window_end"]) == (minutes[0], minutes[-1] + MINUTE)
        assert list(zip(answer["ad_ids"], answer["counts"])) == ranked(us, 20)

        for ad_id, _ in ranked(totals, 25) + ranked(totals, len(totals))[-5:]:
            path = f"/v1/ads/{quote(ad_id, safe='')}/aggregated_count"
            whole = {"from": minutes[0], "to": minutes[-1] + MINUTE}
            assert http.get(path, params=whole).json()["count"] == totals[ad_id]
            unknown = sum(1 for e in truth if e["ad_id"] == ad_id and e["country"] is None)
            assert http.get(path, params=whole | {"filter": "country=unknown"}).json()["count"] == unknown
            one = {"from": minutes[2], "to": minutes[3]}
            assert http.get(path, params=one).json()["count"] == per_minute[minutes[2]][ad_id]
            series = http.get(f"/v1/ads/{quote(ad_id, safe='')}/clicks_per_minute", params=whole).json()
            assert series["counts"] == [per_minute[minute][ad_id] for minute in minutes]

    replay.run(arguments)
    assert all_cells(bigtable_url) == cells, "a second replay of the same input changed a cell"
