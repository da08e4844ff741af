"""Fixtures that start real servers on 127.0.0.1 and stop them by PID."""
