"""Scoring on the evaluation datasets: per-frame metrics (`metrics`) and result-folder analysis with tables and plots
(`analysis`)."""
