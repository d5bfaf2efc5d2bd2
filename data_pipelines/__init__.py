"""Data for fartrack-jax: benchmark readers, synthetic benchmarks, and (later) training pipelines."""
