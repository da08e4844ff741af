"""Launchers: the command line, runner options and run summaries. Transforms live elsewhere."""
