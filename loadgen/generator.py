"""Seeded, reproducible click logs that come with the truth a correct pipeline must count.

A log mixes what a real click stream throws at the pipeline: Zipf-popular ads, a
weighted country mix, out-of-order and late emission, byte-identical resends and
malformed lines of many kinds. Generation (`generate`) is kept apart from writing
(`write_log`), so the same lines can be published to a stream in emission order.

The SPEC rules are restated here rather than imported from `transforms`, so the
generator stays an independent oracle for the code it tests.
"""

import dataclasses
import datetime
import functools
import gzip as gzip_module
import ipaddress
import pathlib
from typing import Iterator, List, Optional, Tuple

import fastavro
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

MINUTE_MS = 60_000
CLICK_TS_MIN = 946_684_800_000  # 2000-01-01T00:00:00Z, valid
CLICK_TS_MAX = 4_102_444_800_000  # 2100-01-01T00:00:00Z, the first invalid
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
ONE_MS = datetime.timedelta(milliseconds=1)
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1

FIELDS = ("event_id", "ad_id", "click_ts", "user_id", "ip", "country")
OPTIONAL_FIELDS = ("user_id", "ip", "country")
FORMATS = ("jsonl", "avro", "parquet")

# Roughly the shape of a global ad platform's traffic: US heavy, a long tail.
COUNTRY_MIX = (
    ("US", 30), ("IN", 10), ("BR", 7), ("GB", 6), ("DE", 6), ("JP", 5), ("FR", 5), ("CA", 4),
    ("MX", 4), ("ID", 4), ("ES", 3), ("IT", 3), ("KR", 3), ("AU", 3), ("NL", 2), ("PL", 2),
)
# Index 0 is written as 'Z', the rest as numeric offsets.
ISO_ZONES = (
    datetime.timezone.utc,
    datetime.timezone(datetime.timedelta(hours=2)),
    datetime.timezone(datetime.timedelta(hours=-5)),
    datetime.timezone(datetime.timedelta(hours=5, minutes=30)),
)
# None of these is an ISO 3166-1 alpha-2 code in any letter case.
BAD_COUNTRIES = ("USA", "XX", "UK", "ZZ", "EU", "U1", "", "United States")
BAD_IPS = ("999.1.1.1", "1.2.3", "256.0.0.1", "not-an-ip", "2001:db8::g", "1.2.3.4.5", "")

AVRO_SCHEMA = fastavro.parse_schema({
    "type": "record",
    "name": "RawClick",
    "namespace": "adclick",
    "fields": [
        {"name": name, "type": ["null", "long", "string"] if name == "click_ts" else ["null", "string"],
         "default": None}
        for name in FIELDS
    ],
})
PARQUET_SCHEMA = pa.schema([(name, pa.int64() if name == "click_ts" else pa.string()) for name in FIELDS])
# Avro files embed a sync marker; a fixed one keeps the files byte-reproducible.
AVRO_SYNC_MARKER = b"adclick-loadgen\x00"


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
    """Everything that shapes a log; the same config always gives the same bytes.

    Rates are shares of `events`. Times are event time (click_ts) in epoch ms.
    """
    events: int = 10_000  # unique valid clicks
    seed: int = 7
    ads: int = 1_000
    zipf_exponent: float = 1.1  # p(ad of rank r) ∝ 1 / r ** zipf_exponent
    hot_ad_share: Optional[float] = None  # the top ad's share of clicks; when set, it fixes the exponent
    users: int = 5_000
    start_ms: int = 1_767_225_600_000  # 2026-01-01T00:00:00Z
    minutes: int = 10  # event times fall in [start_ms, start_ms + minutes)
    disorder_seconds: float = 5.0  # emission time = click_ts + jitter up to this
    late_rate: float = 0.01  # emitted disorder_seconds .. late_max_seconds after their click_ts
    late_max_seconds: float = 300.0  # late events are emitted this long after click_ts at most
    duplicate_rate: float = 0.05  # resends: byte-identical copies emitted after the original
    resend_max_seconds: float = 60.0  # how long after the original a resend is emitted at most
    malformed_rate: float = 0.002  # extra lines that break a SPEC rule, of many kinds
    iso_timestamp_rate: float = 0.1  # click_ts written as ISO-8601 with a zone instead of epoch ms
    null_optional_rate: float = 0.05  # events with some of user_id / ip / country null or absent
    ipv6_rate: float = 0.1  # share of users on IPv6
    countries: Tuple[Tuple[str, float], ...] = COUNTRY_MIX  # (alpha-2 code, weight)

    def __post_init__(self):
        rates = ("late_rate", "duplicate_rate", "malformed_rate", "iso_timestamp_rate",
                 "null_optional_rate", "ipv6_rate")
        for name in rates:
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1]")
        if min(self.events, self.ads, self.users, self.minutes) < 1:
            raise ValueError("events, ads, users and minutes must be at least 1")
        if not CLICK_TS_MIN <= self.start_ms <= CLICK_TS_MAX - self.minutes * MINUTE_MS:
            raise ValueError("event times must stay within 2000-01-01 .. 2100-01-01 UTC")
        if not 0 <= self.disorder_seconds <= self.late_max_seconds:
            raise ValueError("need 0 <= disorder_seconds <= late_max_seconds")
        if self.resend_max_seconds < 0 or not self.countries:
            raise ValueError("resend_max_seconds must be >= 0 and countries non-empty")
        if self.hot_ad_share is not None:
            zipf_exponent_for_top_share(self.ads, self.hot_ad_share)  # checks the share (and caches the exponent)

    @property
    def effective_zipf_exponent(self) -> float:
        """The exponent the ads are drawn with: solved from hot_ad_share when that is set."""
        if self.hot_ad_share is None:
            return self.zipf_exponent
        return zipf_exponent_for_top_share(self.ads, self.hot_ad_share)


@functools.lru_cache(maxsize=None)
def zipf_exponent_for_top_share(ads: int, share: float) -> float:
    """The s for which the top of `ads` Zipf-ranked ads gets `share` of the clicks.

    The top ad's share, 1 / sum(r ** -s for r in 1..ads), grows from 1/ads at s = 0
    towards 1, so bisection finds s. Hot keys are easier to ask for by share ("30% of
    clicks on one ad") than by exponent, whose effect depends on the number of ads.
    """
    if not 1 / ads <= share < 1:
        raise ValueError(f"hot_ad_share must be in [1/ads, 1) = [{1 / ads:g}, 1)")
    ranks = np.arange(1, ads + 1, dtype=float)

    def top_share(s):
        return 1 / np.sum(ranks ** -s)

    low, high = 0.0, 1.0
    while top_share(high) < share:
        low, high = high, 2 * high
    for _ in range(100):
        middle = (low + high) / 2
        low, high = (middle, high) if top_share(middle) < share else (low, middle)
    return (low + high) / 2


@dataclasses.dataclass(frozen=True)
class GeneratedLog:
    """A log in emission order and its ground truth.

    `truth` holds each unique valid event once, in order of first emission, as a
    correct parser reads it: click_ts in epoch ms, absent optionals as None.
    `event_times[i]` is the click_ts of `lines[i]`, None for a malformed line.
    """
    lines: List[bytes]
    event_times: List[Optional[int]]
    truth: List[dict]
    duplicates: int
    malformed_lines: List[bytes]

    @property
    def read(self) -> int:
        return len(self.lines)

    @property
    def unique(self) -> int:
        return len(self.truth)

    @property
    def malformed(self) -> int:
        return len(self.malformed_lines)

    def emissions(self) -> Iterator[Tuple[bytes, Optional[int]]]:
        """(line, event time in ms or None) in emission order, for publishing to a stream."""
        return zip(self.lines, self.event_times)


def generate(config: GeneratorConfig) -> GeneratedLog:
    """Draw the whole log in memory: emission order needs every event's emission time."""
    rng = np.random.default_rng(config.seed)
    n = config.events
    ad_names = _ad_names(config, rng)
    users = _users(config, rng)
    click_ts, emit_ms, lines, truth = _clicks(config, rng, ad_names, users)

    resends = round(config.duplicate_rate * n)
    originals = rng.integers(0, n, size=resends)
    resend_emit_ms = emit_ms[originals] + rng.uniform(1, max(1.0, config.resend_max_seconds * 1000), size=resends)

    malformed = round(config.malformed_rate * n)
    malformed_lines = [_malformed_line(config, rng, ad_names, users) for _ in range(malformed)]
    malformed_emit_ms = config.start_ms + rng.uniform(0, config.minutes * MINUTE_MS, size=malformed)

    all_lines = lines + [lines[i] for i in originals] + malformed_lines
    all_times = click_ts.tolist() + click_ts[originals].tolist() + [None] * malformed
    order = np.argsort(np.concatenate([emit_ms, resend_emit_ms, malformed_emit_ms]), kind="stable").tolist()
    return GeneratedLog(
        lines=[all_lines[i] for i in order],
        event_times=[all_times[i] for i in order],
        truth=[truth[i] for i in order if i < n],
        duplicates=resends,
        malformed_lines=[all_lines[i] for i in order if i >= n + resends],
    )


def _clicks(config: GeneratorConfig, rng, ad_names, users) -> tuple:
    """(click_ts, emission times, lines, truth) of the log's unique clicks, drawn in a fixed order (a seed
    makes the same log)."""
    n = config.events
    click_ts = config.start_ms + rng.integers(0, config.minutes * MINUTE_MS, size=n)
    event_ids = _event_ids(rng, n)
    ad_ranks = _zipf_ranks(config, rng, n)
    user_index = rng.integers(0, config.users, size=n)
    iso_zone = np.where(rng.random(n) < config.iso_timestamp_rate, rng.integers(0, len(ISO_ZONES), size=n), -1)
    # Bit k set: optional field k is null (or absent, by the coin in `absent`).
    null_mask = np.where(rng.random(n) < config.null_optional_rate, rng.integers(1, 8, size=n), 0)
    absent = rng.random(n) < 0.5

    disorder_ms = config.disorder_seconds * 1000
    late = rng.random(n) < config.late_rate
    delay = np.where(late, rng.uniform(disorder_ms, config.late_max_seconds * 1000, size=n),
                     rng.uniform(0, disorder_ms, size=n))
    # Plain lists: indexing numpy arrays one element at a time is several times slower.
    rows = zip(event_ids, ad_ranks.tolist(), click_ts.tolist(), user_index.tolist(), null_mask.tolist(),
               absent.tolist(), iso_zone.tolist())
    lines, truth = _lines_and_truth(rows, ad_names, users)
    return click_ts, click_ts + delay, lines, truth


def _lines_and_truth(rows, ad_names, users) -> tuple:
    """Each click as its JSON line (optional fields null or absent, click_ts ISO-8601 in some zone) and
    as the truth records it (epoch ms, nulls)."""
    lines, truth = [], []
    for event_id, rank, ts, user, nulls, drop, zone in rows:
        user_id, ip, country = users[user]
        event = {"event_id": event_id, "ad_id": ad_names[rank], "click_ts": ts,
                 "user_id": user_id, "ip": ip, "country": country}
        truth.append(dict(event))
        for bit, name in enumerate(OPTIONAL_FIELDS):
            if nulls >> bit & 1:
                truth[-1][name] = None
                if drop:
                    del event[name]
                else:
                    event[name] = None
        if zone >= 0:
            event["click_ts"] = _iso(ts, zone)
        lines.append(_dumps(event))
    return lines, truth


def write_log(config: GeneratorConfig, out_dir, fmt: str = "jsonl", files: int = 1, gzip: bool = False) -> dict:
    """Write a generated log as `clicks-NNNNN.<fmt>` files plus `truth.jsonl` and `manifest.json`.

    Lines are split over `files` in emission order, like rotated logs. Avro and
    Parquet keep the records their schema can hold (see `_typed_record`); the
    manifest counts what was written, so read = unique + duplicates + malformed.
    Stale `clicks-*` files from an earlier log would be read with this one, so
    they are refused rather than silently mixed in.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}")
    if gzip and fmt != "jsonl":
        raise ValueError("gzip applies to jsonl only")
    if files < 1:
        raise ValueError("files must be at least 1")
    out = pathlib.Path(out_dir)
    suffix = ".jsonl.gz" if gzip else f".{fmt}"
    names = [f"clicks-{i:05d}{suffix}" for i in range(files)]
    stale = sorted(p.name for p in out.glob("clicks-*") if p.name not in names)
    if stale:
        raise FileExistsError(f"{out} holds files of another log: {', '.join(stale)}")
    out.mkdir(parents=True, exist_ok=True)

    log = generate(config)
    if fmt == "jsonl":
        records = log.lines
    else:
        records = [r for r in (_typed_record(line, fmt) for line in log.lines) if r is not None]
    write = {"jsonl": lambda path, chunk: _write_jsonl(path, chunk, gzip),
             "avro": _write_avro, "parquet": _write_parquet}[fmt]
    for k, name in enumerate(names):
        write(out / name, records[len(records) * k // files:len(records) * (k + 1) // files])

    manifest = {
        "format": fmt,
        "gzip": gzip,
        "files": names,
        "config": {**dataclasses.asdict(config), "countries": [list(pair) for pair in config.countries]},
        "read": len(records),
        "unique": log.unique,
        "duplicates": log.duplicates,
        "malformed": len(records) - log.unique - log.duplicates,
    }
    with open(out / "truth.jsonl", "wb") as truth:
        for event in log.truth:
            truth.write(orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE))
    (out / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n")
    return manifest


def _ad_names(config: GeneratorConfig, rng) -> List[str]:
    """Ad ids by popularity rank; shuffled so that an id does not give its rank away."""
    width = max(6, len(str(config.ads - 1)))
    return [f"ad-{k:0{width}d}" for k in rng.permutation(config.ads)]


def _zipf_ranks(config: GeneratorConfig, rng, n: int) -> np.ndarray:
    """0-based ad ranks drawn with p ∝ 1/rank^s over a finite set (numpy's zipf is unbounded)."""
    cdf = np.cumsum(1.0 / np.arange(1, config.ads + 1) ** config.effective_zipf_exponent)
    ranks = np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right")
    return np.minimum(ranks, config.ads - 1)


def _users(config: GeneratorConfig, rng) -> List[Tuple[str, str, str]]:
    """(user_id, ip, country) per user: a user clicks from one place, as most do."""
    codes = [code for code, _ in config.countries]
    weights = np.array([weight for _, weight in config.countries], dtype=float)
    country = rng.choice(len(codes), size=config.users, p=weights / weights.sum())
    ipv6 = rng.random(config.users) < config.ipv6_rate
    ipv4 = rng.integers(0x0100_0000, 0xE000_0000, size=config.users)  # 1.0.0.0 .. 223.255.255.255
    v6_bytes = rng.bytes(16 * config.users)
    users = []
    for u in range(config.users):
        if ipv6[u]:
            raw = bytearray(v6_bytes[16 * u:16 * u + 16])
            raw[0] = 0x20 | raw[0] & 0x1F  # global unicast 2000::/3
            ip = str(ipaddress.IPv6Address(bytes(raw)))
        else:
            ip = str(ipaddress.IPv4Address(int(ipv4[u])))
        users.append((f"user-{u:07d}", ip, codes[country[u]]))
    return users


def _event_ids(rng, n: int) -> List[str]:
    """UUID4-shaped ids from the seeded generator (uuid.uuid4 would not be reproducible)."""
    digits = rng.bytes(16 * n).hex()
    ids = []
    for i in range(0, 32 * n, 32):
        h = digits[i:i + 32]
        ids.append(f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}")
    return ids


def _iso(epoch_ms: int, zone: int) -> str:
    text = (EPOCH + epoch_ms * ONE_MS).astimezone(ISO_ZONES[zone]).isoformat(timespec="milliseconds")
    return text[:-6] + "Z" if zone == 0 else text


def _dumps(value) -> bytes:
    """orjson's result keeps a 4 KiB buffer; a copy holds only the line, which counts at a million lines."""
    return memoryview(orjson.dumps(value)).tobytes()


def _with_raw_click_ts(event: dict, literal: bytes) -> bytes:
    """The event with click_ts written as a raw JSON literal that orjson cannot produce."""
    rest = {k: v for k, v in event.items() if k != "click_ts"}
    return orjson.dumps(rest)[:-1] + b',"click_ts":' + literal + b"}"


def _without(event: dict, field: str) -> bytes:
    return _dumps({k: v for k, v in event.items() if k != field})


def _replace(event: dict, **fields) -> bytes:
    return _dumps({**event, **fields})


def _not_utf8(event: dict) -> bytes:
    return _replace(event, ad_id=event["ad_id"] + "-caf\u00e9").replace("\u00e9".encode(), b"\xe9")


def _deeply_nested(event: dict) -> bytes:
    depth = 2_000  # beyond orjson's limit of 1024 and Python's default recursion limit
    return _replace(event, ad_id=None).replace(b'"ad_id":null', b'"ad_id":' + b'{"a":' * depth + b"1" + b"}" * depth)


def _truncated(event: dict, rng) -> bytes:
    """A proper prefix of a JSON object is never valid JSON: its closing brace is missing."""
    line = orjson.dumps(event)
    return line[:int(rng.integers(1, len(line) - 1))]


# Every kind breaks at least one SPEC rule and never holds a newline or carriage return.
MALFORMED_KINDS = {
    "not_json": lambda e, rng: f"click event_id={e['event_id']} ad_id={e['ad_id']}".encode(),
    "truncated_json": _truncated,
    "json_array": lambda e, rng: _dumps([e]),
    "json_null": lambda e, rng: b"null",
    "json_number": lambda e, rng: str(e["click_ts"]).encode(),
    "json_string": lambda e, rng: _dumps(e["event_id"]),
    "missing_event_id": lambda e, rng: _without(e, "event_id"),
    "missing_ad_id": lambda e, rng: _without(e, "ad_id"),
    "missing_click_ts": lambda e, rng: _without(e, "click_ts"),
    "null_event_id": lambda e, rng: _replace(e, event_id=None),
    "numeric_event_id": lambda e, rng: _replace(e, event_id=int(rng.integers(1, 1 << 40))),
    "event_id_300_chars": lambda e, rng: _replace(e, event_id=e["event_id"].ljust(300, "x")),
    "empty_ad_id": lambda e, rng: _replace(e, ad_id=""),
    "ad_id_object": lambda e, rng: _replace(e, ad_id={"id": e["ad_id"]}),
    "float_click_ts": lambda e, rng: _replace(e, click_ts=e["click_ts"] + 0.5),
    "bool_click_ts": lambda e, rng: _replace(e, click_ts=True),
    "click_ts_1999": lambda e, rng: _replace(e, click_ts=CLICK_TS_MIN - int(rng.integers(1, 10 ** 10))),
    "click_ts_2100": lambda e, rng: _replace(e, click_ts=CLICK_TS_MAX + int(rng.integers(0, 10 ** 10))),
    "click_ts_negative": lambda e, rng: _replace(e, click_ts=-e["click_ts"]),
    "click_ts_huge_int": lambda e, rng: _with_raw_click_ts(e, str(2 ** 70).encode()),
    "iso_1999": lambda e, rng: _replace(e, click_ts="1999-12-31T23:59:59.999Z"),
    "iso_without_zone": lambda e, rng: _replace(e, click_ts=_iso(e["click_ts"], 0)[:-1]),
    "iso_garbage": lambda e, rng: _replace(e, click_ts="2026-13-45T99:00Z"),
    "bad_ip": lambda e, rng: _replace(e, ip=BAD_IPS[rng.integers(len(BAD_IPS))]),
    "bad_country": lambda e, rng: _replace(e, country=BAD_COUNTRIES[rng.integers(len(BAD_COUNTRIES))]),
    "user_id_not_string": lambda e, rng: _replace(e, user_id=[e["user_id"]]),
    "not_utf8": lambda e, rng: _not_utf8(e),
    "deeply_nested": lambda e, rng: _deeply_nested(e),
    "nan_literal": lambda e, rng: _with_raw_click_ts(e, b"NaN"),
    "infinity_literal": lambda e, rng: _with_raw_click_ts(e, b"1e400"),
}


def _malformed_line(config: GeneratorConfig, rng, ad_names: List[str], users) -> bytes:
    """A broken record built from a plausible click, so it looks like real traffic gone wrong."""
    user_id, ip, country = users[rng.integers(config.users)]
    event = {
        "event_id": _event_ids(rng, 1)[0],
        "ad_id": ad_names[_zipf_ranks(config, rng, 1)[0]],
        "click_ts": config.start_ms + int(rng.integers(config.minutes * MINUTE_MS)),
        "user_id": user_id,
        "ip": ip,
        "country": country,
    }
    kinds = list(MALFORMED_KINDS.values())
    return kinds[rng.integers(len(kinds))](event, rng)


def _iso_to_ms(text: str) -> Optional[int]:
    try:
        moment = datetime.datetime.fromisoformat(text)
        return None if moment.tzinfo is None else (moment - EPOCH) // ONE_MS
    except (ValueError, OverflowError):
        return None


def _typed_record(line: bytes, fmt: str) -> Optional[dict]:
    """The line as an Avro/Parquet record, or None where the schema cannot hold it.

    Not a JSON object, a field of another type, or (Parquet) a click_ts string
    that is not ISO-8601 with a zone cannot be written; absent becomes null.
    """
    try:
        decoded = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(decoded, dict):
        return None
    record = {name: decoded.get(name) for name in FIELDS}
    if any(record[name] is not None and not isinstance(record[name], str) for name in FIELDS if name != "click_ts"):
        return None
    click_ts = record["click_ts"]
    if isinstance(click_ts, str) and fmt == "parquet":
        record["click_ts"] = click_ts = _iso_to_ms(click_ts)
        if click_ts is None:
            return None
    if click_ts is None or isinstance(click_ts, str):
        return record
    if isinstance(click_ts, int) and not isinstance(click_ts, bool) and INT64_MIN <= click_ts <= INT64_MAX:
        return record
    return None


def _write_jsonl(path: pathlib.Path, lines: List[bytes], gzip: bool):
    data = b"\n".join(lines) + b"\n" if lines else b""
    if gzip:
        # mtime=0 keeps the bytes reproducible; level 6 is gzip's own default, 9 is much slower.
        with open(path, "wb") as raw, gzip_module.GzipFile("", "wb", 6, raw, mtime=0) as out:
            out.write(data)
    else:
        path.write_bytes(data)


def _write_avro(path: pathlib.Path, records: List[dict]):
    with open(path, "wb") as out:
        fastavro.writer(out, AVRO_SCHEMA, records, codec="deflate", sync_marker=AVRO_SYNC_MARKER)


def _write_parquet(path: pathlib.Path, records: List[dict]):
    pq.write_table(pa.Table.from_pylist(records, schema=PARQUET_SCHEMA), path)

