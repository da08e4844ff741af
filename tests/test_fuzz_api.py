"""The fuzz campaign on the query API: hypothesis-made paths, query strings and methods, on both stores.

Requests go to the app as a server hands them over (ASGI: the raw path's percent-escapes decoded as
uvicorn decodes them, any bytes in the query string), and over HTTP to `adclick serve` under uvicorn.
No request may get a 5xx or a traceback; every error is one line of JSON; and a well-formed query
(any ad, any range and time format, any filter the sink holds or not) answers what plain Python
computes from the clicks loaded (tests/serving_cases.py). The number of examples is the hypothesis
profile's (tests/conftest.py): `make fuzz` runs more.
"""

import asyncio
import datetime
import json
from urllib.parse import quote, unquote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from serving.api import create_app
from serving.store import open_store
from tests.servers.api import api_server
from tests.serving_cases import ADS, MINUTE, T0, expected_clicks, expected_per_minute, expected_top

pytestmark = pytest.mark.fuzz

NOW = (T0 + 2 * MINUTE + 30_000) / 1000  # 00:02:30: the last complete minute is 00:01
MAX_WINDOW = 10
HELD_FILTERS = {"country", "country+user_id"}  # what tests/serving_cases.py aggregates


def fuzz_settings(share: int = 1):
    return settings(max_examples=max(10, settings.default.max_examples // share), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


class Served:
    """The app as a server runs it: on one event loop, which its cached reads belong to."""

    def __init__(self, app):
        self.app, self.loop = app, asyncio.new_event_loop()

    def run(self, coroutine):
        return self.loop.run_until_complete(coroutine)


@pytest.fixture(scope="module")
def app(loaded_sink):
    store = open_store(loaded_sink)
    served = Served(create_app(store, max_window_minutes=MAX_WINDOW, clock=lambda: NOW))
    yield served
    served.loop.close()
    store.close()


def call(app: Served, method: str, raw_path: bytes, query: bytes) -> tuple:
    """(status, headers, body) of one request handed to the ASGI app as uvicorn hands it over."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": unquote(raw_path.decode("ascii")), "raw_path": raw_path, "query_string": query,
             "root_path": "", "headers": [(b"host", b"127.0.0.1:8080")], "client": ("127.0.0.1", 50000),
             "server": ("127.0.0.1", 8080)}
    sent, received = [], []
    done = asyncio.Event()

    async def receive():  # the request, then (as a server says it) the client's going once the answer is sent
        if not received:
            received.append(True)
            return {"type": "http.request", "body": b"", "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            done.set()

    async def serve():
        await app.app(scope, receive, send)
        done.set()

    app.run(serve())
    start = next(message for message in sent if message["type"] == "http.response.start")
    body = b"".join(message.get("body", b"") for message in sent if message["type"] == "http.response.body")
    return start["status"], {k.decode().lower(): v.decode("latin-1") for k, v in start["headers"]}, body


def assert_one_line_error_or_answer(status: int, headers: dict, body: bytes, method: str):
    assert status < 500, (status, body[:300])
    assert b"Traceback" not in body
    if status >= 400 and method != "HEAD":
        assert headers.get("content-type", "").startswith("application/json"), (status, headers, body[:200])
        error = json.loads(body)["error"]
        assert isinstance(error, str) and error and "\n" not in error, body[:300]


# --- hostile requests ----------------------------------------------------------------------------------

PRINTABLE = st.characters(min_codepoint=0x21, max_codepoint=0x7e)
ESCAPED = st.binary(min_size=1, max_size=3).map(lambda data: "".join(f"%{byte:02X}" for byte in data))
SEGMENT = st.lists(st.text(PRINTABLE, max_size=6) | ESCAPED | st.sampled_from(
    ["a", "%2F", "..", ".", "%00", "%FF", "%C3%A9", "%E5%B9%BF", "popular_ads", "%", "%2", "广告-1"]),
    max_size=4).map("".join)
PATHS = st.one_of(
    st.tuples(st.just("/v1/ads/"), SEGMENT, st.sampled_from(["/aggregated_count", "/clicks_per_minute", "", "/",
                                                               "/aggregated_count/", "/x"])).map("".join),
    st.sampled_from(["/v1/ads/popular_ads", "/v1/status", "/v1/countries", "/healthz", "/metrics", "/openapi.json",
                     "/", "/dashboard/", "/dashboard/../serving/api.py", "/dashboard/%2e%2e/%2e%2e/setup.py",
                     "//v1/status", "/v1//ads/popular_ads", "/v1/ads/popular_ads/"]),
    st.lists(SEGMENT, max_size=4).map(lambda parts: "/" + "/".join(parts)),
)
VALUES = st.one_of(
    st.text(PRINTABLE, max_size=12), ESCAPED, st.integers().map(str), st.integers(T0 - 10 ** 9, T0 + 10 ** 9).map(str),
    st.sampled_from(["", "2026-01-01T00:00:00Z", "2026-01-01T00:00:00", "2026-01-01T00:00:00%2B01:00",
                     "9999-12-31T23:59:59Z", "0", "-1", "1e3", "NaN", "%00", "country=US", "country=us,user_id=u1",
                     "country=", "=US", "ip=1.2.3.4", "ip=::1", "user_id=%FF", "country=US,country=DE",
                     "country=unknown", "x=1", "1001", "1000", "11", "10", "2147483648", "9" * 40, "%E2%80%8B"]),
    st.text(PRINTABLE, min_size=60, max_size=700),
)
KEYS = st.sampled_from(["from", "to", "at", "filter", "count", "window", "x", "", "from%00", "FROM", "filter[]"])
QUERIES = st.lists(st.tuples(KEYS, VALUES, st.sampled_from(["=", "", "=="])), max_size=6).map(
    lambda pairs: "&".join(key + equals + value for key, value, equals in pairs))
METHODS = st.sampled_from(["GET"] * 6 + ["HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"])


@fuzz_settings()
@given(METHODS, PATHS, QUERIES)
def test_any_request_gets_an_answer_or_a_one_line_error_never_a_5xx(app, method, path, query):
    status, headers, body = call(app, method, path.encode("utf-8").replace(b" ", b"%20")
                                 if path.isascii() else quote(path, safe="/%").encode(), query.encode())
    assert_one_line_error_or_answer(status, headers, body, method)


@fuzz_settings()
@given(st.binary(max_size=200), st.binary(max_size=200))
def test_any_bytes_in_the_query_string_or_the_path_escapes_get_no_5xx(app, escaped, query):
    """The query string is bytes as the client sent them (not UTF-8, NULs); the path's escapes decode to any bytes."""
    raw_path = b"/v1/ads/" + "".join(f"%{byte:02X}" for byte in escaped).encode() + b"/aggregated_count"
    status, headers, body = call(app, "GET", raw_path, query)
    assert_one_line_error_or_answer(status, headers, body, "GET")
    status, headers, body = call(app, "GET", b"/v1/ads/popular_ads", query)
    assert_one_line_error_or_answer(status, headers, body, "GET")


# --- well-formed queries against plain Python -------------------------------------------------------------

ZONES = st.integers(-14 * 60, 14 * 60).map(lambda minutes: datetime.timezone(datetime.timedelta(minutes=minutes)))
MOMENTS = st.integers(-3 * MINUTE, 7 * MINUTE).map(lambda offset: T0 + offset)


@st.composite
def times(draw, moment) -> str:
    """`moment` (epoch ms) written as epoch ms or as ISO-8601 with some zone, Z or an offset, maybe padded."""
    if draw(st.booleans()):
        return str(moment)
    zone = draw(ZONES)
    at = datetime.datetime.fromtimestamp(moment / 1000, datetime.timezone.utc).astimezone(zone)
    text = at.isoformat(timespec=draw(st.sampled_from(["seconds", "milliseconds"])))
    return text.replace("+00:00", "Z") if draw(st.booleans()) else text


# A filter as sent: (what the answer names, normalized), or None where it is a 400 (a dimension set the sink
# did not aggregate, not a country code, a dimension twice).
FILTERS = {
    None: None, "country=US": "country=US", "country=us": "country=US", "country=JP": "country=JP",
    "country=DE,user_id=u1": "country=DE,user_id=u1", "user_id=u1,country=US": "country=US,user_id=u1",
    "country=unknown": "country=unknown", "country=UNKNOWN,user_id=unknown": "country=unknown,user_id=unknown",
    "user_id=u1": None, "ip=1.2.3.4": None, "country=ZZ": None, "country=US,country=US": None, "country=": None,
}
FILTER_TEXTS = st.sampled_from(list(FILTERS))
AD_IDS = st.sampled_from(ADS) | st.text(max_size=8).filter(bool)


def query(app, path: str, **params) -> tuple:
    text = "&".join(f"{key}={quote(str(value), safe='')}" for key, value in params.items() if value is not None)
    status, headers, body = call(app, "GET", path.encode("ascii"), text.encode())
    assert_one_line_error_or_answer(status, headers, body, "GET")
    return status, json.loads(body)


@fuzz_settings()
@given(AD_IDS, MOMENTS, MOMENTS, FILTER_TEXTS, st.data())
def test_counts_over_any_range_and_time_format_are_the_plain_python_answer(app, ad_id, start, end, filter_text, data):
    sent_from, sent_to = data.draw(times(start)), data.draw(times(end))
    low, high = start - start % MINUTE, end - end % MINUTE
    wanted = FILTERS[filter_text]
    status, answer = query(app, f"/v1/ads/{quote(ad_id, safe='')}/aggregated_count",
                           **{"from": sent_from, "to": sent_to, "filter": filter_text})
    if low > high or filter_text is not None and wanted is None:
        assert status == 400, answer
        return
    assert status == 200, answer
    assert answer == {"ad_id": ad_id, "from": low, "to": high, "filter": wanted,
                      "count": expected_clicks(ad_id, low, high, wanted)}
    status, series = query(app, f"/v1/ads/{quote(ad_id, safe='')}/clicks_per_minute",
                           **{"from": sent_from, "to": sent_to, "filter": filter_text})
    assert status == 200 and series["minutes"] == list(range(low, high, MINUTE))
    per_minute = expected_per_minute(ad_id, low, high, wanted)
    assert series["counts"] == [per_minute.get(minute, 0) for minute in series["minutes"]]


@fuzz_settings()
@given(MOMENTS, st.integers(-1, MAX_WINDOW + 1), st.integers(-1, 12), FILTER_TEXTS, st.data())
def test_popular_ads_for_any_window_are_the_plain_python_ranking(app, at, window, count, filter_text, data):
    wanted = FILTERS[filter_text]
    status, answer = query(app, "/v1/ads/popular_ads", at=data.draw(times(at)), window=window, count=count,
                           filter=filter_text)
    if not (1 <= window <= MAX_WINDOW and count >= 1) or filter_text is not None and wanted is None:
        assert status == 400, answer
        return
    last = at - at % MINUTE
    start, end = last - (window - 1) * MINUTE, last + MINUTE
    top = expected_top(start, end, wanted, count)
    assert status == 200 and answer == {"window_start": start, "window_end": end,
                                        "ad_ids": [ad for ad, _ in top], "counts": [n for _, n in top]}


# --- over HTTP, uvicorn in front ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(loaded_sink, tmp_path_factory):
    with api_server(loaded_sink, tmp_path_factory.mktemp("serve") / "serve.log") as (base, _):
        with httpx.Client(base_url=base, timeout=30) as client:
            yield client


@fuzz_settings(share=2)
@given(METHODS, PATHS, QUERIES)
def test_the_real_server_gets_no_5xx_either(server, method, path, query):
    """What the client library lets through (printable ASCII, escapes) reaches uvicorn and the app as sent."""
    raw = quote(path, safe="/%!$&'()*+,;=:@-._~").encode() + (b"?" + query.encode() if query else b"")
    try:
        url = httpx.URL(str(server.base_url).rstrip("/"), raw_path=raw)
    except httpx.InvalidURL:
        return  # the client refuses to send it
    response = server.request(method, url)
    assert_one_line_error_or_answer(response.status_code, dict(response.headers), response.content, method)
