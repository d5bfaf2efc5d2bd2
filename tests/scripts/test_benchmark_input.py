"""scripts/benchmark_input.py: rows for both pipelines and both frame data paths with the documented
fields and the data paths' comparison, and windows too short to measure a rate refused."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

SCRIPT = os.path.join(ROOT, "scripts", "benchmark_input.py")


@pytest.mark.slow
def test_rows_for_both_pipelines(tmp_path):
  out = tmp_path / "input.json"
  proc = subprocess.run([sys.executable, SCRIPT, "--variant", "smoke", "--workers", "0", "--windows", "2",
                         "--window-batches", "4", "--warmup", "1", "--num-sequences", "2",
                         "--data-dir", str(tmp_path / "data"), "--json", str(out)],
                        capture_output=True, text=True, timeout=600, cwd=ROOT)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = json.loads(out.read_text())
  assert [(r["pipeline"], r["data_path"], r["workers"]) for r in rows] == [
      ("frame", "frames", 0), ("frame", "precropped", 0), ("clip", "frames", 0)]
  for row in rows:
    assert row["samples_per_s"] > 0 and row["peak_rss_mb"] > 0 and row["samples_per_cpu_s"] > 0
    assert abs(row["samples_per_s_per_core"] * row["cores"] - row["samples_per_s"]) < 1e-6 * row["samples_per_s"]
    assert row["clips_or_pairs"] == 2 * 4 * row["batch_size"]
    frames = 3 if row["pipeline"] == "frame" else 2 + 4  # smoke: 2 templates + 1 search / 4 search frames
    assert abs(row["frames_per_s"] - frames * row["samples_per_s"]) < 1e-6 * row["frames_per_s"]
  assert "frame" in proc.stdout and "clip" in proc.stdout  # the table
  # The two data paths compared on the same draws: the labels equal, the pixels close.
  exactness = rows[1]["exactness"]
  assert exactness["examples"] == 64 and exactness["token_mismatches"] == 0
  assert exactness["search_box_max_abs"] == 0 and 0 < exactness["search_mean_abs"] < 10
  assert "precropped against frames on the same draws" in proc.stdout


def test_windows_shorter_than_the_read_ahead_are_refused(tmp_path):
  proc = subprocess.run([sys.executable, SCRIPT, "--variant", "smoke", "--pipelines", "frame", "--workers", "0",
                         "--window-batches", "1", "--num-sequences", "2", "--data-dir", str(tmp_path / "data")],
                        capture_output=True, text=True, timeout=600, cwd=ROOT)
  assert proc.returncode != 0
  assert "shorter than the frame pipeline's read-ahead" in proc.stderr + proc.stdout
