"""Timing and comparison code the `scripts/benchmark_*.py` and `scripts/compare_data_paths.py` run: not part of
the library (`fartrack_jax`), which it measures. (The evaluation datasets are `data_pipelines.evaluation`.)"""
