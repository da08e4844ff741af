"""The risk filter's answers worked out in plain Python (no adclick code): which clicks each rule flags."""

import collections
import ipaddress
import random

MINUTE_MS = 60_000


def verdicts(clicks, rates=(), networks=(), users=()) -> dict:
    """{event_id: rule} of the flagged clicks (dicts with the Click fields), by the README's rules:
    the block lists first (blocked_ip, then blocked_user), then each rate rule (name, field, K) in
    order over the clicks the lists let through, each counting all of them; a click is flagged by
    the first rule that flags it."""
    nets = [ipaddress.ip_network(text, strict=False) for text in networks]
    flagged, listed_out = {}, []
    for click in clicks:
        ip = click.get("ip")
        if ip is not None and any(ipaddress.ip_address(ip) in net for net in nets
                                  if ipaddress.ip_address(ip).version == net.version):
            flagged[click["event_id"]] = "blocked_ip"
        elif click.get("user_id") is not None and click["user_id"] in users:
            flagged[click["event_id"]] = "blocked_user"
        else:
            listed_out.append(click)
    for name, field, limit in rates:
        groups = collections.defaultdict(list)
        for click in listed_out:
            if click.get(field) is not None:
                groups[(click[field], click["ad_id"], click["click_ts"] // MINUTE_MS)].append(click)
        for group in groups.values():
            for click in sorted(group, key=lambda c: (c["click_ts"], c["event_id"]))[limit:]:
                flagged.setdefault(click["event_id"], name)
    return flagged


def abusive_clicks(t0: int, seed: int = 7, events: int = 400) -> list:
    """Clicks (dicts) over three minutes from a few users and IPs on a few ads, with bursts: one user
    hammering one ad, one IP shared by many users, clicks without user or ip, equal click_ts."""
    rng = random.Random(seed)
    users = [f"u{i}" for i in range(6)] + [None]
    ips = ["10.0.0.1", "10.0.0.2", "192.0.2.9", "2001:db8::1", "2001:db8:1::5", "198.51.100.7", None]
    clicks = []
    for i in range(events):
        second = rng.choice([rng.uniform(0, 180), rng.uniform(60, 70)])  # a crowd in the second minute
        clicks.append({"event_id": f"e{i:04d}", "ad_id": rng.choice(["ad-a", "ad-b", "ad-c"]),
                       "click_ts": t0 + int(second * 1000) // 500 * 500,  # ties in click_ts
                       "user_id": rng.choice(users), "ip": rng.choice(ips), "country": rng.choice(["US", "DE"]),
                       "receive_ts": None})
    for i in range(25):  # a bot: one user, one ad, one minute
        clicks.append({"event_id": f"bot{i:02d}", "ad_id": "ad-a", "click_ts": t0 + 120_000 + i * 1000,
                       "user_id": "bot", "ip": "203.0.113.50", "country": "US", "receive_ts": None})
    return clicks
