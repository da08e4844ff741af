"""`adclick top`: the top ads of the busiest minute in a SQLite sink, for a quick look."""

import argparse
import datetime
import os
import sqlite3
import sys
import urllib.parse

from sinks import sqlite_path

BUSIEST_MINUTE = """
SELECT window_start, SUM(clicks) AS total FROM clicks_per_minute
GROUP BY window_start ORDER BY total DESC, window_start LIMIT 1
"""
TOP_OF_MINUTE = "SELECT rank, ad_id, clicks FROM top_ads WHERE window_start = ? ORDER BY rank LIMIT ?"


def run(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="adclick top", description="Top ads of the busiest minute.")
    parser.add_argument("--sink", default="sqlite:///adclick.db")
    parser.add_argument("--count", type=int, default=10)
    args = parser.parse_args(argv)
    try:
        path = sqlite_path(args.sink)
        if not os.path.isfile(path):
            raise ValueError(f"no SQLite database at {path}")
        # Read-only: a look at the sink never creates or changes it.
        connection = sqlite3.connect(f"file:{urllib.parse.quote(os.path.abspath(path))}?mode=ro", uri=True)
        busiest = connection.execute(BUSIEST_MINUTE).fetchone()
    except ValueError as error:
        sys.exit(f"adclick top: {error}")
    except sqlite3.Error as error:
        sys.exit(f"adclick top: {path}: {error}")
    if busiest is None:
        print("no clicks in the sink yet")
        return
    window_start, total = busiest
    minute = datetime.datetime.fromtimestamp(window_start / 1000, datetime.timezone.utc)
    print(f"busiest minute {minute:%Y-%m-%d %H:%M} UTC ({window_start}): {total:,} clicks")
    for rank, ad_id, clicks in connection.execute(TOP_OF_MINUTE, (window_start, args.count)):
        print(f"{rank:>4}  {ad_id:<24}{clicks:>8,}")
