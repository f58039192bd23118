"""asyncq benchmark suite: see BENCHMARKS.md (the protocol) and benches/run.py (the harness)."""
