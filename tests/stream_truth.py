"""Answers computed in plain Python from the generator's truth, to check a sink against."""

import collections
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


def sink_tables(db_path) -> dict:
    """Every row of every aggregate table, for comparing two sinks."""
    tables = ("clicks_per_minute", "clicks_per_minute_by_filter", "top_ads", "top_ads_sliding")
    with sqlite3.connect(db_path) as connection:
        return {table: sorted(connection.execute(f"SELECT * FROM {table}")) for table in tables}
