"""`adclick serve`: the query API, /metrics and the dashboard over a sink, with uvicorn."""

import argparse
import sys

from serving.api import DEFAULT_MAX_WINDOW_MINUTES


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adclick serve",
        description="Serve the query API (/v1/...), Prometheus metrics (/metrics) and the dashboard (/dashboard/) "
                    "over the aggregates in a sink. Bigtable: set BIGTABLE_EMULATOR_HOST=HOST:PORT for the emulator.")
    parser.add_argument("--sink", default="sqlite:///adclick.db",
                        help="sqlite:///PATH or bigtable://PROJECT/INSTANCE/TABLE (default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, loopback only)")
    parser.add_argument("--port", type=int, default=8080, help="(default: %(default)s)")
    parser.add_argument("--max-window-minutes", type=int, default=DEFAULT_MAX_WINDOW_MINUTES,
                        help="largest `window` popular_ads accepts; its cost grows with it (default: %(default)s)")
    parser.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    return parser


def run(argv=None) -> None:
    args = parser().parse_args(argv)
    if args.max_window_minutes < 1:
        sys.exit("adclick serve: --max-window-minutes must be at least 1")
    import uvicorn
    from serving.api import create_app
    from serving.store import open_store
    try:
        store = open_store(args.sink)
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"adclick serve: {error}")
    print(f"adclick serve: {store.kind} store {args.sink}; dashboard at http://{args.host}:{args.port}/dashboard/",
          flush=True)
    try:
        uvicorn.run(create_app(store, args.max_window_minutes), host=args.host, port=args.port,
                    log_level=args.log_level, access_log=args.log_level == "debug")
    finally:
        store.close()
