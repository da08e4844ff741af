"""Serving the aggregates: a store interface over the sinks, the query API and the dashboard."""
