"""The risk filter: clicks the fraud rules flag leave the billed counts for their own output, with the rule.

It runs after dedup, so a resend never counts toward a rate, and before the windows. A click is
judged by the block lists first (`blocked_ip`: its ip is in a blocked range; `blocked_user`: its
user_id is listed), then by every rate rule over the clicks the lists let through: of the clicks
one user (or IP) makes on one ad in one minute of event time, ordered by (click_ts, event_id),
each after the K-th is flagged. Each rate rule counts all those clicks, also the ones another rate
rule flags; a click is flagged once, by the first rule that flags it (the lists, then the rates
in the file's order). A click without the rule's field (no user_id, no ip) is not counted by it.

A replay is exact: after the block lists, its batches are shuffled by (ad, minute), so each
shard holds every click of its (user or ip, ad, minute) groups, and ranks them with one sort.
A stream cannot know a click's rank before the minute is over: per rate rule, a GroupByKey on
(user or ip, ad) in one-minute windows releases a minute's clicks once the watermark passes it
(the runner holds the watermark for them, so they reach their windows on time), and a state cell
per key and minute counts them. A click later than that (within the allowed lateness) is ranked
after the ones already judged: the stream flags as many clicks of its group as a replay, but may
flag the late one where the replay flags an earlier one that arrived on time.

A flagged click is counted as `flagged` and `flagged.<rule>` (namespace adclick) and taken out of
`unique`, which so counts the billed clicks: read = unique + duplicates + malformed + skewed +
too_late + flagged.
"""

import functools
import ipaddress
import json
import os
import re
import tomllib
from typing import Any, Iterable, List, NamedTuple, Optional, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.coders import VarIntCoder
from apache_beam.metrics.metric import Metrics
from apache_beam.transforms import trigger
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import FixedWindows, GlobalWindows, TimestampedValue
from apache_beam.utils.timestamp import Duration, Timestamp

from pipelines.config import BLOCKED_IP, BLOCKED_USER, RATE_DIMENSIONS, RateRule, RiskConfig, WindowConfig
from transforms.batches import WindowBatches, by_window, table_of
from transforms.dedup import ShardByEventId, unpacked
from transforms.parse import VALID
from transforms.records import MINUTE_MS, Click, epoch_ms_to_iso, event_id_hashes, minute_start, rows
from transforms.windowing import LATENESS_GRACE_SECONDS

FLAGGED = "flagged"
DEFAULT_SHARDS = 16  # a replay's shuffle by (ad, minute)
RULE_NAME = re.compile(r"[a-z0-9_]{1,64}")


class FlaggedClick(NamedTuple):
    """A click a rule flagged: the rule's name, why, and the click's fields."""
    rule: str
    detail: str
    event_id: str
    ad_id: str
    click_ts: int
    user_id: Optional[str] = None
    ip: Optional[str] = None
    country: Optional[str] = None
    receive_ts: Optional[int] = None


def flagged(rule: str, detail: str, click) -> FlaggedClick:
    """`click`: a Click, or a dict of its fields (a replay's row)."""
    fields = click if isinstance(click, dict) else click._asdict()
    return FlaggedClick._make((rule, detail, *(fields.get(name) for name in Click._fields)))


def rate_detail(rule: RateRule, value: str, ad_id: str, click_ts: int, rank: int) -> str:
    """Why a rate rule flagged a click: `rank` is its 0-based place in its group, in event-time order."""
    return (f"click {rank + 1} of {rule.field} {value} on ad {ad_id} in the minute of "
            f"{epoch_ms_to_iso(minute_start(click_ts))}: more than {rule.max_clicks}")


# The rules file ------------------------------------------------------------------------------------------------

class RiskRulesError(ValueError):
    """A rules file that cannot be used: one line naming the file and the bad key."""


_TOP_KEYS = {"rate", "blocked"}
_RATE_KEYS = {"name", "by", "max_clicks"}
_BLOCKED_KEYS = {"ips", "ip_files", "users", "user_files"}


def _strings(path: str, key: str, value) -> list:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise RiskRulesError(f"{path}: {key}: must be a list of strings")
    return value


def _list_file(path: str, key: str, name: str) -> Iterable[Tuple[str, str]]:
    """(where, entry) of each entry of a list file: one a line, blank lines and `#` comments skipped."""
    listed = name if os.path.isabs(name) else os.path.join(os.path.dirname(os.path.abspath(path)), name)
    try:
        with open(listed, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise RiskRulesError(f"{path}: {key}: cannot read {name}: {getattr(error, 'strerror', None) or error}") \
            from None
    for number, line in enumerate(lines, 1):
        entry = line.split("#", 1)[0].strip()
        if entry:
            yield f"{path}: {key}: {name}:{number}", entry


def _network(where: str, text: str) -> str:
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        raise RiskRulesError(f"{where}: not an IPv4 or IPv6 address or CIDR range: {text!r}") from None


def _rate(path: str, index: int, entry) -> RateRule:
    key = f"rate[{index}]"
    if not isinstance(entry, dict):
        raise RiskRulesError(f"{path}: {key}: must be a table (object) with by and max_clicks")
    unknown = sorted(set(entry) - _RATE_KEYS)
    if unknown:
        raise RiskRulesError(f"{path}: {key}.{unknown[0]}: unknown key (known: {', '.join(sorted(_RATE_KEYS))})")
    by = entry.get("by")
    if by not in RATE_DIMENSIONS:
        raise RiskRulesError(f"{path}: {key}.by: must be one of {', '.join(RATE_DIMENSIONS)}, not {by!r}")
    limit = entry.get("max_clicks")
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise RiskRulesError(f"{path}: {key}.max_clicks: must be an integer >= 1, not {limit!r}")
    name = entry.get("name", f"{by}_rate")
    if not isinstance(name, str) or not RULE_NAME.fullmatch(name) or name in (BLOCKED_IP, BLOCKED_USER):
        raise RiskRulesError(f"{path}: {key}.name: must be 1..64 of a-z, 0-9 and _, other than {BLOCKED_IP} "
                             f"and {BLOCKED_USER}, not {name!r}")
    return RateRule(name, by, limit)


def parse_rules(path: str, document) -> RiskConfig:
    """The rules of a decoded rules file (`path` names it in errors and anchors its list files)."""
    if not isinstance(document, dict):
        raise RiskRulesError(f"{path}: must be a table (object) with rate and/or blocked")
    unknown = sorted(set(document) - _TOP_KEYS)
    if unknown:
        raise RiskRulesError(f"{path}: {unknown[0]}: unknown key (known: {', '.join(sorted(_TOP_KEYS))})")
    rates = document.get("rate", [])
    if not isinstance(rates, list):
        raise RiskRulesError(f"{path}: rate: must be a list of tables ([[rate]] in TOML)")
    rules = tuple(_rate(path, index, entry) for index, entry in enumerate(rates))
    names = [rule.name for rule in rules]
    for index, name in enumerate(names):
        if name in names[:index]:
            raise RiskRulesError(f"{path}: rate[{index}].name: {name!r} names two rules: give each its own name")
    blocked = document.get("blocked", {})
    if not isinstance(blocked, dict):
        raise RiskRulesError(f"{path}: blocked: must be a table (object)")
    unknown = sorted(set(blocked) - _BLOCKED_KEYS)
    if unknown:
        raise RiskRulesError(f"{path}: blocked.{unknown[0]}: unknown key (known: {', '.join(sorted(_BLOCKED_KEYS))})")
    ips = _strings(path, "blocked.ips", blocked.get("ips", []))
    networks = [_network(f"{path}: blocked.ips", text) for text in ips]
    users = list(_strings(path, "blocked.users", blocked.get("users", [])))
    for name in _strings(path, "blocked.ip_files", blocked.get("ip_files", [])):
        networks += [_network(where, text) for where, text in _list_file(path, "blocked.ip_files", name)]
    for name in _strings(path, "blocked.user_files", blocked.get("user_files", [])):
        users += [entry for _, entry in _list_file(path, "blocked.user_files", name)]
    config = RiskConfig(rules, tuple(dict.fromkeys(networks)), frozenset(users))
    if not config.rule_names:
        raise RiskRulesError(f"{path}: no rules: give [[rate]] tables or [blocked] lists")
    return config


def load_rules(path: str) -> RiskConfig:
    """The rules in a TOML file (`.toml`) or a JSON one (any other name)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise RiskRulesError(f"{path}: {error.strerror}") from None
    try:
        document = tomllib.loads(data.decode()) if path.endswith(".toml") else json.loads(data)
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
        raise RiskRulesError(f"{path}: not valid {'TOML' if path.endswith('.toml') else 'JSON'}: {error}") from None
    return parse_rules(path, document)


# Block lists ---------------------------------------------------------------------------------------------------

class _BlockLists:
    """The block lists' verdict on a click, or on each row of a batch. The networks are parsed where
    it is used (a worker), each IP judged once."""

    def __init__(self, config: RiskConfig):
        self._networks_text = config.blocked_networks
        self._users = config.blocked_users

    def setup(self):
        networks = [ipaddress.ip_network(text) for text in self._networks_text]
        self.network_of = functools.lru_cache(maxsize=1 << 16)(functools.partial(_network_of, networks))

    def verdict(self, click) -> Optional[Tuple[str, str]]:
        if click.ip is not None and self._networks_text:
            network = self.network_of(click.ip)
            if network is not None:
                return BLOCKED_IP, f"ip {click.ip} is in the blocked range {network}"
        if click.user_id is not None and click.user_id in self._users:
            return BLOCKED_USER, f"user_id {click.user_id} is blocked"
        return None

    def mask(self, clicks: pa.Table) -> Optional[np.ndarray]:
        """Which rows of a batch the lists flag (None: none)."""
        blocked = np.zeros(len(clicks), dtype=bool)
        if self._networks_text:
            ips = [ip for ip in pc.unique(clicks["ip"]).to_pylist() if ip is not None and self.network_of(ip)]
            if ips:
                blocked |= pc.fill_null(pc.is_in(clicks["ip"], pa.array(ips, pa.string())), False).to_numpy()
        if self._users:
            in_list = pc.is_in(clicks["user_id"], pa.array(sorted(self._users), pa.string()))
            blocked |= pc.fill_null(in_list, False).to_numpy(zero_copy_only=False)
        return blocked if blocked.any() else None


def _network_of(networks, ip: str) -> Optional[str]:
    """The first blocked network holding `ip` (an IPv4-mapped IPv6 address also as its IPv4 one)."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)
    addresses: List[Any] = [address] + ([mapped] if mapped else [])
    for network in networks:
        if any(candidate.version == network.version and candidate in network for candidate in addresses):
            return str(network)
    return None


class _Counts:
    """The counters of flagged clicks: `flagged`, `flagged.<rule>`, and `unique` taken down by as many."""

    def __init__(self, config: RiskConfig):
        self.flagged = Metrics.counter("adclick", "flagged")
        self.unique = Metrics.counter("adclick", "unique")
        self.by_rule = {name: Metrics.counter("adclick", f"flagged.{name}") for name in config.rule_names}

    def add(self, rule: str, count: int = 1):
        self.flagged.inc(count)
        self.unique.dec(count)
        self.by_rule[rule].inc(count)


# Stream: rate rules, one click per element ----------------------------------------------------------------------------

def _with_minute(key_and_clicks, window=beam.DoFn.WindowParam):
    """A minute's pane, keyed by its minute too: the count is kept per key in the global window (Prism
    drops a window's state once the watermark passes its end, allowed lateness or not)."""
    (value, ad_id), clicks = key_and_clicks
    yield (value, ad_id, window.start.micros // 1000), clicks


class _RankInMinuteFn(beam.DoFn):
    """Per (value, ad, minute): ranks each pane's clicks after the ones already judged, and flags
    each from the (K+1)-th on that no earlier rule flagged. Each output keeps its click_ts as timestamp."""

    JUDGED = ReadModifyWriteStateSpec("judged", VarIntCoder())
    FORGET = TimerSpec("forget", TimeDomain.WATERMARK)

    def __init__(self, rule: RateRule, lateness_seconds: int):
        self._rule = rule
        self._lateness_ms = lateness_seconds * 1000

    def process(self, key_and_clicks, judged=beam.DoFn.StateParam(JUDGED), forget=beam.DoFn.TimerParam(FORGET)):
        (value, ad_id, minute), clicks = key_and_clicks
        before = judged.read() or 0
        ordered = sorted(clicks, key=lambda click_verdict: (click_verdict[0].click_ts, click_verdict[0].event_id))
        for rank, (click, verdict) in enumerate(ordered, before):
            if verdict is None and rank >= self._rule.max_clicks:
                verdict = self._rule.name, rate_detail(self._rule, value, ad_id, click.click_ts, rank)
            yield TimestampedValue((click, verdict), click.click_ts / 1000)
        judged.write(before + len(ordered))
        forget.set(Timestamp(micros=(minute + MINUTE_MS + self._lateness_ms) * 1000))

    @on_timer(FORGET)
    def forget_minute(self, judged=beam.DoFn.StateParam(JUDGED)):
        judged.clear()


class _RateInStream(beam.PTransform):
    """(click, verdict) -> (click, verdict), the rule's verdict added where none was."""

    def __init__(self, rule: RateRule, lateness_seconds: int):
        super().__init__()
        self._rule = rule
        self._lateness_seconds = lateness_seconds

    def expand(self, judged):
        field = self._rule.field

        def keyed(click_verdict):
            value = getattr(click_verdict[0], field)
            if value is None:
                return beam.pvalue.TaggedOutput("unranked", click_verdict)
            return (value, click_verdict[0].ad_id), click_verdict

        split = judged | "Key" >> beam.Map(keyed).with_output_types(Tuple[Tuple[str, str], Any]).with_outputs(
            "unranked", main="keyed")
        ranked = (
            split.keyed
            | "Minutes" >> beam.WindowInto(
                FixedWindows(MINUTE_MS // 1000), trigger=trigger.AfterWatermark(late=trigger.AfterCount(1)),
                accumulation_mode=trigger.AccumulationMode.DISCARDING,
                allowed_lateness=Duration(seconds=self._lateness_seconds))
            | "GatherMinute" >> beam.GroupByKey()
            | "KeyByMinute" >> beam.ParDo(_with_minute)
            | "OutOfMinutes" >> beam.WindowInto(GlobalWindows())
            | "Rank" >> beam.ParDo(_RankInMinuteFn(self._rule, self._lateness_seconds))
            .with_input_types(Tuple[Tuple[str, str, int], Any]))
        return (ranked, split.unranked) | "Judged" >> beam.Flatten()


class _SplitVerdictsFn(beam.DoFn):
    def __init__(self, config: RiskConfig):
        self._config = config

    def setup(self):
        self._counts = _Counts(self._config)

    def process(self, click_verdict):
        click, verdict = click_verdict
        if verdict is None:
            yield click
            return
        self._counts.add(verdict[0])
        yield beam.pvalue.TaggedOutput(FLAGGED, flagged(*verdict, click))


class _GatherBatchesFn(beam.DoFn):
    """A bundle's judged Clicks -> batches again, one per window of `window_ms` (transforms/batches.py)."""

    def __init__(self, window_ms: int):
        self._window_ms = window_ms

    def start_bundle(self):
        self._clicks = []

    def process(self, click: Click):
        self._clicks.append(click)

    def finish_bundle(self):
        batches = WindowBatches(self._window_ms)
        for _, rows_of_window in by_window(table_of(self._clicks), self._window_ms):
            batches.add(rows_of_window)
        self._clicks = []
        yield from batches.windowed_values()


def _clicks_to_judge(clicks: pa.Table):
    """A batch -> (click, no verdict yet) each, stamped with its click_ts: what the rate rules rank."""
    return [TimestampedValue((click, None), click.click_ts / 1000) for click in rows(clicks, Click)]


class _RatesInStream(beam.PTransform):
    """Batches of clicks -> the batches of those the rate rules let through (main) and FlaggedClick
    (`flagged`), the clicks judged one per element."""

    def __init__(self, config: RiskConfig, lateness_seconds: int, window_ms: int):
        super().__init__()
        self._config = config
        self._lateness_seconds = lateness_seconds
        self._window_ms = window_ms

    def expand(self, clicks):
        judged = clicks | "Clicks" >> beam.FlatMap(_clicks_to_judge)
        for rule in self._config.rates:
            judged = judged | f"Rate_{rule.name}" >> _RateInStream(rule, self._lateness_seconds)
        verdicts = judged | "SplitVerdicts" >> beam.ParDo(_SplitVerdictsFn(self._config)).with_outputs(
            FLAGGED, main=VALID)
        batches = verdicts[VALID] | "Batches" >> beam.ParDo(_GatherBatchesFn(self._window_ms))
        return {VALID: batches, FLAGGED: verdicts[FLAGGED]}


# Arrow batches (both) and a replay's rate rules -----------------------------------------------------------------------

class _BlockBatchFn(beam.DoFn):
    """A batch -> the rows the lists let through (main) and a FlaggedClick per other row (`flagged`)."""

    def __init__(self, config: RiskConfig):
        self._config = config
        self._lists = _BlockLists(config)

    def setup(self):
        self._lists.setup()
        self._counts = _Counts(self._config)

    def process(self, clicks: pa.Table):
        blocked = self._lists.mask(clicks)
        if blocked is None:
            yield clicks
            return
        yield clicks.filter(~blocked)
        for row in clicks.filter(blocked).to_pylist():
            verdict = self._lists.verdict(Click(**{name: row[name] for name in Click._fields}))
            assert verdict is not None  # the mask's rows are the ones the lists flag
            rule, detail = verdict
            self._counts.add(rule)
            yield beam.pvalue.TaggedOutput(FLAGGED, flagged(rule, detail, row))


def _codes(column) -> np.ndarray:
    """Integer codes of a string column's values (-1 for null), equal values equal codes."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return pc.fill_null(pc.dictionary_encode(column).indices, -1).to_numpy(zero_copy_only=False)


class _ShardByAdMinute(ShardByEventId):
    """A batch -> (shard, packed rows) by (ad_id, minute): a shard holds every click of its groups. With
    `spill_dir`, as the dedup's shuffle, the batches wait in files there."""

    def __init__(self, shards: int, spill_dir: Optional[str]):
        super().__init__(shards, None, spill_dir)

    def shard_of_rows(self, clicks: pa.Table) -> np.ndarray:
        minutes = (clicks["click_ts"].to_numpy() // MINUTE_MS).astype(np.uint64)
        return (event_id_hashes(clicks["ad_id"]) + minutes) % np.uint64(self._shards)


def dense_codes(*keys: np.ndarray) -> np.ndarray:
    """One code per distinct combination of the keys (integer arrays, each >= 0), 0..distinct-1."""
    code = np.zeros(len(keys[0]), dtype=np.int64)
    for key in keys:
        if len(key):  # both below the row count, so the product cannot overflow
            code = np.unique(code * (int(key.max()) + 1) + key, return_inverse=True)[1].reshape(-1)
    return code


def ranks_in_groups(groups: np.ndarray, order_keys) -> np.ndarray:
    """Each row's 0-based place among the rows of its group, ordered by `order_keys` (numpy arrays,
    most significant first)."""
    order = np.lexsort(tuple(reversed((groups,) + tuple(order_keys))))
    count = len(order)
    starts = np.ones(count, dtype=bool)
    ordered = groups[order]
    starts[1:] = ordered[1:] != ordered[:-1]
    positions = np.arange(count)
    ranks = np.empty(count, dtype=np.int64)
    ranks[order] = positions - np.maximum.accumulate(np.where(starts, positions, 0))
    return ranks


class _JudgeShardFn(beam.DoFn):
    """All clicks of a shard's (ad, minute) groups -> the ones no rate rule flags (main), and a FlaggedClick
    per other one (`flagged`). Only the rows of groups larger than a rule's K are ranked."""

    def __init__(self, config: RiskConfig):
        self._config = config

    def setup(self):
        self._counts = _Counts(self._config)

    def process(self, shard_and_parts):
        _, parts = shard_and_parts
        clicks = pa.concat_tables(unpacked(parts)).combine_chunks()
        click_ts = clicks["click_ts"].to_numpy()
        minutes = np.unique(click_ts // MINUTE_MS, return_inverse=True)[1].reshape(-1)
        ads_in_minutes = dense_codes(_codes(clicks["ad_id"]), minutes)
        rule_of = np.full(len(clicks), -1)
        rank_of = np.zeros(len(clicks), dtype=np.int64)
        for index, rule in enumerate(self._config.rates):
            values = _codes(clicks[rule.field])
            groups = dense_codes(values + 1, ads_in_minutes)
            rows = np.flatnonzero((np.bincount(groups)[groups] > rule.max_clicks) & (values >= 0))
            if not len(rows):
                continue
            # Event-time order within a group: click_ts, then event_id (its place in a sort of these rows' ids).
            id_order = np.empty(len(rows), dtype=np.int64)
            id_order[pc.sort_indices(clicks["event_id"].take(rows)).to_numpy()] = np.arange(len(rows))
            ranks = ranks_in_groups(groups[rows], (click_ts[rows], id_order))
            hit = (ranks >= rule.max_clicks) & (rule_of[rows] < 0)
            rule_of[rows[hit]], rank_of[rows[hit]] = index, ranks[hit]
        flagged_rows = np.flatnonzero(rule_of >= 0)
        if not len(flagged_rows):
            yield clicks
            return
        yield clicks.filter(rule_of < 0)
        rules = self._config.rates
        for row, rule_index, rank in zip(clicks.take(flagged_rows).to_pylist(), rule_of[flagged_rows].tolist(),
                                         rank_of[flagged_rows].tolist()):
            rule = rules[rule_index]
            detail = rate_detail(rule, row[rule.field], row["ad_id"], row["click_ts"], rank)
            yield beam.pvalue.TaggedOutput(FLAGGED, flagged(rule.name, detail, row))
        for rule_index, count in zip(*np.unique(rule_of[flagged_rows], return_counts=True)):
            self._counts.add(rules[rule_index].name, int(count))


class RiskFilter(beam.PTransform):
    """Unique clicks -> the billed ones (main output `valid`) and FlaggedClick (output `flagged`).

    Bounded input (Arrow batches with every Click column): exact, rate rules over a shuffle by
    (ad, minute) into `shards`, waiting in files in `spill_dir` if given (as the dedup's).
    Unbounded input (batches of one window each, transforms/batches.py): the block lists judge the
    batches; for the rate rules each click is an element, stamped with its click_ts, and a
    GroupByKey per rule releases each minute once the watermark passes it; `allowed_lateness_seconds`
    is the DAG's, for which a minute's count is kept. What they let through leaves as batches of one
    window of `window_seconds` each.
    """

    def __init__(self, config: RiskConfig, allowed_lateness_seconds: int, shards: int = DEFAULT_SHARDS,
                 spill_dir: Optional[str] = None, window_seconds: int = WindowConfig.size_seconds):
        super().__init__()
        self._config = config
        self._window_ms = window_seconds * 1000
        self._spill_dir = spill_dir
        self._lateness_seconds = allowed_lateness_seconds + LATENESS_GRACE_SECONDS
        self._shards = shards

    def expand(self, clicks):
        config = self._config
        listed = clicks | "BlockLists" >> beam.ParDo(_BlockBatchFn(config)).with_outputs(FLAGGED, main=VALID)
        if not config.rates:
            return {VALID: listed[VALID], FLAGGED: listed[FLAGGED]}
        if clicks.is_bounded:
            rated = (listed[VALID]
                     | "ShardByAdMinute" >> beam.ParDo(_ShardByAdMinute(self._shards, self._spill_dir))
                     | "GatherShards" >> beam.GroupByKey()
                     | "Rates" >> beam.ParDo(_JudgeShardFn(config)).with_outputs(FLAGGED, main=VALID))
        else:
            rated = listed[VALID] | "Rates" >> _RatesInStream(config, self._lateness_seconds, self._window_ms)
        flagged_clicks = (listed[FLAGGED], rated[FLAGGED]) | "AllFlagged" >> beam.Flatten()
        return {VALID: rated[VALID], FLAGGED: flagged_clicks}
