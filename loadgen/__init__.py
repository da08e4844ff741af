"""Seeded click-log generator with a known ground truth, for tests, benchmarks and demos."""
