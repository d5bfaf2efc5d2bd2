"""Where a run's wall time goes (goodput), kept per launch and summed over every launch of a workdir.

A `Stopwatch` charges the time since its last mark to one bucket at a time (`lap("input")`), so the
buckets of a launch add up to its wall time by construction: from the process's start (start-up and
joining the job) to the end of the run, the rest going to `other`. The training loop laps after each
phase: reading and uploading a batch (`input`), the first call of the step (`compile`), training steps
(`steps`, or `recomputed` for steps a previous launch had already trained before it stopped), checkpoint
saves and restores (`checkpoints`), validation (`validation`). Goodput is `steps` over the wall time.

`<workdir>/goodput.json` holds every launch (its buckets, wall time, first and last step) and their sum;
process 0 writes it (each process of a job spends about the same time: they wait for each other).
"""

from __future__ import annotations

import json
import os
import time

from fartrack_jax import storage

BUCKETS = ("startup", "compile", "input", "steps", "recomputed", "checkpoints", "validation", "other")
# Names in the printed summary; `steps` is the goodput itself.
_LABELS = {"startup": "start-up", "compile": "compile", "input": "input", "recomputed": "recomputed",
           "checkpoints": "checkpoints", "validation": "validation", "other": "other"}


def process_start_time() -> float:
  """Wall-clock time this process started (Linux: from /proc, to 10 ms), else now."""
  try:
    with open("/proc/self/stat") as f:
      ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime") as f:
      uptime = float(f.read().split()[0])
    return time.time() - (uptime - ticks / os.sysconf("SC_CLK_TCK"))
  except (OSError, ValueError, IndexError):
    return time.time()


class Stopwatch:
  """The buckets of one launch. `started_at`: wall-clock start of the launch (default: this process's)."""

  def __init__(self, started_at: float | None = None):
    self.started_at = process_start_time() if started_at is None else started_at
    self.seconds = dict.fromkeys(BUCKETS, 0.0)
    self._mark = self.started_at

  def lap(self, bucket: str) -> float:
    """Charges the time since the last lap to `bucket`; returns it."""
    now = time.time()
    spent = max(now - self._mark, 0.0)
    self.seconds[bucket] += spent
    self._mark = now
    return spent

  def wall(self) -> float:
    return time.time() - self.started_at

  def fractions(self) -> dict[str, float]:
    total = max(sum(self.seconds.values()), 1e-9)
    return {k: v / total for k, v in self.seconds.items()}


def previous_launches(path) -> list[dict]:
  """The launches recorded in `goodput.json` at `path` (empty when there is none or it is unreadable)."""
  path = storage.as_path(path)
  try:
    return list(json.loads(path.read_text()).get("launches", []))
  except (OSError, ValueError, AttributeError):
    return []


def last_step_trained(launches: list[dict]) -> int:
  """The furthest step any recorded launch reached: steps up to it are recomputed after a restart."""
  return max((int(l.get("last_step", 0)) for l in launches), default=0)


def _sum(launches: list[dict]) -> dict[str, float]:
  total = dict.fromkeys(BUCKETS, 0.0)
  for launch in launches:
    for k, v in launch.get("seconds", {}).items():
      total[k] = total.get(k, 0.0) + float(v)
  return total


def summed(launches: list[dict], watch: Stopwatch) -> dict[str, float]:
  """The buckets of `launches` plus this one so far (charged up to now, the rest as `other`), in seconds."""
  watch.lap("other")
  return _sum([*launches, {"seconds": watch.seconds}])


def record(path, launches: list[dict], watch: Stopwatch, first_step: int, last_step: int, ended: str) -> dict:
  """Writes `goodput.json` at `path`: `launches` plus this one (charged up to now, the rest as `other`), and
  their sum. Returns the summed buckets (seconds)."""
  watch.lap("other")
  this = {"started_at": watch.started_at, "wall_s": sum(watch.seconds.values()), "first_step": first_step,
          "last_step": last_step, "ended": ended, "seconds": dict(watch.seconds)}
  launches = [*launches, this]
  total = _sum(launches)
  wall = sum(total.values())
  storage.write_text_atomic(storage.as_path(path), json.dumps(
      {"launches": launches, "total": {"wall_s": wall, "seconds": total,
                                      "goodput": total["steps"] / wall if wall else 0.0}}, indent=2))
  return total


def summary(seconds: dict[str, float]) -> str:
  """`goodput 87 %: input 6 %, checkpoints 3 %, ...` (largest losses first; buckets under 0.5 % left out)."""
  wall = max(sum(seconds.values()), 1e-9)
  losses = sorted(((v / wall, k) for k, v in seconds.items() if k != "steps"), reverse=True)
  parts = [f"{_LABELS.get(k, k)} {100 * f:.0f} %" for f, k in losses if f >= 0.005]
  return f"goodput {100 * seconds.get('steps', 0.0) / wall:.0f} %" + (": " + ", ".join(parts) if parts else "") \
      + f" of {wall:.0f} s"
