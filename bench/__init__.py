"""Benchmarks that print ratios measured side by side (issue #7); `python -m bench` runs them all
and writes bench/RESULTS.md. Not part of the test suite: timings are not assertions."""
