"""Benchmarks of batch mode at scale: a seeded workload generator and a harness.

Run by their own commands (``python -m tests.bench.workload``, ``python -m tests.bench.run``);
pytest does not collect these modules (no ``test_`` prefix). ``tests/test_bench_smoke.py`` runs
both at a tiny size.
"""
