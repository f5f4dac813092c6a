"""Benchmarks: `python -m bench.ingest` (the real server, end to end) and `python -m bench.decode`
(the hot path's decoder alone). See bench/README.md."""
