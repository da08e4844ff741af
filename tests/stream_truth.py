"""Answers computed in plain Python from the generator's truth, to check a sink against."""

import collections
import os
import sqlite3

MINUTE_MS = 60_000


def clicks_per_minute(truth) -> dict:
    counts = collections.Counter((event["ad_id"], event["click_ts"] - event["click_ts"] % MINUTE_MS)
                                 for event in truth)
    return dict(counts)


def sink_clicks_per_minute(db_path) -> dict:
    with sqlite3.connect(db_path) as connection:
        return {(ad_id, window_start): clicks for ad_id, window_start, clicks in
                connection.execute("SELECT ad_id, window_start, clicks FROM clicks_per_minute")}


def sink_has_tables(db_path) -> bool:
    """Whether a stream's SQLite sink has made its tables: its file appears a moment before them."""
    if not os.path.exists(db_path):
        return False
    with sqlite3.connect(db_path) as connection:
        return connection.execute(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'clicks_per_minute'").fetchone()[0] == 1


def sink_tables(db_path) -> dict:
    """Every row of every aggregate table, for comparing two sinks."""
    tables = ("clicks_per_minute", "clicks_per_minute_by_filter", "top_ads", "top_ads_sliding")
    with sqlite3.connect(db_path) as connection:
        return {table: sorted(connection.execute(f"SELECT * FROM {table}")) for table in tables}


def ranked(counts: dict, n: int) -> list:
    """The top n (ad_id, clicks) of {ad_id: clicks}, most clicks first, ties by ad_id."""
    return sorted(counts.items(), key=lambda ad: (-ad[1], ad[0]))[:n]


def expected_tables(truth, top_n: int, sliding_minutes: int, dimension: str = "country") -> dict:
    """Every aggregate table as sink_tables() returns it, computed from the truth alone, without adclick code."""
    per_ad = clicks_per_minute(truth)
    per_filter = collections.Counter((e["ad_id"], e["click_ts"] - e["click_ts"] % MINUTE_MS,
                                      f"{dimension}={e[dimension] or 'unknown'}") for e in truth)
    by_minute, by_end = collections.defaultdict(dict), collections.defaultdict(collections.Counter)
    for (ad_id, minute), clicks in per_ad.items():
        by_minute[minute][ad_id] = clicks
        for k in range(1, sliding_minutes + 1):
            by_end[minute + k * MINUTE_MS][ad_id] += clicks
    return {
        "clicks_per_minute": sorted((ad, minute, n) for (ad, minute), n in per_ad.items()),
        "clicks_per_minute_by_filter": sorted((*key, n) for key, n in per_filter.items()),
        "top_ads": sorted((minute, rank, ad_id, clicks) for minute, ads in by_minute.items()
                          for rank, (ad_id, clicks) in enumerate(ranked(ads, top_n), 1)),
        "top_ads_sliding": sorted((end, sliding_minutes, rank, ad_id, clicks) for end, ads in by_end.items()
                                  for rank, (ad_id, clicks) in enumerate(ranked(ads, top_n), 1)),
    }
