"""The trivial workers of benchmarks/bench_peers.py: one body, run by the pool and by a management command."""
