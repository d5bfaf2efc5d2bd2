"""Timing helpers for the benchmark scripts: medians over many runs, device sync on every run."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from typing import Callable

import jax

from fartrack_jax import storage


def time_fn(fn: Callable[[], object], runs: int, warmup: int, sync: Callable[[object], object]) -> dict:
  """Calls `fn` `warmup` times, then `runs` times, syncing each result; returns ms statistics."""
  for _ in range(warmup):
    sync(fn())
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    sync(fn())
    times.append((time.perf_counter() - start) * 1e3)
  return {"median_ms": statistics.median(times), "min_ms": min(times), "runs": runs}


def time_interleaved(fns: dict[str, Callable[[], object]], syncs: dict[str, Callable[[object], object]],
                     runs: int, warmup: int) -> dict[str, dict]:
  """Like `time_fn` for several callables, alternating them call by call, so that load from elsewhere on
  a shared machine falls on all of them alike instead of on whichever ran during it."""
  for name, fn in fns.items():
    for _ in range(warmup):
      syncs[name](fn())
  times = {name: [] for name in fns}
  for _ in range(runs):
    for name, fn in fns.items():
      start = time.perf_counter()
      syncs[name](fn())
      times[name].append((time.perf_counter() - start) * 1e3)
  return {name: {"median_ms": statistics.median(t), "min_ms": min(t), "runs": runs} for name, t in times.items()}


def jax_device_name() -> str:
  d = jax.devices()[0]
  if d.platform == "cpu":
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
  return f"{d.platform} ({d.device_kind})"


def print_table(rows: list[dict], columns: list[str]) -> None:
  widths = [max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns]
  print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
  for r in rows:
    print("  ".join(_fmt(r.get(c)).ljust(w) for c, w in zip(columns, widths)))


def report(rows: list[dict], columns: list[str], json_path: str | None = None) -> None:
  """The end of every benchmark script: `rows` as a table on stdout (or a line saying there are none) and,
  with `json_path`, as JSON there."""
  if rows:
    print_table(rows, columns)
  else:
    print("no rows were run")
  if json_path:
    write_json(json_path, rows)
    print(f"wrote {json_path}")


def _fmt(v) -> str:
  if v is None:
    return "-"
  return f"{v:.2f}" if isinstance(v, float) else str(v)


def write_json(path: str, rows: list[dict]) -> None:
  storage.write_text_atomic(path, json.dumps(rows, indent=1))
