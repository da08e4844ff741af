"""`adclick bigtable create-table`: set up the Bigtable table the sink writes and the API reads."""

import argparse
import sys

from sinks import bigtable_table


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="adclick bigtable", description="Manage the Bigtable sink's table.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    create = commands.add_parser(
        "create-table", help="create the table and its column families (idempotent)",
        description="Create the table, pre-split on its salt buckets, with column families c (counts) and "
                    "t (top ads), one version per cell. Existing tables and families are left as they are. "
                    "Set BIGTABLE_EMULATOR_HOST=HOST:PORT to use the emulator.")
    create.add_argument("--sink", required=True, metavar="bigtable://PROJECT/INSTANCE/TABLE")
    return parser


def run(argv=None) -> None:
    args = parser().parse_args(argv)
    from google.api_core import exceptions
    from google.auth.exceptions import DefaultCredentialsError

    from sinks.bigtable import create_table
    try:
        ref = bigtable_table(args.sink)
        created = create_table(ref)
    except ValueError as error:
        sys.exit(f"adclick bigtable: {error}")
    except (exceptions.GoogleAPICallError, exceptions.RetryError, DefaultCredentialsError) as error:
        message = " ".join((getattr(error, "message", None) or str(error)).split())[:300]
        sys.exit(f"adclick bigtable: cannot create {args.sink}: {message}")
    print("\n".join(f"created {what}" for what in created) if created else f"{ref.url} is ready, nothing to do")
