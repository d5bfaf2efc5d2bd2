"""Data for fartrack-jax: evaluation-dataset readers (`evaluation`), training pipelines (`training`), the
crops and annotation files both share, synthetic datasets."""
