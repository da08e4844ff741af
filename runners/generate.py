"""`adclick generate`: a synthetic, reproducible click log with the dirt real logs have."""

import argparse
import dataclasses
import sys

from loadgen.generator import FORMATS, GeneratorConfig, write_log


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adclick generate",
        description="Write clicks-*.{jsonl,avro,parquet} with Zipf-skewed ads, resends, disorder, late and "
                    "malformed lines, plus truth.jsonl (the unique valid clicks) and manifest.json (the counts).")
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory")
    parser.add_argument("--format", default="jsonl", choices=FORMATS)
    parser.add_argument("--files", type=int, default=1, help="split the log over this many files")
    parser.add_argument("--gzip", action="store_true", help="gzip JSON-lines files")
    defaults = GeneratorConfig()
    group = parser.add_argument_group("the log's shape (see loadgen/generator.py)")
    for field in dataclasses.fields(GeneratorConfig):
        if field.name == "countries":
            continue
        flag = "--" + field.name.replace("_", "-")
        group.add_argument(flag, type=type(getattr(defaults, field.name)), default=getattr(defaults, field.name),
                           dest=field.name, help="default: %(default)s")
    return parser


def run(argv=None) -> dict:
    args = parser().parse_args(argv)
    shape = {field.name: getattr(args, field.name) for field in dataclasses.fields(GeneratorConfig)
             if field.name != "countries"}
    try:
        manifest = write_log(GeneratorConfig(**shape), args.out, args.format, args.files, args.gzip)
    except (ValueError, FileExistsError) as error:
        sys.exit(f"adclick generate: {error}")
    print(f"wrote {manifest['read']:,} records to {args.out}: {manifest['unique']:,} unique clicks, "
          f"{manifest['duplicates']:,} resends, {manifest['malformed']:,} malformed")
    return manifest
