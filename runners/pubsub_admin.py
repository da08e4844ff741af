"""`adclick pubsub create`: the topic and subscription a local (or real) Pub/Sub stream needs.

The stream reads a subscription and `generate --to` publishes to its topic; both
must exist before either starts (they check). Existing ones are left as they are,
so the command can run before every stream. A new subscription retains acknowledged
messages (for the retention period, 7 days by default), so that `adclick recover` can
seek it back after a stream that acknowledged at pull was killed.
"""

import argparse
import sys

from sources.pubsub import pubsub_path

ACK_DEADLINE_SECONDS = 60


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adclick pubsub", description="Manage the Pub/Sub topic and subscription of a stream.",
        epilog="Set PUBSUB_EMULATOR_HOST=HOST:PORT to use the emulator.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    create = commands.add_parser(
        "create", help="create a topic and a subscription to it (idempotent)",
        description="Create the topic and a subscription to it; existing ones are left as they are.")
    create.add_argument("--topic", required=True, metavar="pubsub://projects/P/topics/T")
    create.add_argument("--subscription", required=True, metavar="pubsub://projects/P/subscriptions/S")
    return parser


def create(topic: str, subscription: str) -> list:
    """Creates what is missing; returns what it created."""
    from google.api_core import exceptions
    from google.cloud import pubsub_v1
    created = []
    with pubsub_v1.PublisherClient() as publisher:
        try:
            publisher.create_topic(name=topic)
            created.append(f"topic {topic}")
        except exceptions.AlreadyExists:
            pass
    with pubsub_v1.SubscriberClient() as subscriber:
        try:
            subscriber.create_subscription(request={
                "name": subscription, "topic": topic, "ack_deadline_seconds": ACK_DEADLINE_SECONDS,
                "retain_acked_messages": True})
            created.append(f"subscription {subscription} (acknowledged messages retained, for adclick recover)")
        except exceptions.AlreadyExists:
            existing = subscriber.get_subscription(subscription=subscription)
            if existing.topic != topic:
                raise ValueError(
                    f"subscription {subscription} exists and reads {existing.topic}, not {topic}") from None
            if not existing.retain_acked_messages:
                print(f"WARNING: subscription {subscription} retains no acknowledged messages: adclick recover cannot "
                      "seek it back (gcloud pubsub subscriptions update ... --retain-acked-messages)", file=sys.stderr)
    return created


def run(argv=None) -> None:
    args = parser().parse_args(argv)
    from google.api_core import exceptions
    from google.auth.exceptions import GoogleAuthError
    try:
        topic, subscription = pubsub_path(args.topic, "topics"), pubsub_path(args.subscription)
        created = create(topic, subscription)
    except ValueError as error:
        sys.exit(f"adclick pubsub: {error}")
    except (exceptions.GoogleAPIError, GoogleAuthError) as error:
        reason = str(getattr(error, "message", None) or error).splitlines()[0]
        sys.exit(f"adclick pubsub: cannot create {args.topic} and {args.subscription}: {reason}")
    print("\n".join(f"created {what}" for what in created) if created else "both exist, nothing to do")
