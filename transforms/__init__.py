"""The middle of the DAG: parse, dedup, windowing and aggregates, source- and sink-agnostic."""
