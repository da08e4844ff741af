"""The sizes docs/capacity.md rests on, measured on generated clicks: raw bytes per click (JSON lines and the
raw archive's Parquet, written by the archive's own writer) and the dedup state's bytes per event_id; and
the Bigtable sink's writes a second, from the generator's Zipf ads and country mix (checked against a
generated minute).

    .venv/bin/python tools/measure_capacity.py [--events 1000000] [--ads 2000000] [--users 1000000]

Ads and users at the book's scale (2 million ads; a million users) so that Parquet's dictionaries and zstd
see the cardinalities a day's archive has, not the generator's small defaults.
"""

import argparse
import io
import sys
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import orjson  # noqa: E402
from apache_beam.coders import StrUtf8Coder, TupleCoder, VarIntCoder  # noqa: E402

from loadgen.generator import COUNTRY_MIX, GeneratorConfig, generate  # noqa: E402
from sinks.archive import write_parquet  # noqa: E402
from transforms.batches import table_of  # noqa: E402
from transforms.records import Click  # noqa: E402


def archived_clicks(config: GeneratorConfig) -> list:
    """The clicks the archive would hold (resends included), with a receive time a few seconds after."""
    log = generate(config)
    rng = np.random.default_rng(1)
    lags = rng.integers(50, 5_000, size=len(log.lines)).tolist()
    clicks = []
    for line, lag in zip(log.lines, lags):
        event = orjson.loads(line)
        clicks.append(Click(event["event_id"], event["ad_id"], event["click_ts"], event.get("user_id"),
                            event.get("ip"), event.get("country"), event["click_ts"] + lag))
    clicks.sort(key=lambda click: click.receive_ts)  # a pane's file holds clicks in arrival order
    return log, clicks


def parquet_bytes_per_click(clicks: list, rows_per_file: int) -> float:
    sizes = []
    for start in range(0, len(clicks) - rows_per_file + 1, rows_per_file):
        handle = io.BytesIO()
        write_parquet(handle, [table_of(clicks[start:start + rows_per_file])])
        sizes.append(handle.tell() / rows_per_file)
    return sum(sizes) / len(sizes)


def python_set_bytes_per_id(ids: list) -> float:
    """What the dedup's SetState costs per id where state is Python objects in memory (DirectRunner, Prism)."""
    copies = [bytes(event_id, "ascii").decode() for event_id in ids]  # fresh strings, not the log's
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    seen = set(copies)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del copies
    return (after - before) / len(seen) + sum(sys.getsizeof(event_id) for event_id in seen) / len(seen)


PEAK, GROWTH, YEARS = 50_000, 1.3, range(4)


def ad_shares(ads: int, exponent: float):
    shares = np.arange(1, ads + 1, dtype=float) ** -exponent
    return shares / shares.sum()


def country_shares():
    weights = np.array([weight for _, weight in COUNTRY_MIX], dtype=float)
    return weights / weights.sum()


def distinct_per_minute(clicks_per_minute: float, ads: np.ndarray) -> tuple:
    """Expected distinct ads and (ad, country) pairs in a minute (Poisson clicks per ad and country)."""
    mean = clicks_per_minute * ads
    pairs = sum((1 - np.exp(-mean * share)).sum() for share in country_shares())
    return (1 - np.exp(-mean)).sum(), pairs


def sink_writes(rate: float, ads: np.ndarray, early_seconds: int = 10) -> tuple:
    """(cells a second, row keys a second) the stream writes: every pane of an ad rewrites its `ad#` and `min#`
    rows (docs/bigtable-and-serving.md): one on-time pane per ad with clicks, one early pane per early-firing
    slot that got a click; a pane writes c:all and the ad's country cells (counted at their final number)."""
    mean = rate * 60 * ads
    slots = 60 // early_seconds
    panes = (1 - np.exp(-mean)) + slots * (1 - np.exp(-mean / slots))
    cells = 1 + sum(1 - np.exp(-mean * share) for share in country_shares())
    return 2 * (panes @ cells) / 60, 2 * panes.sum() / 60


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--ads", type=int, default=2_000_000)
    parser.add_argument("--users", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    config = GeneratorConfig(events=args.events, ads=args.ads, users=args.users, minutes=10, malformed_rate=0,
                             iso_timestamp_rate=0)
    log, clicks = archived_clicks(config)
    json_bytes = sum(len(line) + 1 for line in log.lines)
    print(f"clicks: {log.unique:,} unique, {log.read:,} lines with resends; ads {args.ads:,}, users {args.users:,}")
    print(f"JSON lines: {json_bytes / log.read:.1f} bytes a line")
    for rows in (10_000, 100_000, 1_000_000):
        if rows <= len(clicks):
            print(f"Parquet (zstd, the archive's writer), {rows:,} clicks a file: "
                  f"{parquet_bytes_per_click(clicks, rows):.1f} bytes a click")
    ids = [click.event_id for click in clicks[:200_000]]
    coded = StrUtf8Coder()
    nested = sum(len(coded.encode(event_id)) + 1 for event_id in ids) / len(ids)  # + its length, as state nests it
    key = len(TupleCoder([VarIntCoder(), VarIntCoder()]).encode((29_450_000, 1023)))
    print(f"dedup state: an event_id as the SetState encodes it: {nested:.1f} bytes; its (bucket, shard) key: "
          f"{key} bytes (once per key, not per id)")
    print(f"dedup state in Python memory (a set of str): {python_set_bytes_per_id(ids):.1f} bytes an id")

    ads = ad_shares(args.ads, config.zipf_exponent)
    minute = generate(GeneratorConfig(events=300_000, ads=args.ads, users=args.users, minutes=1, malformed_rate=0,
                                      iso_timestamp_rate=0)).truth
    expected = distinct_per_minute(300_000, ads)
    print(f"a generated minute of 300,000 clicks: {len({e['ad_id'] for e in minute}):,} ads, "
          f"{len({(e['ad_id'], e.get('country')) for e in minute}):,} (ad, country); the model: "
          f"{expected[0]:,.0f} and {expected[1]:,.0f}")
    for year in YEARS:
        rate = PEAK * GROWTH ** year
        distinct = distinct_per_minute(rate * 60, ads)
        cells, rows = sink_writes(rate, ads)
        print(f"year {year}: {rate:,.0f} clicks/s: {distinct[0]:,.0f} ads and {distinct[1]:,.0f} (ad, country) a "
              f"minute; the sink writes {cells:,.0f} cells/s ({rows:,.0f} row keys/s)")
    print(f"year 0 with early panes every 60 s: {sink_writes(PEAK, ads, early_seconds=60)[0]:,.0f} cells/s")


if __name__ == "__main__":
    main()
