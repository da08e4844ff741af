"""`adclick serve`: the query API, /metrics and the dashboard over a sink, with uvicorn."""

import argparse
import dataclasses
import ipaddress
import json
import os
import socket
import stat
import sys

from serving import health
from serving.api import DEFAULT_LIMITS, Limits, option_of

BACKLOG = 2048  # uvicorn's default
MIN_TOKEN_LENGTH = 16
WORKER_ENV = "ADCLICK_SERVE_WORKER"  # what a worker process of --workers N serves, as JSON
LIMIT_HELP = {  # the Limits field each option sets (serving.api.option_of names it), and what it bounds
    "max_count": "most ads popular_ads answers with",
    "max_window_minutes": "largest `window` popular_ads accepts; its cost grows with it",
    "max_range_minutes": "longest from..to aggregated_count accepts",
    "max_url_length": "longest path and query in bytes; longer: 414",
    "max_in_flight": "requests answered at once by each worker; beyond: 503 with Retry-After",
}


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adclick serve",
        description="Serve the query API (/v1/...), Prometheus metrics (/metrics) and the dashboard (/dashboard/) "
                    "over the aggregates in a sink. Bigtable: set BIGTABLE_EMULATOR_HOST=HOST:PORT for the emulator.")
    parser.add_argument("--sink", default="sqlite:///adclick.db",
                        help="sqlite:///PATH or bigtable://PROJECT/INSTANCE/TABLE (default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default: %(default)s, loopback only; any other needs --auth-token-file)")
    parser.add_argument("--port", type=int, default=8080, help="0..65535; 0 picks a free one (default: %(default)s)")
    parser.add_argument("--auth-token-file", metavar="PATH",
                        help=f"a file holding the bearer token (at least {MIN_TOKEN_LENGTH} printable characters, not "
                             "readable by others): /v1 and /metrics then need `Authorization: Bearer TOKEN`")
    parser.add_argument("--workers", type=int, default=1,
                        help="uvicorn worker processes sharing the port (default: %(default)s; each has its own "
                             "/metrics counters)")
    for field, meaning in LIMIT_HELP.items():
        parser.add_argument(option_of(field).split()[-1], type=int, default=getattr(DEFAULT_LIMITS, field),
                            help=f"{meaning} (default: %(default)s)")
    parser.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    health.add_arguments(parser)
    return parser


def limits_of(args) -> Limits:
    """The limits the options set, each at least 1."""
    for field in LIMIT_HELP:
        if getattr(args, field) < 1:
            sys.exit(f"adclick serve: {option_of(field).split()[-1]} must be at least 1, got {getattr(args, field)}")
    return dataclasses.replace(DEFAULT_LIMITS, **{field: getattr(args, field) for field in LIMIT_HELP})


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve beyond loopback


def read_token(path: str) -> str:
    """The bearer token in `path`, refusing (one line) a file others can read, an empty one or one that is not
    a header-safe token."""
    try:
        mode = os.stat(path).st_mode
        with open(path, encoding="utf-8") as file:
            token = file.read().strip()
    except (OSError, UnicodeDecodeError) as error:
        sys.exit(f"adclick serve: cannot read --auth-token-file {path}: {getattr(error, 'strerror', None) or error}")
    if not stat.S_ISREG(mode):
        sys.exit(f"adclick serve: --auth-token-file {path} is not a regular file")
    if mode & stat.S_IRWXO:
        sys.exit(f"adclick serve: --auth-token-file {path} is readable by others: chmod 600 {path}")
    if not token:
        sys.exit(f"adclick serve: --auth-token-file {path} is empty")
    if len(token) < MIN_TOKEN_LENGTH or not token.isascii() or not token.isprintable() or " " in token:
        sys.exit(f"adclick serve: the token in {path} must be at least {MIN_TOKEN_LENGTH} printable ASCII characters "
                 "without spaces (e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(32))')")
    return token


def listen(host: str, port: int) -> socket.socket:
    """The server's socket, bound before the dashboard's URL is printed: a bad or busy port is one line."""
    if not 0 <= port <= 65535:
        sys.exit(f"adclick serve: --port {port} is not a TCP port (0..65535)")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a restart need not wait
    try:
        sock.bind((host, port))
        sock.listen(BACKLOG)  # now: a client that follows the printed URL waits for uvicorn rather than failing
    except OSError as error:
        sock.close()
        sys.exit(f"adclick serve: cannot listen on {host}:{port}: {error.strerror or error}")
    return sock


def _open(sink: str):
    from serving.store import open_store
    try:
        return open_store(sink)
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"adclick serve: {error}")


def worker_app():
    """The app of one worker process of `--workers N` (uvicorn's factory): what WORKER_ENV says to serve."""
    from serving.api import create_app
    spec = json.loads(os.environ[WORKER_ENV])
    token = read_token(spec["token_file"]) if spec["token_file"] else None
    store = _open(spec["sink"])
    return health.include(create_app(store, limits=Limits(**spec["limits"]), token=token), store, spec["metrics_url"])


def run(argv=None) -> None:
    args = parser().parse_args(argv)
    limits = limits_of(args)
    if args.workers < 1:
        sys.exit(f"adclick serve: --workers must be at least 1, got {args.workers}")
    if args.auth_token_file is None and not is_loopback(args.host):
        sys.exit(f"adclick serve: --host {args.host} is beyond loopback: give --auth-token-file PATH (a file "
                 "holding the bearer token every /v1 request must send)")
    token = read_token(args.auth_token_file) if args.auth_token_file is not None else None
    sock = listen(args.host, args.port)
    import uvicorn

    from serving.api import create_app
    store = _open(args.sink)
    try:
        host, port = sock.getsockname()[:2]
        address = f"[{host}]" if ":" in host else host
        print(f"adclick serve: {store.kind} store {args.sink}; dashboard at http://{address}:{port}/dashboard/"
              + (" (bearer token required)" if token else ""), flush=True)
        settings = dict(host=host, port=port, log_level=args.log_level, access_log=args.log_level == "debug")
        if args.workers == 1:
            app = health.include(create_app(store, limits=limits, token=token), store, args.metrics_url)
            uvicorn.Server(uvicorn.Config(app, **settings)).run(sockets=[sock])
            return
        from uvicorn.supervisors import Multiprocess
        store.close()  # each worker opens its own
        os.environ[WORKER_ENV] = json.dumps({"sink": args.sink, "limits": dataclasses.asdict(limits),
                                             "token_file": args.auth_token_file, "metrics_url": args.metrics_url})
        config = uvicorn.Config("runners.serve:worker_app", factory=True, workers=args.workers, **settings)
        Multiprocess(config, sockets=[sock]).run()
    finally:
        store.close()
