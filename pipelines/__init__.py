"""The one adclick DAG and its configuration."""
