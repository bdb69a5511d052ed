"""Benchmarks of arnas-ray: each script prints one JSON line (`python -m benchmarks` runs them all)."""
