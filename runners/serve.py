"""`adclick serve`: the query API, /metrics and the dashboard over a sink, with uvicorn."""

import argparse
import socket
import sys

from serving.api import DEFAULT_MAX_WINDOW_MINUTES

BACKLOG = 2048  # uvicorn's default


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adclick serve",
        description="Serve the query API (/v1/...), Prometheus metrics (/metrics) and the dashboard (/dashboard/) "
                    "over the aggregates in a sink. Bigtable: set BIGTABLE_EMULATOR_HOST=HOST:PORT for the emulator.")
    parser.add_argument("--sink", default="sqlite:///adclick.db",
                        help="sqlite:///PATH or bigtable://PROJECT/INSTANCE/TABLE (default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, loopback only)")
    parser.add_argument("--port", type=int, default=8080, help="0..65535; 0 picks a free one (default: %(default)s)")
    parser.add_argument("--max-window-minutes", type=int, default=DEFAULT_MAX_WINDOW_MINUTES,
                        help="largest `window` popular_ads accepts; its cost grows with it (default: %(default)s)")
    parser.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    return parser


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


def run(argv=None) -> None:
    args = parser().parse_args(argv)
    if args.max_window_minutes < 1:
        sys.exit("adclick serve: --max-window-minutes must be at least 1")
    sock = listen(args.host, args.port)
    import uvicorn

    from serving.api import create_app
    from serving.store import open_store
    try:
        store = open_store(args.sink)
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"adclick serve: {error}")
    try:
        host, port = sock.getsockname()[:2]
        address = f"[{host}]" if ":" in host else host
        print(f"adclick serve: {store.kind} store {args.sink}; dashboard at http://{address}:{port}/dashboard/",
              flush=True)
        config = uvicorn.Config(create_app(store, args.max_window_minutes), host=host, port=port,
                                log_level=args.log_level, access_log=args.log_level == "debug")
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        store.close()
