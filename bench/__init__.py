"""Benchmarks: `python -m bench.<name>` prints one JSON line with a ratio to a floor."""
