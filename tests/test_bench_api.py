"""`adclick bench-api` runs end to end on a small SQLite sink (its numbers go to docs, not asserts)."""

from benchmarks import api as bench_api
from serving.store import open_store


def test_bench_api_writes_what_it_reports_and_times_every_query(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'bench.db'}"
    report = bench_api.run(["--sink", url, "--ads", "30", "--minutes", "3", "--requests", "5"])
    assert report["aggregates"] == 30 * 3 * 4 + 3
    assert len(report["queries"]) == 4 and all(q["requests"] >= 5 for q in report["queries"].values())
    per_ad, _, top_ads = bench_api.synthetic_aggregates(30, 3)
    store = open_store(url)
    assert store.clicks_by_ad(bench_api.T0, bench_api.T0 + 3 * 60_000, None) == {
        ad_id: sum(row.clicks for row in per_ad if row.ad_id == ad_id) for ad_id in {row.ad_id for row in per_ad}}
    assert store.top_of_minute(bench_api.T0) == list(top_ads[0].ranking)
    assert '"write_seconds"' in capsys.readouterr().out
