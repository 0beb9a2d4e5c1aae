"""Benchmark scripts (run them as `python benchmarks/<name>.py`; see BENCHMARKS.md)."""
