"""The goodput accounting: a launch's buckets add up to its wall time, goodput.json sums every launch, the
summary line names the losses largest first."""

import json
import time

import pytest

from fartrack_jax.training import goodput


def test_buckets_add_up_to_the_wall_time_and_launches_are_summed(tmp_path):
  path = tmp_path / "goodput.json"
  assert goodput.previous_launches(path) == [] and goodput.last_step_trained([]) == 0
  started = time.time() - 2.0  # as if the process had started 2 s ago
  watch = goodput.Stopwatch(started)
  watch.lap("startup")
  time.sleep(0.05)
  watch.lap("steps")
  total = goodput.record(path, [], watch, first_step=0, last_step=7, ended="preempted")
  wall = time.time() - started
  assert sum(total.values()) == pytest.approx(wall, abs=0.05)
  assert total["startup"] >= 2.0 and total["steps"] >= 0.05

  launches = goodput.previous_launches(path)
  assert goodput.last_step_trained(launches) == 7
  second = goodput.Stopwatch(time.time())
  second.seconds.update(recomputed=1.0, steps=3.0)
  total = goodput.record(path, launches, second, first_step=5, last_step=9, ended="finished")
  saved = json.loads(path.read_text())
  assert [l["ended"] for l in saved["launches"]] == ["preempted", "finished"]
  assert saved["total"]["wall_s"] == pytest.approx(sum(l["wall_s"] for l in saved["launches"]))
  assert total["recomputed"] == pytest.approx(1.0) and saved["total"]["seconds"] == total


def test_summary_names_goodput_then_the_largest_losses():
  line = goodput.summary({"startup": 4.0, "compile": 5.0, "input": 6.0, "steps": 84.0, "checkpoints": 1.0,
                          "validation": 0.0, "recomputed": 0.0, "other": 0.001})
  assert line == "goodput 84 %: input 6 %, compile 5 %, start-up 4 %, checkpoints 1 % of 100 s"
