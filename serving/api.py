"""The query API (SPEC.md "Sinks and serving"), its Prometheus metrics and the dashboard.

JSON conventions: every time, in and out, is a minute start in epoch milliseconds (UTC);
ranges are [from, to) — `from` inclusive, `to` exclusive — and inputs that fall inside a
minute are rounded down to its start (the answer echoes the rounded values). Inputs may also
be ISO-8601 with a zone. A filter is answered only where the sink aggregated its combination of
dimensions (`/v1/status` lists them): a count of 0 for a filter never counted would be false.
An ad_id may hold '/' (sent as %2F). Every error is `{"error": "<one line>"}` with a 4xx status (bad
parameters: 400; no or a wrong bearer token: 401; unknown path: 404; URL too long: 414) or 503 when the
store cannot answer or too many requests are in flight.
"""

import asyncio
import dataclasses
import hmac
import logging
import re
import time
from collections import OrderedDict
from pathlib import Path as FilePath
from typing import Callable, Dict, List, Optional

import orjson
import pycountry
from fastapi import FastAPI, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from pydantic import BaseModel, Field
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipelines.config import AggregateConfig
from serving.store import Store, StoreUnavailable
from transforms.records import (
    FILTER_DIMENSIONS,
    MINUTE_MS,
    UNKNOWN,
    NoTimeZone,
    dimension_set_of,
    filter_text,
    iso_to_epoch_ms,
    minute_start,
)
from transforms.validation import COUNTRY_CODES, MAX_CLICK_TS, MAX_ID_LENGTH, MAX_OPTIONAL_LENGTH, MIN_CLICK_TS

LOG = logging.getLogger(__name__)
STATIC = FilePath(__file__).parent / "static"
_EPOCH_MS = re.compile(r"-?[0-9]{1,16}")
_TIME_HELP = "epoch milliseconds or ISO-8601 with a zone (2026-01-01T00:05:00Z); rounded down to its minute"
_FILTER_HELP = "one filter, DIMENSION=VALUE[,DIMENSION=VALUE] over country, ip, user_id, e.g. country=US"


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one request may ask, and how many may be in flight: each bounds what a request costs (rows read,
    points drawn, memory) or how long the ones admitted wait. `adclick serve` has an option for each but
    max_series_minutes (the dashboard's chart span)."""
    max_count: int = 1000  # popular_ads: ads in one answer
    max_window_minutes: int = 60  # popular_ads: its cost grows with the window (every ad of every minute)
    max_range_minutes: int = 31 * 24 * 60  # aggregated_count: one ad, a month of minutes
    max_series_minutes: int = 24 * 60  # clicks_per_minute: one point per minute, a day
    max_url_length: int = 4096  # path and query; an ad_id is at most 256 characters, 768 %-encoded
    max_in_flight: int = 64  # requests being answered; beyond: 503 with Retry-After, never a queue


DEFAULT_LIMITS = Limits()


def option_of(limit: str) -> str:
    """The `adclick serve` option that sets a Limits field, named in the answer that field refuses."""
    return "adclick serve --" + limit.replace("_", "-")


RETRY_AFTER_SECONDS = 1
RANKED_CACHE_SIZE = 256  # popular_ads sums kept per data version (each at most max_count ads)
UNGUARDED = ("/healthz",)  # probes: never refused for a token or for being busy
OPEN = ("/", "/openapi.json")  # no data: a redirect and the schema
OPEN_PREFIXES = ("/dashboard/", "/dashboard")  # the dashboard's code, no data: its API calls carry the token


class _AnyText(Convertor):
    """A path parameter that may hold '/' (sent as %2F, which the server decodes before routing) and
    any other character, newlines too: an ad_id is any text."""
    regex = "(?s:.*)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("any_text", _AnyText())


class BadRequest(ValueError):
    """A parameter the API cannot answer for; its message is the answer's error."""


class ErrorAnswer(BaseModel):
    error: str = Field(description="what was wrong, in one line")


class AggregatedCount(BaseModel):
    ad_id: str
    from_: int = Field(alias="from", description="first minute counted, epoch ms (inclusive)")
    to: int = Field(description="end of the range, epoch ms (exclusive)")
    filter: Optional[str] = Field(description="the filter applied, normalized (country=US), or null")
    count: int = Field(description="clicks of the ad in [from, to) for the filter")


class PopularAds(BaseModel):
    window_start: int = Field(description="first minute of the window, epoch ms (inclusive)")
    window_end: int = Field(description="end of the window, epoch ms (exclusive): `at` + 1 minute")
    ad_ids: List[str] = Field(description="most clicked first, ties by ad_id")
    counts: List[int] = Field(description="clicks of each ad in `ad_ids` over the window")


class ClicksPerMinute(BaseModel):
    ad_id: str
    from_: int = Field(alias="from")
    to: int
    filter: Optional[str]
    minutes: List[int] = Field(description="every minute start in [from, to), epoch ms")
    counts: List[int] = Field(description="clicks in each minute, 0 where there were none")


class Status(BaseModel):
    store: str
    latest_minute: Optional[int] = Field(description="newest minute with clicks in the store, epoch ms")
    last_complete_minute: int = Field(description="the default minute of the queries, epoch ms")
    max_count: int
    max_window_minutes: int
    window_seconds: Optional[int] = Field(description="the sink's window size; the API sums each minute's windows")
    filters: List[str] = Field(description="the combinations of dimensions the sink aggregated, e.g. country+user_id: "
                                           "a filter is answered over one of these")
    filter_dimensions: List[str] = Field(description="every dimension some combination in `filters` names")


class Country(BaseModel):
    code: str
    name: str


class Countries(BaseModel):
    countries: List[Country]


class Health(BaseModel):
    status: str
    store: str


ERRORS = {
    400: {"model": ErrorAnswer, "description": "bad parameters"},
    503: {"model": ErrorAnswer, "description": "the store cannot answer now, or too many requests are in flight "
                                                "(then with Retry-After)"},
}
GUARD_ERRORS = {  # what _Guard may answer on every route it guards, before routing
    "401": "no or a wrong bearer token (adclick serve --auth-token-file)",
    "414": f"the URL is longer than {option_of('max_url_length')}",
    "503": f"too many requests in flight ({option_of('max_in_flight')}); retry after Retry-After seconds",
}


def parse_time(text: str, name: str) -> int:
    """Epoch ms of an epoch-ms or ISO-8601 (with zone) parameter, within 2000..2100 UTC."""
    text = text.strip()
    if _EPOCH_MS.fullmatch(text):
        epoch_ms = int(text)
    else:
        try:
            epoch_ms = iso_to_epoch_ms(text)
        except NoTimeZone:
            raise BadRequest(f"{name} has no time zone: add Z for UTC or an offset such as +02:00") from None
        except ValueError:
            raise BadRequest(f"{name} must be {_TIME_HELP.split(';')[0]}, got {text[:40]!r}") from None
    if not MIN_CLICK_TS <= epoch_ms < MAX_CLICK_TS:
        raise BadRequest(f"{name} must be from 2000-01-01 to 2100-01-01 UTC")
    return epoch_ms


def _filter_value(dimension: str, value: str) -> str:
    if value.lower() == UNKNOWN:
        return UNKNOWN
    if len(value) > MAX_OPTIONAL_LENGTH:
        raise BadRequest(f"filter value of {dimension} is longer than {MAX_OPTIONAL_LENGTH} characters")
    if dimension == "country":
        if value.upper() not in COUNTRY_CODES:
            raise BadRequest(f"filter country={value[:40]} is not an ISO 3166-1 alpha-2 code (e.g. US) or unknown")
        return value.upper()
    if dimension == "ip":
        import ipaddress
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise BadRequest(f"filter ip={value[:40]} is not an IPv4 or IPv6 address") from None
    return value


def parse_filter(text: Optional[str]) -> Optional[str]:
    """The filter as the sink stores it (`country=US`, dimensions sorted), None for none."""
    if text is None or text == "":
        return None
    values = {}
    for part in text.split(","):
        dimension, equals, value = part.partition("=")
        if not equals or not dimension or not value:
            raise BadRequest(f"filter must be {_FILTER_HELP.split(', ', 1)[1]}; got {text[:60]!r}")
        if dimension not in FILTER_DIMENSIONS:
            raise BadRequest(f"unknown filter dimension {dimension[:40]!r}; known: {', '.join(FILTER_DIMENSIONS)}")
        if dimension in values:
            raise BadRequest(f"filter names {dimension} twice")
        values[dimension] = _filter_value(dimension, value)
    return filter_text(values)


def _time_query(name: str, meaning: str):
    return Query(None, alias=name, max_length=64, description=f"{meaning}; {_TIME_HELP}")


_LIMITED = {"count": "max_count", "window": "max_window_minutes"}  # parameter: the Limits field bounding it


def _validation_message(error: RequestValidationError) -> str:
    parts = []
    for detail in error.errors()[:3]:
        location = [str(part) for part in detail.get("loc", ()) if part not in ("query", "path", "body")]
        name = ".".join(location) or "request"
        option = f" ({option_of(_LIMITED[name])})" if detail.get("type") == "less_than_equal" and name in _LIMITED \
            else ""
        parts.append(f"{name}: {detail.get('msg', 'invalid')}{option}")
    return "; ".join(parts)


def _error(status: int, message: str, headers=None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _json(body) -> Response:
    """An answer serialized by orjson (or bytes already), bypassing the response model's validation: the schema
    still names the model, and tests check the answers against it."""
    return Response(body if isinstance(body, bytes) else orjson.dumps(body), media_type="application/json")


class _Guard:
    """ASGI middleware that refuses before routing: a URL over the limit (414), a missing or wrong bearer token
    on the data routes (401, compared in constant time), and any request beyond `max_in_flight` (503 with
    Retry-After: a bounded number answered at once, none queued). /healthz passes every check."""

    def __init__(self, app, limits: Limits, token: Optional[str]):
        self.app = app
        self._max_url = limits.max_url_length
        self._max_in_flight = limits.max_in_flight
        self._token = token.encode() if token is not None else None
        self._in_flight = 0  # one event loop per worker: no lock needed

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in UNGUARDED:
            return await self.app(scope, receive, send)
        refusal = self._refusal(scope)
        if refusal is not None:
            return await refusal(scope, receive, send)
        self._in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self._in_flight -= 1

    def _refusal(self, scope) -> Optional[Response]:
        length = len(scope.get("raw_path") or scope["path"].encode()) + len(scope.get("query_string", b""))
        if length > self._max_url:
            return _error(414, f"URL of {length} bytes is longer than {self._max_url} ({option_of('max_url_length')})")
        path = scope["path"]
        if self._token is not None and path not in OPEN and not path.startswith(OPEN_PREFIXES) \
                and not self._authorized(scope):
            return _error(401, "this API needs the header Authorization: Bearer TOKEN (see adclick serve "
                               "--auth-token-file)", {"WWW-Authenticate": 'Bearer realm="adclick"'})
        if self._in_flight >= self._max_in_flight:
            return _error(503, f"busy: {self._max_in_flight} requests in flight ({option_of('max_in_flight')}); "
                               f"retry after {RETRY_AFTER_SECONDS} s", {"Retry-After": str(RETRY_AFTER_SECONDS)})
        return None

    def _authorized(self, scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, credentials = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(), self._token)
        return False


class _RequestMetrics:
    """ASGI middleware: request counts by route template, method and status, and latency."""

    MAX_CACHED = 1024  # (method, route, status) children kept: labels() takes a lock and builds a key each call

    def __init__(self, app, requests: Counter, latency: Histogram):
        self.app = app
        self._requests = requests
        self._latency = latency
        self._children = {}

    def _observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = (self._requests.labels(method, route, str(status)), self._latency.labels(method, route))
            if len(self._children) < self.MAX_CACHED:
                self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = 500
        started = time.perf_counter()

        async def send_and_note_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            route = getattr(scope.get("route"), "path_format", None)
            if route is None:
                route = "/dashboard" if scope["path"].startswith("/dashboard") else "unmatched"
            self._observe(scope["method"], route, status, time.perf_counter() - started)


class _StoreFreshness:
    """A Prometheus collector: the newest minute in the store, read at scrape time."""

    def __init__(self, store: Store):
        self._store = store

    def collect(self):
        gauge = GaugeMetricFamily(
            "adclick_store_latest_minute_timestamp_seconds",
            "Start of the newest minute with clicks in the store (compare with time() for freshness)")
        try:
            latest = self._store.latest_minute()
        except StoreUnavailable:
            latest = None
        if latest is not None:
            gauge.add_metric([], latest / 1000)
        yield gauge


def create_app(store: Store, max_window_minutes: Optional[int] = None, clock: Callable[[], float] = time.time,
               limits: Limits = DEFAULT_LIMITS, token: Optional[str] = None) -> FastAPI:
    """The API over `store`. `clock` (epoch seconds) decides the last complete minute; `max_window_minutes`, if
    given, replaces the limits' own; with a `token`, every route but /healthz, the dashboard's files and the schema
    needs `Authorization: Bearer <token>`."""
    if max_window_minutes is not None:
        limits = dataclasses.replace(limits, max_window_minutes=max_window_minutes)
    app = FastAPI(
        title="adclick query API",
        version="1",
        description="Clicks per ad and minute, and the most clicked ads, from the adclick aggregates. " + __doc__,
        docs_url=None, redoc_url=None,  # their pages load scripts from a CDN; the schema is at /openapi.json
    )
    app.add_middleware(_Guard, limits=limits, token=token)  # inside the metrics' middleware: refusals are counted
    registry = _metrics(app, store)
    app.state.store = store
    _add_error_handlers(app)
    reads = _Reads(store, clock)
    _add_query_routes(app, reads, limits)
    _add_dashboard_routes(app, reads, limits)
    _add_operation_routes(app, reads, registry)
    app.openapi = lambda: _openapi_with_our_errors(app)
    return app


def _metrics(app: FastAPI, store: Store) -> CollectorRegistry:
    """The app's own Prometheus registry: requests and latency by route (middleware), the store's freshness."""
    registry = CollectorRegistry()
    requests = Counter("adclick_api_requests", "API requests by route template, method and status",
                       ["method", "route", "status"], registry=registry)
    latency = Histogram("adclick_api_request_duration_seconds", "API request latency by route template",
                        ["method", "route"], registry=registry,
                        buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
    registry.register(_StoreFreshness(store))
    app.add_middleware(_RequestMetrics, requests=requests, latency=latency)
    return registry


def _add_error_handlers(app: FastAPI) -> None:
    """Every error is one line of JSON: 400 bad parameters, 404 unknown path, 503 store unavailable, 500 a bug."""

    @app.exception_handler(BadRequest)
    async def bad_request(request, error):
        return _error(400, str(error))

    @app.exception_handler(RequestValidationError)
    async def invalid_parameters(request, error):
        return _error(400, _validation_message(error))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, error):
        return _error(error.status_code, str(error.detail), getattr(error, "headers", None))

    @app.exception_handler(StoreUnavailable)
    async def store_unavailable(request, error):
        LOG.warning("store unavailable: %s", error)
        return _error(503, f"the store cannot answer now: {error}")

    @app.exception_handler(Exception)
    async def internal_error(request, error):
        LOG.exception("internal error on %s", request.url.path)
        return _error(500, "internal error; see the server log")


class _Reads:
    """What the routes share: the store, the clock's last complete minute, and the parameters read
    against both (time ranges, filters the sink holds)."""

    def __init__(self, store: Store, clock: Callable[[], float]):
        self.store = store
        self._clock = clock
        self._inline = store.reads_inline
        self._version = None  # the store's data_version the sums below were read at
        self._sums: "OrderedDict[tuple, asyncio.Future]" = OrderedDict()
        self._running: Dict[tuple, asyncio.Future] = {}  # the sums being read, for a store without a version

    async def ranked(self, start: int, end: int, filter_text: Optional[str], count: int):
        """store.ranked (every ad of every minute summed: milliseconds to seconds) in the thread pool, shared by
        the requests that ask for the same sums. On SQLite a sum is kept per data version: a commit to the store
        (a replay's, a stream's, a restatement's) changes the version and empties the cache, so no answer is
        older than its request. A store without a version (Bigtable) keeps nothing: only requests arriving while
        the same sum runs share it, so an answer is at most one sum's duration older than its request."""
        key = (start, end, filter_text, count)
        version = self.store.data_version() if self._inline else None
        if version is None:
            sums, keep = self._running, False
        else:
            if version != self._version:
                self._version = version
                self._sums.clear()
            sums, keep = self._sums, True
        summing = sums.get(key)
        if summing is None:
            summing = asyncio.ensure_future(run_in_threadpool(self.store.ranked, start, end, filter_text, count))
            sums[key] = summing
            if keep and len(sums) > RANKED_CACHE_SIZE:
                sums.popitem(last=False)
            if not keep:
                summing.add_done_callback(lambda done: sums.pop(key) if sums.get(key) is done else None)
        elif keep:
            sums.move_to_end(key)
        try:
            return await asyncio.shield(summing)  # a request that goes away leaves the sum to the others
        except Exception:
            if sums.get(key) is summing:
                del sums[key]  # a failure (503) is not kept: the next request reads again
            raise

    async def run(self, function, *args):
        """`function(*args)` on the event loop for a store whose reads take microseconds (SQLite's indexed reads:
        a hop to a thread would cost more than the read), else in the thread pool."""
        if self._inline:
            return function(*args)
        return await run_in_threadpool(function, *args)

    def last_complete_minute(self) -> int:
        return minute_start(int(self._clock() * 1000)) - MINUTE_MS

    def time_range(self, from_text: Optional[str], to_text: Optional[str], limit_minutes: int, option: str):
        """[start, end) of minute starts; `to` defaults to the end of the last complete minute, `from` to a minute
        before `to`."""
        end = (minute_start(parse_time(to_text, "to")) if to_text is not None
               else self.last_complete_minute() + MINUTE_MS)
        start = minute_start(parse_time(from_text, "from")) if from_text is not None else end - MINUTE_MS
        if start > end:
            raise BadRequest("from must not be after to")
        if end - start > limit_minutes * MINUTE_MS:
            raise BadRequest(f"from..to spans more than {limit_minutes} minutes{option}")
        return start, end

    def held_filter(self, filter_text: Optional[str]) -> Optional[str]:
        """The normalized filter, if the sink aggregated its dimensions; else a 400 that names what it holds."""
        normalized = parse_filter(filter_text)
        if normalized is not None:
            held = self.store.meta().filters
            if dimension_set_of(normalized) not in held:
                holds = f"only filters over {', '.join(sorted(held))}" if held else "no filters"
                raise BadRequest(f"filter {normalized[:80]} was never aggregated in this sink, which holds {holds} "
                                 f"(replay with --filters to add {dimension_set_of(normalized)})")
        return normalized


_AD_ID = Path(min_length=1, max_length=MAX_ID_LENGTH, description="the ad, 1..256 characters")
_FILTER = Query(None, alias="filter", description=_FILTER_HELP, max_length=600)
_FROM = _time_query("from", "first minute; default: `to` - 1 minute")
_TO = _time_query("to", "end (exclusive); default: the end of the last complete minute")


def _add_query_routes(app: FastAPI, reads: _Reads, limits: Limits) -> None:
    """SPEC.md's two queries: the most clicked ads, and one ad's clicks over a range."""
    store = reads.store

    def window_of(window: int, filter_text: Optional[str], at: Optional[str]):
        last = minute_start(parse_time(at, "at")) if at is not None else reads.last_complete_minute()
        return last - (window - 1) * MINUTE_MS, last + MINUTE_MS, reads.held_filter(filter_text)

    @app.get("/v1/ads/popular_ads", response_model=PopularAds, responses=ERRORS, tags=["queries"],
             summary="The most clicked ads over the last `window` minutes up to `at`")
    async def popular_ads(
            count: int = Query(AggregateConfig.top_n, ge=1, le=limits.max_count, description="how many ads"),
            window: int = Query(1, ge=1, le=limits.max_window_minutes,
                                description="minutes, ending with the minute `at`"),
            filter_text: Optional[str] = _FILTER,
            at: Optional[str] = _time_query("at", "the window's last minute; default: the last complete minute")):
        start, end, normalized = await reads.run(window_of, window, filter_text, at)
        ranking = await reads.run(store.stored_top, start, end, normalized, count)
        if ranking is None:
            ranking = await reads.ranked(start, end, normalized, count)
        return _json({"window_start": start, "window_end": end,
                      "ad_ids": [ad_id for ad_id, _ in ranking], "counts": [clicks for _, clicks in ranking]})

    def count_of(ad_id: str, from_text: Optional[str], to_text: Optional[str], filter_text: Optional[str]):
        start, end = reads.time_range(from_text, to_text, limits.max_range_minutes,
                                      f" ({option_of('max_range_minutes')})")
        normalized = reads.held_filter(filter_text)
        return {"ad_id": ad_id, "from": start, "to": end, "filter": normalized,
                "count": store.clicks(ad_id, start, end, normalized)}

    @app.get("/v1/ads/{ad_id:any_text}/aggregated_count", response_model=AggregatedCount, responses=ERRORS,
             tags=["queries"], summary="Clicks of one ad in the minutes [from, to)")
    async def aggregated_count(ad_id: str = _AD_ID, from_text: Optional[str] = _FROM, to_text: Optional[str] = _TO,
                               filter_text: Optional[str] = _FILTER):
        return _json(await reads.run(count_of, ad_id, from_text, to_text, filter_text))


def _add_dashboard_routes(app: FastAPI, reads: _Reads, limits: Limits) -> None:
    """What the dashboard reads besides the queries: a chart's series, the store's status, the country codes."""
    store = reads.store

    def series_of(ad_id: str, from_text: Optional[str], to_text: Optional[str], filter_text: Optional[str]):
        start, end = reads.time_range(from_text, to_text, limits.max_series_minutes, "")
        normalized = reads.held_filter(filter_text)
        counts = store.clicks_per_minute(ad_id, start, end, normalized)
        minutes = list(range(start, end, MINUTE_MS))
        return {"ad_id": ad_id, "from": start, "to": end, "filter": normalized,
                "minutes": minutes, "counts": [counts.get(minute, 0) for minute in minutes]}

    @app.get("/v1/ads/{ad_id:any_text}/clicks_per_minute", response_model=ClicksPerMinute, responses=ERRORS,
             tags=["dashboard"], summary="Clicks of one ad, minute by minute (for charts)")
    async def clicks_per_minute(ad_id: str = _AD_ID, from_text: Optional[str] = _FROM, to_text: Optional[str] = _TO,
                                filter_text: Optional[str] = _FILTER):
        return _json(await reads.run(series_of, ad_id, from_text, to_text, filter_text))

    def status_now():
        held = store.meta()
        return {"store": store.kind, "latest_minute": store.latest_minute(),
                "last_complete_minute": reads.last_complete_minute(), "max_count": limits.max_count,
                "max_window_minutes": limits.max_window_minutes, "window_seconds": held.window_seconds,
                "filters": sorted(held.filters), "filter_dimensions": held.dimensions}

    @app.get("/v1/status", response_model=Status, responses={503: ERRORS[503]}, tags=["dashboard"],
             summary="The newest minute in the store and the API's limits")
    async def status():
        return _json(await reads.run(status_now))

    countries = orjson.dumps({"countries": sorted(
        ({"code": country.alpha_2, "name": getattr(country, "common_name", country.name)}
         for country in pycountry.countries), key=lambda country: country["code"])})

    @app.get("/v1/countries", response_model=Countries, tags=["dashboard"],
             summary="ISO 3166-1 alpha-2 codes a country filter takes")
    async def country_list():
        return _json(countries)


def _add_operation_routes(app: FastAPI, reads: _Reads, registry: CollectorRegistry) -> None:
    """Health, metrics, and the dashboard's static pages (with / sending a browser there)."""
    store = reads.store
    healthy = orjson.dumps({"status": "ok", "store": store.kind})

    @app.get("/healthz", response_model=Health, responses={503: ERRORS[503]}, tags=["operations"],
             summary="200 when the store answers")
    async def healthz():
        await reads.run(store.latest_minute)
        return _json(healthy)

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics",
             response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
    def metrics():
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    def root(request: Request):
        query = request.url.query
        return RedirectResponse("/dashboard/" + (f"?{query}" if query else ""))

    app.mount("/dashboard", StaticFiles(directory=STATIC, html=True), name="dashboard")


def _openapi_with_our_errors(app: FastAPI) -> dict:
    """The schema with FastAPI's 422 replaced by the 400 {"error"} this API answers."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        for path, operations in schema.get("paths", {}).items():
            for operation in operations.values():
                responses = operation.get("responses", {})
                error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorAnswer"}}}
                if responses.pop("422", None) is not None and "400" not in responses:
                    responses["400"] = {"description": "bad parameters", "content": error}
                for status, meaning in GUARD_ERRORS.items() if path not in UNGUARDED else ():
                    responses.setdefault(status, {"description": meaning, "content": error})
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        app.openapi_schema = schema
    return app.openapi_schema
