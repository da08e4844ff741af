"""A Bigtable sink's tables read cell by cell, as tests/stream_truth.py's sink_tables() reads SQLite's: to compare
with the answers computed in plain Python."""


def bigtable_tables(url) -> dict:
    """Every aggregate table of a Bigtable sink as sink_tables() has them, read cell by cell; the two copies of
    each count (`ad#` and `min#` rows) must agree."""
    from sinks import bigtable as bt
    from tests.servers.bigtable import all_cells
    by_minute, by_ad, per_filter, top, sliding = {}, {}, {}, [], []
    for (key, _, qualifier), versions in all_cells(url).items():
        value = versions[0][1]
        if key.startswith(b"min#") or key.startswith(b"ad#"):
            ad_id, minute = (tuple(reversed(bt.parse_minute_key(key))) if key.startswith(b"min#")
                             else bt.parse_ad_key(key))
            copy = by_minute if key.startswith(b"min#") else by_ad
            copy[(ad_id, minute, qualifier)] = bt.decode_count(value)
        elif key.startswith(b"tops#"):
            minutes, reversed_end = key.decode()[len("tops#"):].split("#")
            sliding += [(bt.MAX_MINUTE - int(reversed_end), int(minutes), rank, ad, n)
                        for rank, (ad, n) in enumerate(bt.decode_ranking(value), 1)]
        elif key.startswith(b"top#"):
            top += [(bt.parse_top_key(key), rank, ad, n) for rank, (ad, n) in enumerate(bt.decode_ranking(value), 1)]
    assert by_minute == by_ad
    for (ad_id, minute, qualifier), n in by_minute.items():
        if qualifier != bt.ALL_CLICKS:
            per_filter[(ad_id, minute, qualifier.decode())] = n
    return {"clicks_per_minute": sorted((ad, m, n) for (ad, m, q), n in by_minute.items() if q == bt.ALL_CLICKS),
            "clicks_per_minute_by_filter": sorted((*key, n) for key, n in per_filter.items()),
            "top_ads": sorted(top), "top_ads_sliding": sorted(sliding)}
