"""`spec_click`: a plain reading of SPEC.md's event table, written independently of `transforms.validation`.

The generator's, the parser's and the damaged inputs' tests judge validity by it.
"""

import datetime
import ipaddress
import json
import re

import pycountry

UTC = datetime.timezone.utc
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=UTC)
ONE_MS = datetime.timedelta(milliseconds=1)
FIRST_MS = (datetime.datetime(2000, 1, 1, tzinfo=UTC) - EPOCH) // ONE_MS
END_MS = (datetime.datetime(2100, 1, 1, tzinfo=UTC) - EPOCH) // ONE_MS
ALPHA_2 = {country.alpha_2 for country in pycountry.countries}
ISO_WITH_ZONE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?(Z|[+-]\d\d:\d\d)", re.ASCII)


def _reject_constant(name):
    raise ValueError(f"{name} is not JSON")


def _epoch_ms(value):
    if type(value) is int:
        return value
    if type(value) is not str or not ISO_WITH_ZONE.fullmatch(value):
        return None
    layout = "%Y-%m-%dT%H:%M:%S.%f%z" if "." in value else "%Y-%m-%dT%H:%M:%S%z"
    try:
        return (datetime.datetime.strptime(value, layout) - EPOCH) // ONE_MS
    except ValueError:
        return None


def spec_click(line):
    """The event as SPEC.md's table reads a line (or a typed record), or None when malformed."""
    if isinstance(line, dict):
        record = line
    else:
        try:
            record = json.loads(line.decode("utf-8"), parse_constant=_reject_constant)
            json.dumps(record, ensure_ascii=False).encode("utf-8")  # a lone surrogate escape is not text
        except (UnicodeError, ValueError, RecursionError):
            return None
    if type(record) is not dict:
        return None
    if not all(type(record.get(name)) is str and 1 <= len(record[name]) <= 256 for name in ("event_id", "ad_id")):
        return None
    click_ts = _epoch_ms(record.get("click_ts"))
    if click_ts is None or not FIRST_MS <= click_ts < END_MS:
        return None
    user_id, ip, country = record.get("user_id"), record.get("ip"), record.get("country")
    if any(value is not None and (type(value) is not str or len(value) > 256) for value in (user_id, ip, country)):
        return None
    if ip is not None:
        try:
            ip = str(ipaddress.ip_address(ip))
        except ValueError:
            return None
    if country is not None:
        if len(country) != 2 or not country.isascii() or country.upper() not in ALPHA_2:
            return None
        country = country.upper()
    return {"event_id": record["event_id"], "ad_id": record["ad_id"], "click_ts": click_ts,
            "user_id": user_id, "ip": ip, "country": country}
