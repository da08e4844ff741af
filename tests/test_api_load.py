"""A bounded load test of the real `adclick serve` on loopback: 20 concurrent clients send 2,000
aggregated_count and 2,000 popular_ads requests to a server without a token, and the same to one with
a token and two workers; no answer is a 5xx and every one equals the plain-Python answer over the clicks
the session wrote (tests/serving_cases.py). No timing is asserted."""

import queue
import random
import secrets
import threading
from urllib.parse import quote

import httpx
import pytest

from tests.servers.api import api_server
from tests.serving_cases import ADS, MINUTE, T0, TOP_N, expected_clicks, expected_top

CLIENTS = 20
REQUESTS = 2_000  # of each kind, each way
FILTERS = [None, "country=US", "country=JP", "country=unknown", "country=US,user_id=u1"]


def count_requests(rng):
    """(path, params, expected answer) of aggregated_count over every ad, ranges in and around the clicks."""
    made = []
    for _ in range(REQUESTS):
        ad_id, filter_text = rng.choice(ADS), rng.choice(FILTERS)
        start = T0 + rng.randrange(-1, 5) * MINUTE
        end = start + rng.randrange(0, 6) * MINUTE
        params = {"from": start, "to": end} | ({"filter": filter_text} if filter_text else {})
        made.append((f"/v1/ads/{quote(ad_id, safe='')}/aggregated_count", params,
                     {"ad_id": ad_id, "from": start, "to": end, "filter": filter_text,
                      "count": expected_clicks(ad_id, start, end, filter_text)}))
    return made


def popular_requests(rng):
    """(path, params, expected answer) of popular_ads: stored rankings (window 1 and 4, count <= TOP_N) and sums."""
    made = []
    for _ in range(REQUESTS):
        at, window = T0 + rng.randrange(0, 5) * MINUTE, rng.randrange(1, 5)
        count, filter_text = rng.randrange(1, TOP_N + 3), rng.choice(FILTERS[:3])
        start, end = at - (window - 1) * MINUTE, at + MINUTE
        top = expected_top(start, end, filter_text, count)
        params = {"at": at, "window": window, "count": count} | ({"filter": filter_text} if filter_text else {})
        made.append(("/v1/ads/popular_ads", params, {"window_start": start, "window_end": end,
                                                     "ad_ids": [ad for ad, _ in top],
                                                     "counts": [clicks for _, clicks in top]}))
    return made


def hammer(base, requests, headers):
    """Every request from CLIENTS threads at once, each with its own keep-alive connection: the wrong answers."""
    work = queue.Queue()
    for request in requests:
        work.put(request)
    wrong, lock = [], threading.Lock()

    def client():
        with httpx.Client(base_url=base, headers=headers, timeout=30) as http:
            while True:
                try:
                    path, params, expected = work.get_nowait()
                except queue.Empty:
                    return
                response = http.get(path, params=params)
                answer = response.json() if response.status_code == 200 else response.text
                if answer != expected:
                    with lock:
                        wrong.append((response.status_code, path, params, answer, expected))

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return wrong


@pytest.mark.parametrize("loaded_sink", ["sqlite"], indirect=True)
@pytest.mark.parametrize("with_token", [False, True], ids=["open", "token-2-workers"])
def test_twenty_clients_get_only_right_answers(loaded_sink, tmp_path, with_token):
    extra, headers = (), {}
    if with_token:
        token = secrets.token_urlsafe(32)
        token_path = tmp_path / "token"
        token_path.write_text(token)
        token_path.chmod(0o600)
        extra, headers = ("--auth-token-file", str(token_path), "--workers", "2"), {"Authorization": f"Bearer {token}"}
    rng = random.Random(20260101)
    requests = count_requests(rng) + popular_requests(rng)
    rng.shuffle(requests)
    with api_server(loaded_sink, tmp_path / "serve.log", *extra) as (base, _):
        wrong = hammer(base, requests, headers)
        if with_token:
            refused = hammer(base, requests[:100], {"Authorization": "Bearer not-the-token"})
            assert len(refused) == 100 and {status for status, *_ in refused} == {401}
    assert not wrong, f"{len(wrong)} of {len(requests)} wrong, e.g. {wrong[:3]}"
