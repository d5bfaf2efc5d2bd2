r"""Packing throughput: frames/s per worker of `build_tfds.py` with --beam (Apache Beam's DirectRunner in
worker processes) against the same command without it (--num-workers processes), frames and crops, on the
same synthetic root, and what the measured rates mean for the real training sets.

  python scripts/benchmark_build.py [--workers 2] [--num-sequences 6] [--num-frames 40] [--size 1280x720] \
      [--formats frames,crops] [--repeats 3] [--config configs/fartrack.py:variant=tiny] [--json FILE]

Writes a GOT-10k-layout synthetic root (--num-sequences x --num-frames JPEG frames of --size) and a 1-frame-
per-sequence one, then runs `scripts/build_tfds.py` as a subprocess for each (format, path) in turn, --repeats
times, interleaved so that load from elsewhere on a shared machine falls on every path alike: `single`
(without --beam: frames in one process, crops in --workers processes) and `beam` (--beam, runner=DirectRunner,
multi_processing, --workers processes). Each build's wall time and CPU time (the command and every process
under it, from the kernel's accounting of waited-for children) are taken; the small root's build is the
fixed cost (interpreter, imports, tfds, Beam's worker start-up) and the rate is the marginal one,
(frames - small frames) / (time - small time), medians over the repeats:
  frames_per_s_per_worker   marginal frames / wall second / processes working (1 for frames without Beam);
  frames_per_cpu_s          marginal frames / CPU second: the per-core rate, much less affected by other load
                            than the wall-clock one (the figure the scale table uses).
Prints both tables (the scale table: core-hours = Dataflow worker-hours of one vCPU each, and the hours on
--scale-workers such vCPUs, per training set of the issue's frame counts) and writes the rows with the CPU
model, core count and load average to --json.
"""

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # pylint: disable=g-import-not-at-top

from data_pipelines.training import synthetic_train
from fartrack_jax import cli

_WORKERS = flags.DEFINE_integer("workers", 2, "Processes of each parallel path (crops without Beam: "
                                "--num-workers; Beam: direct_num_workers).")
_NUM_SEQUENCES = flags.DEFINE_integer("num_sequences", 6, "Sequences of the timed synthetic root.")
_NUM_FRAMES = flags.DEFINE_integer("num_frames", 40, "Frames per sequence of the timed root.")
_SIZE = flags.DEFINE_string("size", "1280x720", "Frame size WIDTHxHEIGHT (GOT-10k, LaSOT and TrackingNet "
                            "frames are mostly 1280x720 or smaller).")
_FORMATS = flags.DEFINE_list("formats", ["frames", "crops"], "build_tfds.py --format values to time.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Builds per (format, path, root); medians are reported.")
_CONFIG = flags.DEFINE_string("config", "configs/fartrack.py:variant=tiny", "--format crops: the config whose "
                              "crops the windows serve (tiny: the real 112/224 crop sizes).")
_SCALE_WORKERS = flags.DEFINE_integer("scale_workers", 100, "Workers (vCPUs) of the scale table's hours column.")
_JSON = flags.DEFINE_string("json", None, "Write the rows here as JSON.")
_WORK_DIR = flags.DEFINE_string("work_dir", None, "Folder for the roots and builds (default: a temporary one).")

# Frames of the training sets (the counts; COCO: train2017 images, one record each).
DATASET_FRAMES = {"GOT-10k": 1.4e6, "LaSOT": 3.5e6, "TrackingNet": 14e6, "COCO 2017": 118e3}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def _build(root: str, data_dir: str, fmt: str, path: str) -> tuple[float, float]:
  """(wall s, CPU s of the command and its descendants) of one build_tfds.py run."""
  command = [sys.executable, os.path.join(ROOT, "scripts", "build_tfds.py"), "--dataset", "SYNTHETIC", "--root",
             root, "--data-dir", data_dir, "--format", fmt, "--config", _CONFIG.value]
  if path == "beam":
    command += ["--beam", "--beam_pipeline_options", "runner=DirectRunner,direct_running_mode=multi_processing,"
                f"direct_num_workers={_WORKERS.value}"]
  else:
    command += ["--num-workers", str(_WORKERS.value if fmt == "crops" else 0)]
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  start = time.perf_counter()
  out = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
  wall = time.perf_counter() - start
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  if out.returncode != 0:
    raise SystemExit(f"error: {' '.join(command)} failed:\n{out.stderr[-3000:]}")
  return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main(argv):
  del argv
  import shutil  # pylint: disable=g-import-not-at-top
  width, height = (int(v) for v in _SIZE.value.lower().split("x"))
  work = _WORK_DIR.value or tempfile.mkdtemp(prefix="benchmark_build_")
  roots = {"timed": os.path.join(work, "root"), "small": os.path.join(work, "root_small")}
  frames = {"timed": _NUM_SEQUENCES.value * _NUM_FRAMES.value, "small": _NUM_SEQUENCES.value * 2}
  for key, num_frames in (("timed", _NUM_FRAMES.value), ("small", 2)):
    if not os.path.isdir(roots[key]):
      synthetic_train.make_synthetic_train_dataset("got10k_train", roots[key], _NUM_SEQUENCES.value, num_frames,
                                                   size=(width, height))
  load_before = os.getloadavg()
  times = {}  # (fmt, path, root) -> [(wall, cpu)]
  for repeat in range(_REPEATS.value):
    for fmt in _FORMATS.value:
      for path in ("single", "beam"):
        for key in ("small", "timed"):
          data_dir = os.path.join(work, f"tfds_{fmt}_{path}_{key}_{repeat}")
          times.setdefault((fmt, path, key), []).append(_build(roots[key], data_dir, fmt, path))
          shutil.rmtree(data_dir, ignore_errors=True)
          print(f"repeat {repeat}: {fmt} {path} {key}: {times[(fmt, path, key)][-1][0]:.1f} s", flush=True)
  load_after = os.getloadavg()

  rows = []
  for fmt in _FORMATS.value:
    for path in ("single", "beam"):
      wall = [t[0] - s[0] for t, s in zip(times[(fmt, path, "timed")], times[(fmt, path, "small")])]
      cpu = [t[1] - s[1] for t, s in zip(times[(fmt, path, "timed")], times[(fmt, path, "small")])]
      workers = 1 if (fmt == "frames" and path == "single") else _WORKERS.value
      marginal = frames["timed"] - frames["small"]
      rows.append({
          "format": fmt, "path": path, "workers": workers, "frames": frames["timed"],
          "wall_s": statistics.median(t[0] for t in times[(fmt, path, "timed")]),
          "fixed_s": statistics.median(t[0] for t in times[(fmt, path, "small")]),
          "frames_per_s_per_worker": marginal / statistics.median(wall) / workers,
          "frames_per_cpu_s": marginal / statistics.median(cpu),
          "frame_size": f"{width}x{height}", "config": _CONFIG.value, "repeats": _REPEATS.value,
          "cpu": cpu_model(), "cores": os.cpu_count(), "load_before": load_before, "load_after": load_after})
  for fmt in _FORMATS.value:
    single, beam = (r for r in rows if r["format"] == fmt)
    beam["beam_over_single_per_cpu_s"] = beam["frames_per_cpu_s"] / single["frames_per_cpu_s"]
    beam["beam_over_single_per_worker"] = beam["frames_per_s_per_worker"] / single["frames_per_s_per_worker"]

  print(f"\n{cpu_model()}, {os.cpu_count()} cores, load average {load_before[0]:.1f} -> {load_after[0]:.1f}, "
        f"{frames['timed']} frames of {width}x{height}, medians of {_REPEATS.value}")
  print(f"{'format':7} {'path':6} {'workers':>7} {'wall s':>7} {'fixed s':>7} {'fr/s/worker':>11} "
        f"{'fr/CPU-s':>8} {'beam/single':>11}")
  for r in rows:
    ratio = f"{r['beam_over_single_per_cpu_s']:.2f}" if "beam_over_single_per_cpu_s" in r else ""
    print(f"{r['format']:7} {r['path']:6} {r['workers']:7d} {r['wall_s']:7.1f} {r['fixed_s']:7.1f} "
          f"{r['frames_per_s_per_worker']:11.1f} {r['frames_per_cpu_s']:8.1f} {ratio:>11}")
  print(f"\nScale (Beam's frames per CPU-second; 1 worker = 1 vCPU): worker-hours, and hours on "
        f"{_SCALE_WORKERS.value} workers")
  scale = []
  for r in (r for r in rows if r["path"] == "beam"):
    for name, count in DATASET_FRAMES.items():
      hours = count / r["frames_per_cpu_s"] / 3600
      scale.append({"format": r["format"], "dataset": name, "frames": count, "worker_hours": hours,
                    "hours_on_workers": hours / _SCALE_WORKERS.value, "workers": _SCALE_WORKERS.value})
      print(f"{r['format']:7} {name:12} {count:12,.0f} frames {hours:9.1f} worker-h "
            f"{hours / _SCALE_WORKERS.value:7.2f} h")
  if _JSON.value:
    with open(_JSON.value, "w") as f:
      json.dump({"rows": rows, "scale": scale}, f, indent=1)
  if not _WORK_DIR.value:
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
  if any(arg in ("--help", "-h", "-?", "--helpshort") for arg in sys.argv[1:]):
    from absl import app  # pylint: disable=g-import-not-at-top
    app.usage(shorthelp=True, writeto_stdout=True)
    sys.exit(0)
  cli.run(main)
