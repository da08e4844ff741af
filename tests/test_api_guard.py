"""The API's guard over SQLite, in process: the bearer token (which routes need it, constant-time compare), the
URL length (414), the range limits (400 naming the option) and the bound on requests in flight (503 with
Retry-After, none queued), driven over ASGI with the test as the server."""

import asyncio
import secrets

import pytest

from serving.api import Limits, create_app
from serving.store import open_store
from tests.serving_cases import MINUTE, T0, expected_clicks

pytestmark = [pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`"),
              pytest.mark.parametrize("loaded_sink", ["sqlite"], indirect=True)]  # the guard is the same on every store
TOKEN = secrets.token_urlsafe(24)
NOW = (T0 + 10 * MINUTE) / 1000
LIMITS = Limits(max_count=7, max_window_minutes=3, max_range_minutes=5, max_url_length=300, max_in_flight=3)


@pytest.fixture(scope="module")
def store(loaded_sink):
    opened = open_store(loaded_sink)
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def client(store):
    from fastapi.testclient import TestClient
    with TestClient(create_app(store, clock=lambda: NOW, limits=LIMITS, token=TOKEN)) as test_client:
        yield test_client


def bearer(token=TOKEN, scheme="Bearer"):
    return {"Authorization": f"{scheme} {token}"}


COUNT = f"/v1/ads/a/aggregated_count?from={T0}&to={T0 + 2 * MINUTE}"


@pytest.mark.parametrize("path", [COUNT, "/v1/ads/popular_ads", "/v1/status", "/v1/countries", "/metrics",
                                  "/v1/nothing"])
@pytest.mark.parametrize("headers", [{}, bearer("wrong"), bearer(TOKEN[:-1]), bearer(TOKEN + "x"),
                                     {"Authorization": TOKEN}, bearer(TOKEN, "Basic")])
def test_without_the_right_token_every_data_route_is_401(client, path, headers):
    response = client.get(path, headers=headers)
    assert response.status_code == 401 and response.headers["www-authenticate"].startswith("Bearer")
    assert response.json() == {"error": "this API needs the header Authorization: Bearer TOKEN "
                                        "(see adclick serve --auth-token-file)"}


def test_with_the_token_the_answers_are_right(client):
    for headers in (bearer(), bearer(TOKEN, "bearer")):
        answer = client.get(COUNT, headers=headers).json()
        assert answer["count"] == expected_clicks("a", T0, T0 + 2 * MINUTE)
    assert client.get("/metrics", headers=bearer()).status_code == 200


@pytest.mark.parametrize("path", ["/healthz", "/dashboard/", "/dashboard/dashboard.js", "/openapi.json"])
def test_probes_the_dashboards_files_and_the_schema_need_no_token(client, path):
    assert client.get(path).status_code == 200
    assert client.get("/", follow_redirects=False).status_code in (302, 307)


def test_a_url_over_the_limit_is_414_before_the_token_is_checked(client):
    path = "/v1/ads/" + "x" * 300 + "/aggregated_count"
    response = client.get(path)
    assert response.status_code == 414
    assert response.json() == {"error": f"URL of {len(path)} bytes is longer than 300 (adclick serve --max-url-length)"}
    assert client.get(COUNT + "&filter=" + "%41" * 100, headers=bearer()).status_code == 414  # bytes as sent


@pytest.mark.parametrize("path, message", [
    (f"/v1/ads/a/aggregated_count?from={T0}&to={T0 + 6 * MINUTE}",
     "from..to spans more than 5 minutes (adclick serve --max-range-minutes)"),
    ("/v1/ads/popular_ads?count=8", "count: Input should be less than or equal to 7 (adclick serve --max-count)"),
    ("/v1/ads/popular_ads?window=4",
     "window: Input should be less than or equal to 3 (adclick serve --max-window-minutes)"),
])
def test_ranges_over_the_limits_are_400_naming_the_option(client, path, message):
    response = client.get(path, headers=bearer())
    assert response.status_code == 400 and response.json() == {"error": message}
    assert client.get(path.replace("6 * MINUTE", "5 * MINUTE").replace("=8", "=7").replace("=4", "=3"),
                      headers=bearer()).status_code in (200, 400)


def test_within_the_limits_the_edges_answer(client):
    assert client.get(f"/v1/ads/a/aggregated_count?from={T0}&to={T0 + 5 * MINUTE}", headers=bearer()).json()[
        "count"] == expected_clicks("a", T0, T0 + 5 * MINUTE)
    answer = client.get(f"/v1/ads/popular_ads?count=7&window=3&at={T0 + 2 * MINUTE}", headers=bearer()).json()
    assert len(answer["ad_ids"]) == 7


def test_beyond_max_in_flight_requests_are_503_with_retry_after_and_none_wait(store):
    """The test is the ASGI server: it holds the first answers' bodies unsent, so that exactly max_in_flight are
    in flight, then sends more; those are refused at once, /healthz still answers, and after the held ones
    finish a new request is admitted."""
    app = create_app(store, clock=lambda: NOW, limits=LIMITS)
    release = asyncio.Event()

    def scope(path, query=b""):
        return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
                "path": path, "raw_path": path.encode(), "query_string": query, "root_path": "",
                "headers": [(b"host", b"test")], "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}

    async def request(path, query=b"", hold=False, answer=None):
        answer = {"status": None, "headers": {}, "body": b""} if answer is None else answer

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
                answer["headers"] = dict(message["headers"])
            elif message["type"] == "http.response.body":
                if hold:
                    await release.wait()
                answer["body"] += message.get("body", b"")
        await app(scope(path, query), receive, send)
        return answer

    async def scenario():
        started = [{"status": None, "headers": {}, "body": b""} for _ in range(LIMITS.max_in_flight)]
        query = f"from={T0 + 6 * MINUTE}".encode()
        held = [asyncio.create_task(request("/v1/ads/a/aggregated_count", query, True, answer)) for answer in started]
        while any(answer["status"] is None for answer in started):  # each has begun its answer, and waits
            await asyncio.sleep(0.01)
        refused = await asyncio.gather(*(request("/v1/ads/popular_ads") for _ in range(5)))
        health = await request("/healthz")
        release.set()
        done = await asyncio.gather(*held)
        after = await request("/v1/ads/popular_ads")
        return refused, health, done, after

    refused, health, done, after = asyncio.run(scenario())
    assert all(answer["status"] == 503 and answer["headers"][b"retry-after"] == b"1" for answer in refused)
    assert refused[0]["body"] == b'{"error":"busy: 3 requests in flight (adclick serve --max-in-flight); ' \
                                 b'retry after 1 s"}'
    assert health["status"] == 200
    assert [answer["status"] for answer in done] == [200] * LIMITS.max_in_flight
    assert after["status"] == 200
