"""Benchmarks (``python -m bench.latency``); results go to ``bench/RESULTS.md``."""
