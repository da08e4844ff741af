"""The API answers a filter only where the sink aggregated it (issue 10, defect 5), and serves ad ids
that hold '/' (defect 7): in process and from a real `adclick serve`, on SQLite and the Bigtable
emulator, against plain Python over the hand-made clicks."""

from urllib.parse import quote

import httpx
import pytest

from serving.api import create_app
from serving.store import open_store
from tests.servers.api import api_server
from tests.serving_cases import expected_clicks
from tests.sink_cases import ADS, MINUTE, T0, expected_count, expected_top, replay_into, write_log

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

WHOLE = {"from": T0, "to": T0 + 3 * MINUTE}
SLASHED = [ad_id for ad_id in ADS if "/" in ad_id]


def client_of(url):
    from fastapi.testclient import TestClient
    return TestClient(create_app(open_store(url), clock=lambda: (T0 + 10 * MINUTE) / 1000))


def refused(response, *names):
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert "never aggregated" in error and "\n" not in error, error
    assert all(name in error for name in names), error
    return error


@pytest.fixture
def replayed(sink_url, tmp_path):
    """A sink that `adclick replay` wrote with its default filters: country only."""
    replay_into(sink_url, write_log(tmp_path / "clicks.jsonl"), tmp_path)
    return sink_url


def test_a_filter_the_sink_never_aggregated_is_a_400_naming_what_it_holds(replayed):
    with client_of(replayed) as client:
        for path in ("/v1/ads/a/aggregated_count", "/v1/ads/a/clicks_per_minute", "/v1/ads/popular_ads"):
            for filter_text in ("user_id=u1", "country=US,user_id=u1", "ip=10.0.0.1"):
                error = refused(client.get(path, params=WHOLE | {"filter": filter_text}), "only filters over country")
                assert error.startswith(f"filter {filter_text} was never aggregated"), error
        answer = client.get("/v1/ads/a/aggregated_count", params=WHOLE | {"filter": "country=US"}).json()
        assert answer["count"] == expected_count("a", T0, T0 + 3 * MINUTE, "country=US")
        status = client.get("/v1/status").json()
        assert (status["filters"], status["filter_dimensions"], status["window_seconds"]) == \
            (["country"], ["country"], 60)


def test_a_sink_written_before_its_metadata_answers_the_filters_of_its_rows(loaded_sink):
    with client_of(loaded_sink) as client:
        assert client.get("/v1/status").json()["filters"] == ["country", "country+user_id"]
        refused(client.get("/v1/ads/a/aggregated_count", params={"filter": "user_id=u1"}),
                "user_id=u1", "country, country+user_id", "--filters")
        refused(client.get("/v1/ads/popular_ads", params={"filter": "ip=::1"}), "ip=::1")
        window = {"from": T0, "to": T0 + 4 * MINUTE}
        answer = client.get("/v1/ads/a/aggregated_count", params=window | {"filter": "user_id=u1,country=US"})
        assert answer.json()["count"] == expected_clicks("a", T0, T0 + 4 * MINUTE, "country=US,user_id=u1")


def test_an_empty_sink_holds_no_filters_yet(tmp_path):
    from sinks.sqlite import connect
    connect(str(tmp_path / "empty.db")).close()
    with client_of(f"sqlite:///{tmp_path / 'empty.db'}") as client:
        refused(client.get("/v1/ads/a/aggregated_count", params={"filter": "country=US"}), "holds no filters")
        assert client.get("/v1/ads/a/aggregated_count").json()["count"] == 0


def _check_slashed_ads(http):
    for ad_id in SLASHED + ["popular_ads"]:
        path = f"/v1/ads/{quote(ad_id, safe='')}"
        answer = http.get(f"{path}/aggregated_count", params=WHOLE)
        assert answer.status_code == 200, (ad_id, answer.text)
        assert answer.json()["ad_id"] == ad_id and answer.json()["count"] == expected_count(ad_id, T0, T0 + 3 * MINUTE)
        series = http.get(f"{path}/clicks_per_minute", params=WHOLE | {"filter": "country=JP"}).json()
        assert series["ad_id"] == ad_id
        assert series["counts"] == [expected_count(ad_id, m, m + MINUTE, "country=JP") for m in series["minutes"]]
    top = http.get("/v1/ads/popular_ads", params={"at": T0, "count": 100}).json()
    assert list(zip(top["ad_ids"], top["counts"])) == expected_top(T0, T0 + MINUTE)
    assert http.get(f"/v1/ads/{quote('ad/with/slash', safe='')}/nothing").status_code == 404


def test_ad_ids_with_slashes_are_served(replayed):
    with client_of(replayed) as client:
        _check_slashed_ads(client)


def test_ad_ids_with_slashes_are_served_by_adclick_serve(replayed, tmp_path):
    with api_server(replayed, tmp_path / "serve.log") as (base, _), httpx.Client(base_url=base) as http:
        _check_slashed_ads(http)
