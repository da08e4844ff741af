"""popular_ads' summed rankings are kept per SQLite data version: answers repeat from the cache until another
connection commits, and then reflect the commit at once (the next request reads again)."""

import collections
import sqlite3

import pytest

from serving.api import create_app
from serving.store import open_store
from sinks import sqlite_path
from tests.serving_cases import MINUTE, T0, expected_top

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")


@pytest.fixture
def db(loaded_sink, tmp_path):
    copy = tmp_path / "copy.db"
    with sqlite3.connect(sqlite_path(loaded_sink)) as source, sqlite3.connect(copy) as target:
        source.backup(target)
    return copy


def answer(client, filter_text="country=US", window=3):
    got = client.get("/v1/ads/popular_ads", params={"at": T0 + 2 * MINUTE, "window": window, "count": 5,
                                                    "filter": filter_text}).json()
    return list(zip(got["ad_ids"], got["counts"]))


@pytest.mark.parametrize("loaded_sink", ["sqlite"], indirect=True)  # only SQLite has a data version
def test_a_commit_by_another_connection_is_seen_by_the_next_request(db):
    from fastapi.testclient import TestClient
    store = open_store(f"sqlite:///{db}")
    start, end = T0, T0 + 3 * MINUTE
    with TestClient(create_app(store, clock=lambda: (T0 + 10 * MINUTE) / 1000)) as client:
        before = expected_top(start, end, "country=US", 5)
        assert answer(client) == before and answer(client) == before  # the second from the cache
        assert answer(client, window=2) == expected_top(T0 + MINUTE, end, "country=US", 5)
        with sqlite3.connect(db) as writer:  # a restatement by another connection: 100 more clicks of b
            writer.execute("UPDATE clicks_per_minute_by_filter SET clicks = clicks + 100"
                           " WHERE ad_id = 'b' AND filter = 'country=US' AND window_start = ?", (T0 + MINUTE,))
        totals = collections.Counter(dict(expected_top(start, end, "country=US", 100)))
        totals["b"] += 100
        assert answer(client) == sorted(totals.items(), key=lambda item: (-item[1], item[0]))[:5]
    store.close()


def test_concurrent_askers_of_the_same_sums_get_the_right_answer(loaded_sink):
    """Twelve requests for the same summed ranking at once (they share one sum on either store), and others."""
    import asyncio

    import httpx
    store = open_store(loaded_sink)
    app = create_app(store, clock=lambda: (T0 + 10 * MINUTE) / 1000)
    asked = [("country=US", 3)] * 12 + [("country=JP", 2), (None, 2), ("country=US", 2)] * 2

    async def ask_all():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return await asyncio.gather(*(client.get("/v1/ads/popular_ads", params={
                "at": T0 + 2 * MINUTE, "window": window, "count": 5} | ({"filter": text} if text else {}))
                for text, window in asked))

    answers = asyncio.run(ask_all())
    for (text, window), response in zip(asked, answers):
        top = expected_top(T0 + (3 - window) * MINUTE, T0 + 3 * MINUTE, text, 5)
        assert list(zip(response.json()["ad_ids"], response.json()["counts"])) == top, (text, window)
    store.close()
