"""`adclick recover`: a local Pub/Sub stream restarted after it was killed, with nothing lost.

The DirectRunner acknowledges a message when it pulls it, so a stream killed (SIGKILL, a lost machine)
loses what it had pulled but not yet written to the sink, the archive or the dead letters, and a plain
restart never sees those messages again. A subscription that retains acknowledged messages can be
sought back to a time: every message published since is delivered again. This command seeks the
subscription to the start of the oldest window that can still be open, less the skew limit (a click
may be stamped that far ahead of its publish time), and runs `adclick stream` with the same options.
The restarted stream then receives every message of every window it can still write, so each
window it writes is whole; the redelivered messages it had already counted are deduplicated or
overwrite the same counts (every write is idempotent). A redelivered click whose window closed
before the restart is too late for the new stream, as for any stream: a dead letter, archived, and
counted by `adclick reconcile --restate` over its minute.
"""

import datetime
import sys
from typing import Optional

from runners import stream
from sources.pubsub import pubsub_path
from transforms.records import MINUTE_MS, epoch_ms_to_iso
from transforms.windowing import LATENESS_GRACE_SECONDS

PROG = "adclick recover"
USAGE = f"{PROG} --source pubsub://projects/P/subscriptions/S --sink URL [adclick stream's options]"


def newest_window(sink_url: str) -> Optional[int]:
    """The newest window the sink holds (its top-N ranking), read only; None for an empty sink or none at all."""
    from serving.store import open_store
    try:
        store = open_store(sink_url)
    except FileNotFoundError:  # a SQLite sink the killed stream never created
        return None
    try:
        return store.latest_window()
    finally:
        store.close()


def seek_time(now_ms: int, newest: Optional[int], window_seconds: int, allowed_lateness_seconds: int,
              max_skew_seconds: int) -> int:
    """Where the subscription is sought back to (epoch ms): the start of the oldest window that can still be
    open, by the wall clock (the DirectRunner's Pub/Sub watermark) or by the sink's newest window if it is
    older (a stream that lagged), less the grace the windowing keeps and the skew limit."""
    window_ms = window_seconds * 1000
    latest = now_ms if newest is None else min(now_ms, newest + window_ms)
    oldest_open = latest - (allowed_lateness_seconds + LATENESS_GRACE_SECONDS) * 1000 - window_ms
    oldest_open -= oldest_open % MINUTE_MS
    return oldest_open - max_skew_seconds * 1000


def seek(subscription: str, epoch_ms: int) -> None:
    """Seeks `subscription` to a time; refuses (ValueError, one line) one that keeps no acknowledged messages."""
    from google.api_core import exceptions
    from google.cloud import pubsub_v1
    with pubsub_v1.SubscriberClient() as subscriber:
        try:
            held = subscriber.get_subscription(subscription=subscription, timeout=10)
            if not held.retain_acked_messages:
                raise ValueError(
                    f"{subscription} does not retain acknowledged messages, so what the killed stream pulled cannot "
                    "be delivered again: create subscriptions with `adclick pubsub create` (it retains them), or "
                    f"`gcloud pubsub subscriptions update {subscription} --retain-acked-messages`; for now, "
                    "`adclick reconcile --restate` from the raw archive restates what it holds")
            moment = datetime.datetime.fromtimestamp(epoch_ms / 1000, datetime.timezone.utc)
            subscriber.seek(request={"subscription": subscription, "time": moment}, timeout=30)
        except exceptions.NotFound:
            raise ValueError(f"no subscription {subscription}") from None
        except (exceptions.GoogleAPICallError, exceptions.RetryError) as error:
            reason = str(getattr(error, "message", None) or error).splitlines()[0]
            raise ValueError(f"cannot seek {subscription}: {reason}") from None


def run(argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(arg in ("-h", "--help") for arg in argv):
        print(f"usage: {USAGE}\n\n{__doc__}")
        return {}
    args, _ = stream.parser().parse_known_args(argv)
    if args.runner != "direct" or not args.source.startswith("pubsub://"):
        sys.exit(f"{PROG}: recovers a Pub/Sub stream on the DirectRunner, which acknowledges at pull; a Kafka "
                 "stream resumes from its committed offsets, Dataflow and Flink from their own state")
    try:
        subscription = pubsub_path(args.source)
        newest = newest_window(args.sink)
        now_ms = int(datetime.datetime.now(datetime.timezone.utc).timestamp() * 1000)
        at = seek_time(now_ms, newest, args.window_seconds, args.allowed_lateness_seconds, args.max_skew_seconds)
        seek(subscription, at)
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"{PROG}: {error}")
    print(f"{PROG}: sought {subscription} back to {epoch_ms_to_iso(at)} (the sink's newest window: "
          f"{epoch_ms_to_iso(newest) if newest is not None else 'none'}); every message published since is "
          "delivered again; restarting the stream", file=sys.stderr, flush=True)
    print(f"{PROG}: {follow_up(args, at, now_ms)}", file=sys.stderr, flush=True)
    return stream.run(argv)


def follow_up(args, seek_ms: int, now_ms: int) -> str:
    """The reconcile that restates what a restart cannot: the sliding rankings over minutes that closed before
    it, and any click the killed stream pulled but had not written whose minute closed before the restart."""
    window_ms = args.window_seconds * 1000
    start = seek_ms - seek_ms % MINUTE_MS
    end = now_ms - now_ms % MINUTE_MS + MINUTE_MS + args.top_sliding_minutes * window_ms
    raw = f"'{args.archive.rstrip('/')}/*/*.parquet'" if args.archive else "'ARCHIVE/*/*.parquet'"
    return (f"once {epoch_ms_to_iso(end + args.allowed_lateness_seconds * 1000)} has passed (and the archive's "
            f"next files are written), restate the minutes around the restart: adclick reconcile --raw {raw} "
            f"--sink {args.sink} --from {epoch_ms_to_iso(start)} --to {epoch_ms_to_iso(end)} --top-n {args.top_n} "
            f"--top-sliding-minutes {args.top_sliding_minutes} --restate")
