"""Benchmarks behind every number the issues ask for; run with ``make bench``."""
