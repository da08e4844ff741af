"""`adclick bench-api` runs end to end on a small SQLite sink against a real `adclick serve` process, with
20 concurrent clients (its numbers go to docs, not asserts)."""

import json

from benchmarks import api as bench_api
from serving.store import open_store


def test_bench_api_writes_what_it_reports_and_times_every_query(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'bench.db'}"
    report = bench_api.run(["--sink", url, "--ads", "30", "--minutes", "3", "--requests", "40", "--json"])
    assert report["aggregates"] == 30 * 3 * 4 + 3 and report["clients"] == 20
    assert len(report["queries"]) == 4
    for query in report["queries"].values():
        assert query["requests"] >= 20 and query["not_200"] == 0
        assert query["p50_ms"] <= query["p95_ms"] <= query["p99_ms"] <= query["max_ms"]
        assert query["requests_per_second"] > 0
    per_ad, _, top_ads = bench_api.synthetic_aggregates(30, 3)
    store = open_store(url)
    assert store.clicks_by_ad(bench_api.T0, bench_api.T0 + 3 * 60_000, None) == {
        ad_id: sum(row.clicks for row in per_ad if row.ad_id == ad_id) for ad_id in {row.ad_id for row in per_ad}}
    assert store.top_of_minute(bench_api.T0) == list(top_ads[0].ranking)
    assert json.loads(capsys.readouterr().out)["queries"] == report["queries"]


def test_bench_api_prints_a_table_and_can_skip_the_write(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'bench.db'}"
    bench_api.run(["--sink", url, "--ads", "10", "--minutes", "2", "--requests", "20"])
    capsys.readouterr()
    report = bench_api.run(["--sink", url, "--ads", "10", "--minutes", "2", "--requests", "20", "--no-write",
                            "--workers", "2"])
    out = capsys.readouterr().out
    assert report["write_seconds"] is None and "not written again" in out and "p99 ms" in out
    assert all(query["not_200"] == 0 for query in report["queries"].values())
