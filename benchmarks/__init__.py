"""pgbackups benchmark suite: ``python -m benchmarks`` (``make bench``).

See docs/performance.md for what it measures and the results on the reference machine.
"""
