"""The performance benchmarks behind ``naila bench``: one module per part, ``common`` for what they share.

Each part runs alone as ``python -m evals.bench.<part> [--quick]``; ``evals.bench.suite`` runs them all,
each in a process of its own, and prints one table (docs/PERFORMANCE.md).
"""
