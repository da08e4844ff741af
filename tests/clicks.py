"""Small hand-made clicks for transform tests."""

from transforms.records import Click

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, a minute boundary


def click(event_id, ad_id="ad-1", second=0, country=None, **fields):
    return Click(event_id=event_id, ad_id=ad_id, click_ts=T0 + int(second * 1000), country=country, **fields)
