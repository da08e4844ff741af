"""Small hand-made clicks for transform tests, as elements (a stream) or as an Arrow batch (a replay)."""

import pyarrow as pa

from transforms.records import CLICK_SCHEMA, Click

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, a minute boundary


def click(event_id, ad_id="ad-1", second=0, country=None, **fields):
    return Click(event_id=event_id, ad_id=ad_id, click_ts=T0 + int(second * 1000), country=country, **fields)


def batch(clicks) -> pa.Table:
    """The Arrow batch a replay moves for these clicks."""
    return pa.Table.from_pylist([c._asdict() for c in clicks], schema=CLICK_SCHEMA)


def clicks_of(table: pa.Table):
    """The Click rows of a batch (extra columns such as window_start are left out)."""
    return [Click(**{name: row[name] for name in Click._fields}) for row in table.to_pylist()]
