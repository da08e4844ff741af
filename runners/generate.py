"""`adclick generate`: a synthetic, reproducible click log with the dirt real logs have."""

import argparse
import dataclasses
import sys

from loadgen.generator import FORMATS, GeneratorConfig, write_log

SHAPE_HELP = {"hot_ad_share": "the top ad's share of clicks, e.g. 0.3; sets the Zipf exponent for --ads "
                              "(default: --zipf-exponent decides)"}


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adclick generate",
        description="Write clicks-*.{jsonl,avro,parquet} with Zipf-skewed ads, resends, disorder, late and "
                    "malformed lines, plus truth.jsonl (the unique valid clicks) and manifest.json (the counts).")
    parser.add_argument("--out", metavar="DIR", help="output directory (with --to: where truth.jsonl and "
                                                       "manifest.json of what was sent go)")
    parser.add_argument("--to", metavar="URL", help="publish to pubsub://projects/P/topics/T or kafka://BROKERS/TOPIC "
                                                    "instead, with event times around now (docs/streaming.md)")
    parser.add_argument("--rate", type=float, metavar="EVENTS_PER_S",
                        help="with --to: messages a second, one generated minute after another (default: all at once)")
    parser.add_argument("--duration", type=float, metavar="S", help="with --to: stop publishing after S seconds")
    parser.add_argument("--format", default="jsonl", choices=FORMATS)
    parser.add_argument("--files", type=int, default=1, help="split the log over this many files")
    parser.add_argument("--gzip", action="store_true", help="gzip JSON-lines files")
    defaults = GeneratorConfig()
    group = parser.add_argument_group("the log's shape (see loadgen/generator.py)")
    for field in dataclasses.fields(GeneratorConfig):
        if field.name == "countries":
            continue
        flag = "--" + field.name.replace("_", "-")
        default = getattr(defaults, field.name)
        group.add_argument(flag, type=float if default is None else type(default), default=default,
                           dest=field.name, help=SHAPE_HELP.get(field.name, "default: %(default)s"))
    return parser


def run(argv=None) -> dict:
    args = parser().parse_args(argv)
    shape = {field.name: getattr(args, field.name) for field in dataclasses.fields(GeneratorConfig)
             if field.name != "countries"}
    if args.to:
        return _publish(args, GeneratorConfig(**shape))
    if not args.out:
        sys.exit("adclick generate: --out DIR or --to URL is required")
    try:
        config = GeneratorConfig(**shape)
        manifest = write_log(config, args.out, args.format, args.files, args.gzip)
    except (ValueError, FileExistsError) as error:
        sys.exit(f"adclick generate: {error}")
    if config.hot_ad_share is not None:
        print(f"Zipf exponent {config.effective_zipf_exponent:.4f} puts {config.hot_ad_share:.0%} of clicks "
              f"on the top of {config.ads:,} ads")
    print(f"wrote {manifest['read']:,} records to {args.out}: {manifest['unique']:,} unique clicks, "
          f"{manifest['duplicates']:,} resends, {manifest['malformed']:,} malformed")
    return manifest


def _publish(args, config: GeneratorConfig) -> dict:
    """Publishes the log to a stream; writes what was sent (truth.jsonl, manifest.json) to --out."""
    import pathlib

    import orjson

    from loadgen.publish import emissions_around_now, publish, publisher_for
    try:
        publisher = publisher_for(args.to)
    except ValueError as error:
        sys.exit(f"adclick generate: {error}")
    sent = publish(emissions_around_now(config, args.rate), publisher, args.rate, args.duration)
    manifest = sent.manifest(args.to)
    if args.out:
        out = pathlib.Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "truth.jsonl").write_bytes(b"".join(orjson.dumps(event) + b"\n" for event in sent.truth))
        (out / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n")
    print(f"published {sent.read:,} messages to {args.to}: {sent.unique:,} unique clicks, "
          f"{sent.duplicates:,} resends, {sent.malformed:,} malformed")
    return manifest
