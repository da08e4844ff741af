"""The query API in process, over SQLite and Bigtable: answers, defaults, conventions and bad input."""

from urllib.parse import quote

import pytest
from prometheus_client.parser import text_string_to_metric_families

from serving.api import create_app
from serving.store import open_store
from tests.serving_cases import ADS, MINUTE, T0, TOP_N, expected_clicks, expected_per_minute, expected_top

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

NOW = (T0 + 2 * MINUTE + 30_000) / 1000  # 00:02:30, so the last complete minute is 00:01


@pytest.fixture(scope="module")
def client(loaded_sink):
    from fastapi.testclient import TestClient
    store = open_store(loaded_sink)
    with TestClient(create_app(store, max_window_minutes=10, clock=lambda: NOW)) as test_client:
        yield test_client
    store.close()


def get(client, path, **params):
    response = client.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_aggregated_count_defaults_to_the_last_complete_minute(client):
    for ad_id in ADS:
        answer = get(client, f"/v1/ads/{quote(ad_id, safe='')}/aggregated_count")
        assert answer == {"ad_id": ad_id, "from": T0 + MINUTE, "to": T0 + 2 * MINUTE, "filter": None,
                          "count": expected_clicks(ad_id, T0 + MINUTE, T0 + 2 * MINUTE)}


@pytest.mark.parametrize("start, end, filter_text, normalized", [
    (str(T0), str(T0 + 4 * MINUTE), None, None),
    ("2026-01-01T00:00:00Z", "2026-01-01T00:04:00+00:00", "country=us", "country=US"),
    ("2026-01-01T01:00:00+01:00", "2025-12-31T19:02:00-05:00", "user_id=u1,country=US", "country=US,user_id=u1"),
    (str(T0 + 59_999), str(T0 + MINUTE + 1), "country=UNKNOWN", "country=unknown"),  # rounded down to minutes
    (str(T0 + 3 * MINUTE), str(T0 + 3 * MINUTE), None, None),  # an empty range
])
def test_aggregated_count_over_ranges_and_filters(client, start, end, filter_text, normalized):
    parameters = {"from": start, "to": end} | ({"filter": filter_text} if filter_text else {})
    for ad_id in ADS:
        answer = get(client, f"/v1/ads/{quote(ad_id, safe='')}/aggregated_count", **parameters)
        low, high = answer["from"], answer["to"]
        assert low % MINUTE == 0 and high % MINUTE == 0 and answer["filter"] == normalized
        assert answer["count"] == expected_clicks(ad_id, low, high, normalized), (ad_id, parameters)
    assert get(client, "/v1/ads/a/aggregated_count", **parameters)["from"] == \
        get(client, "/v1/ads/a/aggregated_count", **parameters | {"from": str(int(answer["from"]))})["from"]


def test_only_from_or_only_to(client):
    assert get(client, "/v1/ads/b/aggregated_count", **{"from": str(T0)})["to"] == T0 + 2 * MINUTE
    assert get(client, "/v1/ads/b/aggregated_count", to=str(T0 + MINUTE))["from"] == T0


def test_popular_ads_defaults(client):
    answer = get(client, "/v1/ads/popular_ads")
    top = expected_top(T0 + MINUTE, T0 + 2 * MINUTE)
    assert answer == {"window_start": T0 + MINUTE, "window_end": T0 + 2 * MINUTE,
                      "ad_ids": [ad for ad, _ in top], "counts": [clicks for _, clicks in top]}


@pytest.mark.parametrize("at", [T0, T0 + MINUTE, T0 + 3 * MINUTE, T0 + 4 * MINUTE])
@pytest.mark.parametrize("window", [1, 2, 4, 5])  # 4: the stored sliding top N, where it holds enough ads
@pytest.mark.parametrize("filter_text", [None, "country=US", "country=JP"])
@pytest.mark.parametrize("count", [1, TOP_N, 7])
def test_popular_ads(client, at, window, filter_text, count):
    parameters = {"at": str(at + 12_345), "window": window, "count": count}
    parameters |= {"filter": filter_text} if filter_text else {}
    answer = get(client, "/v1/ads/popular_ads", **parameters)
    start, end = at - (window - 1) * MINUTE, at + MINUTE
    top = expected_top(start, end, filter_text, count)
    assert answer == {"window_start": start, "window_end": end,
                      "ad_ids": [ad for ad, _ in top], "counts": [clicks for _, clicks in top]}


def test_clicks_per_minute_for_charts(client):
    answer = get(client, "/v1/ads/c/clicks_per_minute", **{"from": str(T0 - MINUTE), "to": str(T0 + 4 * MINUTE)})
    expected = expected_per_minute("c", T0 - MINUTE, T0 + 4 * MINUTE)
    assert answer["minutes"] == [T0 + m * MINUTE for m in range(-1, 4)]
    assert answer["counts"] == [expected.get(minute, 0) for minute in answer["minutes"]]


@pytest.mark.parametrize("path, message", [
    ("/v1/ads/a/aggregated_count?filter=country", "filter must be DIMENSION=VALUE"),
    ("/v1/ads/a/aggregated_count?filter=colour=red", "unknown filter dimension 'colour'"),
    ("/v1/ads/a/aggregated_count?filter=country=USA", "not an ISO 3166-1 alpha-2 code"),
    ("/v1/ads/a/aggregated_count?filter=country=US,country=DE", "filter names country twice"),
    ("/v1/ads/a/aggregated_count?filter=ip=300.1.1.1", "not an IPv4 or IPv6 address"),
    (f"/v1/ads/a/aggregated_count?from={T0 + MINUTE}&to={T0}", "from must not be after to"),
    ("/v1/ads/a/aggregated_count?from=yesterday", "from must be epoch milliseconds or ISO-8601"),
    ("/v1/ads/a/aggregated_count?from=2026-01-01T00:00:00", "from has no time zone"),
    ("/v1/ads/a/aggregated_count?to=1e12", "to must be epoch milliseconds"),
    ("/v1/ads/a/aggregated_count?from=0", "from must be from 2000-01-01 to 2100-01-01 UTC"),
    ("/v1/ads/a/aggregated_count?from=99999999999999999999", "from must be epoch milliseconds"),
    (f"/v1/ads/a/aggregated_count?from=946684800000&to={T0}", "spans more than 44640 minutes (adclick serve"),
    (f"/v1/ads/a/clicks_per_minute?from={T0}&to={T0 + 1441 * MINUTE}", "spans more than 1440 minutes"),
    ("/v1/ads/" + "x" * 1_000 + "/aggregated_count", "ad_id: String should have at most 256 characters"),
    ("/v1/ads/popular_ads?count=0", "count: Input should be greater than or equal to 1"),
    ("/v1/ads/popular_ads?count=1001", "count: Input should be less than or equal to 1000 (adclick serve --max-count)"),
    ("/v1/ads/popular_ads?count=ten", "count: Input should be a valid integer"),
    ("/v1/ads/popular_ads?window=11", "window: Input should be less than or equal to 10 (adclick serve --max-window"),
    ("/v1/ads/popular_ads?window=-1", "window: Input should be greater than or equal to 1"),
    ("/v1/ads/popular_ads?at=%00%ff", "at must be epoch milliseconds or ISO-8601"),
    ("/v1/ads/popular_ads?filter=" + "country=US," * 60, "filter: String should have at most 600 characters"),
])
def test_bad_parameters_get_400_and_one_clear_line(client, path, message):
    response = client.get(path)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/json"
    assert message in response.json()["error"] and "\n" not in response.json()["error"]


def test_unknown_paths_and_methods_answer_json(client):
    assert client.get("/v1/nothing").json() == {"error": "Not Found"}
    response = client.post("/v1/ads/popular_ads")
    assert response.status_code == 405 and response.headers["allow"] == "GET"


def test_operations_endpoints(client):
    assert get(client, "/healthz")["status"] == "ok"
    status = get(client, "/v1/status")
    assert status["latest_minute"] == T0 + 3 * MINUTE and status["last_complete_minute"] == T0 + MINUTE
    assert {"code": "US", "name": "United States"} in get(client, "/v1/countries")["countries"]
    client.get("/v1/ads/a/aggregated_count")
    client.get("/v1/ads/popular_ads?count=0")
    samples = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
               for family in text_string_to_metric_families(client.get("/metrics").text) for sample in family.samples}
    route = "/v1/ads/{ad_id}/aggregated_count"
    assert samples[("adclick_api_requests_total", (("method", "GET"), ("route", route), ("status", "200")))] >= 1
    assert samples[("adclick_api_requests_total",
                    (("method", "GET"), ("route", "/v1/ads/popular_ads"), ("status", "400")))] >= 1
    assert samples[("adclick_api_request_duration_seconds_count", (("method", "GET"), ("route", route)))] >= 1
    assert samples[("adclick_store_latest_minute_timestamp_seconds", ())] == (T0 + 3 * MINUTE) / 1000


def test_openapi_schema_documents_400_not_422(client):
    schema = get(client, "/openapi.json")
    operations = [operation for path in schema["paths"].values() for operation in path.values()]
    assert {"/v1/ads/{ad_id}/aggregated_count", "/v1/ads/popular_ads"} <= set(schema["paths"])
    assert not any("422" in operation["responses"] for operation in operations)
    assert schema["paths"]["/v1/ads/popular_ads"]["get"]["responses"]["400"]
