r"""Tracker speed on JPEG frames, as evaluation reads them: step latency, whole frames, and offline throughput
of the pipelined loop against the one-thread loop; or the host path alone.

  python scripts/benchmark_tracker.py [--variants tiny,nano,pico] [--batches 1,2,4] [--runs 50] \
      [--num-sequences 8] [--num-frames 40] [--resolution 1280x720] [--threads 2] [--repeats 3] [--json FILE]
  python scripts/benchmark_tracker.py --host-only [--resolution 1280x720] [--threads 1,2] [--batches 1,4] \
      [--json FILE]

Synthetic sequences at --resolution are written as JPEG files (the generator's quality) to a temporary
folder, and every throughput row reads them. Per variant, on random weights, float32:
  - step: the jitted per-frame step alone (memory update, template sampling, network, decoding) at batch 1,
    crops prepared beforehand, `--runs` calls after warm-up, each synced with block_until_ready;
  - frame: a whole tracked frame at batch 1 in one thread: JPEG decode, two OpenCV crops, the step, the box
    mapped back;
  - throughput: frames/s of `track_sequences` (pipelined, --threads host threads; the first of the list)
    and of `track_sequences_serial` (the one-thread loop, `scripts/benchmarks/serial_tracking.py`) over
    `--num-sequences` sequences for each batch size in --batches, compile excluded, the two alternating
    `--repeats` times (median). At batch 1,
    `of_step_rate` is frames/s over the step's own rate (1000 / step median ms). `device_idle_ms` is the
    median host time between a step's result and the next dispatch: the device waits at least that long
    per step.
--host-only: the host path alone (decode, crops, box mapping), the network replaced by an instant stand-in
(`scripts/benchmarks/serial_tracking.StandInTracker`), for each batch and each thread count in --threads (rows
`{"mode": "host", "threads", "frames_per_s"}`; `threads` counts the pool, the calling thread cuts crops
besides), plus the one-thread loop (`"mode": "host serial"`).
`frames_per_cpu_s` divides the frames by the process's CPU time (all threads): the rate one core sustains,
which a loaded machine changes less than the wall-clock rate.
"""

import importlib
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # pylint: disable=g-import-not-at-top

from fartrack_jax import cli
from scripts.benchmarks import timing

_VARIANTS = flags.DEFINE_list("variants", ["tiny", "nano", "pico"], "Variants of configs/fartrack_sparse.py.")
_BATCHES = flags.DEFINE_list("batches", ["1", "2", "4"], "Batch sizes (sequences at once) for throughput.")
_RUNS = flags.DEFINE_integer("runs", 50, "Timed calls for the latency rows.")
_WARMUP = flags.DEFINE_integer("warmup", 5, "Untimed calls first.")
_NUM_SEQUENCES = flags.DEFINE_integer("num_sequences", 8, "Synthetic sequences for throughput "
                                      "(also --num-sequences).")
_NUM_FRAMES = flags.DEFINE_integer("num_frames", 40, "Frames per synthetic sequence (also --num-frames).")
_RESOLUTION = flags.DEFINE_string("resolution", "1280x720", "Frame size WxH of the synthetic JPEG frames.")
_THREADS = flags.DEFINE_list("threads", [str(os.cpu_count() or 1)], "Host threads of the pipelined loop; "
                             "--host-only times each, the other rows use the first.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Passes over the sequences per throughput row (median), "
                                "the rows compared alternating pass by pass.")
_HOST_ONLY = flags.DEFINE_bool("host_only", False, "Time the host path alone, the network replaced by an "
                               "instant stand-in (also --host-only).")
_JSON = flags.DEFINE_string("json", None, "Write the rows as JSON here.")


def _write_jpeg_sequences(root: str, count: int, num_frames: int, size: tuple[int, int]):
  import cv2  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from data_pipelines import synthetic  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  sequences = []
  for i in range(count):
    frames, boxes = synthetic.render_sequence(rng, num_frames, size)
    paths = [os.path.join(root, f"seq{i}_{t:05d}.jpg") for t in range(num_frames)]
    for path, frame in zip(paths, frames):
      if not cv2.imwrite(path, frame, [cv2.IMWRITE_JPEG_QUALITY, synthetic.JPEG_QUALITY]):
        raise OSError(f"cannot write {path}")
    sequences.append((f"seq{i}", paths, boxes[0]))
  return sequences


def _interleaved(passes: dict, repeats: int) -> dict:
  """`{name: fn() -> step logs}` run alternately `repeats` times: `{name: (median wall seconds, median
  process CPU seconds (all threads), step logs)}`."""
  seconds = {name: [] for name in passes}
  cpu_seconds = {name: [] for name in passes}
  logs = {name: [] for name in passes}
  for _ in range(repeats):
    for name, fn in passes.items():
      start, cpu_start = time.perf_counter(), time.process_time()
      logs[name].extend(fn())
      seconds[name].append(time.perf_counter() - start)
      cpu_seconds[name].append(time.process_time() - cpu_start)
  return {name: (statistics.median(seconds[name]), statistics.median(cpu_seconds[name]), logs[name])
          for name in passes}


def _idle_ms(step_log) -> float | None:
  gaps = [(b[0] - a[1]) * 1e3 for a, b in zip(step_log, step_log[1:]) if b[0] > a[1]]
  return statistics.median(gaps) if gaps else None


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from fartrack_jax import model as model_lib  # pylint: disable=g-import-not-at-top
  from scripts.benchmarks import serial_tracking  # pylint: disable=g-import-not-at-top
  from data_pipelines import crops as crop_lib  # pylint: disable=g-import-not-at-top
  from fartrack_jax.tracking import loop, tracker as trk  # pylint: disable=g-import-not-at-top
  try:
    width, height = (int(v) for v in _RESOLUTION.value.lower().split("x"))
  except ValueError:
    raise SystemExit(f"--resolution must be WxH, e.g. 1280x720, got {_RESOLUTION.value!r}") from None
  threads = [int(t) for t in _THREADS.value]
  batches = [int(b) for b in _BATCHES.value]
  device = timing.jax_device_name()
  tmp = tempfile.TemporaryDirectory()
  print(f"writing {_NUM_SEQUENCES.value} x {_NUM_FRAMES.value} JPEG frames of {width}x{height}", flush=True)
  sequences = _write_jpeg_sequences(tmp.name, _NUM_SEQUENCES.value, _NUM_FRAMES.value, (width, height))
  frames = len(sequences) * _NUM_FRAMES.value
  common = {"resolution": f"{width}x{height}", "device": device}
  rows = []

  if _HOST_ONLY.value:
    config = importlib.import_module("configs.fartrack_sparse").get_config(f"variant={_VARIANTS.value[0]}")
    for batch in batches:
      stand_in = serial_tracking.StandInTracker(config, batch=batch)
      passes = {n: (lambda n=n: [loop.track_sequences(stand_in, sequences, threads=n)]) for n in threads}
      passes["serial"] = lambda: [serial_tracking.track_sequences_serial(stand_in, sequences)]
      timed = _interleaved(passes, _REPEATS.value)
      for name, (seconds, cpu_seconds, _) in timed.items():
        mode, n = ("host serial", 1) if name == "serial" else ("host", name)
        rows.append({**common, "mode": mode, "batch": batch, "threads": n, "frames_per_s": frames / seconds,
                     "frames_per_cpu_s": frames / cpu_seconds})
        print(f"host path, batch {batch}, {mode}, {n} threads: {frames / seconds:.1f} frames/s, "
              f"{frames / cpu_seconds:.1f} frames per CPU second", flush=True)
    print()
    timing.report(rows, ["mode", "batch", "threads", "frames_per_s", "frames_per_cpu_s", "resolution",
                            "device"], _JSON.value)
    return

  for variant in _VARIANTS.value:
    config = importlib.import_module("configs.fartrack_sparse").get_config(f"variant={variant}")
    params = model_lib.init_params(model_lib.build_model(config), jax.random.key(0))
    tracker = trk.BatchTracker(config, params, batch=1, capacity=256)
    tc = tracker.tc
    path, box = sequences[0][1][1], [float(v) for v in sequences[0][2]]
    frame = loop.read_rgb(path)
    search, factor = crop_lib.sample_target(frame, box, tc.search_factor, tc.search_size)
    template, _ = crop_lib.sample_target(frame, box, tc.template_factor, tc.template_size)
    tracker.start({0: template})
    args = (search[None], template[None], np.array([False]), np.array([factor], np.float32))
    step = timing.time_fn(lambda: tracker.step(*args), _RUNS.value, _WARMUP.value, lambda out: out)

    def whole_frame():
      image = loop.read_rgb(path)
      s, f = crop_lib.sample_target(image, box, tc.search_factor, tc.search_size)
      t, _ = crop_lib.sample_target(image, box, tc.template_factor, tc.template_size)
      crop_box, _ = tracker.step(s[None], t[None], np.array([False]), np.array([f], np.float32))
      return crop_lib.clip_box(crop_lib.map_box_back(crop_box[0], box, f, tc.search_size), height, width, 10)

    full = timing.time_fn(whole_frame, _RUNS.value, _WARMUP.value, lambda out: out)
    common_v = {**common, "variant": variant, "precision": "float32"}
    rows.append({**common_v, "measure": "step latency (batch 1)", **step})
    rows.append({**common_v, "measure": "frame incl. decode + crops (batch 1)", **full})
    print(f"{variant}: step {step['median_ms']:.1f} ms, frame {full['median_ms']:.1f} ms", flush=True)
    for batch in batches:
      batched = trk.BatchTracker(config, params, batch=batch, capacity=_NUM_FRAMES.value)
      loop.track_sequences(batched, sequences[:batch])  # compile
      step_args = (np.repeat(search[None], batch, 0), np.repeat(template[None], batch, 0),
                   np.zeros((batch,), bool), np.full((batch,), factor, np.float32))
      step_ms = []

      def run(loop, **kwargs):
        log = []
        loop(batched, sequences, step_log=log, **kwargs)
        return [log]

      def steps():  # the step alone at this batch, timed between the passes it is compared with
        step_ms.append(timing.time_fn(lambda: batched.step(*step_args), _RUNS.value, 2,
                                         lambda out: out)["median_ms"])
        return []

      timed = _interleaved({"step": steps, "pipelined": lambda: run(loop.track_sequences, threads=threads[0]),
                            "serial": lambda: run(serial_tracking.track_sequences_serial)}, _REPEATS.value)
      step_rate = batch * 1e3 / statistics.median(step_ms)
      rows.append({**common_v, "measure": f"step (batch {batch})", "median_ms": statistics.median(step_ms),
                   "frames_per_s": step_rate})
      for name in ("pipelined", "serial"):
        seconds, _, logs = timed[name]
        fps = frames / seconds
        row = {**common_v, "measure": f"throughput {name} (batch {batch})", "frames_per_s": fps,
               "of_step_rate": fps / step_rate,
               "device_idle_ms": statistics.median(i for i in map(_idle_ms, logs) if i is not None),
               "threads": threads[0] if name == "pipelined" else 1, "frames": frames}
        rows.append(row)
        print(f"{variant}: batch {batch}, {name}: {fps:.1f} frames/s = {fps / step_rate:.2f} of the step's "
              f"{step_rate:.1f}, device idle {row['device_idle_ms']:.1f} ms/step", flush=True)
  print()
  timing.report(rows, ["variant", "measure", "median_ms", "min_ms", "frames_per_s", "of_step_rate",
                          "device_idle_ms", "threads", "resolution", "device"], _JSON.value)


if __name__ == "__main__":
  cli.run(main)
