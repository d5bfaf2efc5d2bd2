"""scripts/benchmark_tracker.py --host-only: rows with the documented fields per thread count and batch."""

import json
import os
import subprocess
import sys

from tests.conftest import ROOT


def test_host_only_rows(tmp_path):
  out = tmp_path / "rows.json"
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "benchmark_tracker.py"), "--host-only",
                         "--resolution", "160x120", "--threads", "1,2", "--batches", "1,3", "--num-sequences",
                         "3", "--num-frames", "4", "--repeats", "1", "--json", str(out)],
                        capture_output=True, text=True, cwd=ROOT, timeout=300)
  assert proc.returncode == 0, proc.stderr
  rows = json.loads(out.read_text())
  assert [(r["mode"], r["batch"], r["threads"]) for r in rows] == [
      ("host", 1, 1), ("host", 1, 2), ("host serial", 1, 1), ("host", 3, 1), ("host", 3, 2),
      ("host serial", 3, 1)]
  assert all(r["frames_per_s"] > 0 and r["frames_per_cpu_s"] > 0 for r in rows)
  assert {r["resolution"] for r in rows} == {"160x120"}
  bad = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "benchmark_tracker.py"), "--host-only",
                        "--resolution", "720p"], capture_output=True, text=True, cwd=ROOT, timeout=300)
  assert bad.returncode != 0 and "--resolution must be WxH" in bad.stderr
