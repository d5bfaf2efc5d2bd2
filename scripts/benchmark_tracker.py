r"""Tracker speed: per-frame step latency (batch 1) and offline throughput with batched sequences.

  python scripts/benchmark_tracker.py [--variants tiny,nano,pico] [--batches 1,2,4] [--runs 50] \
      [--num-sequences 8] [--num-frames 40] [--json FILE]

Per variant, on random weights:
  - step: the jitted per-frame step alone (memory update, template sampling, network, decoding) at batch 1,
    crops prepared beforehand, `--runs` calls after warm-up, each synced with block_until_ready;
  - frame: a whole tracked frame at batch 1: two OpenCV crops on the host, the step, the box mapped back;
  - throughput: frames/s of `track_sequences` over `--num-sequences` synthetic sequences (in memory, so
    no JPEG decoding is timed) for each batch size in --batches, compile excluded (one warm-up pass).
Float32. Prints a table and writes JSON rows with median/min ms or frames/s.
"""

import importlib
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # pylint: disable=g-import-not-at-top

from fartrack_jax import benchmark
from fartrack_jax import cli

_VARIANTS = flags.DEFINE_list("variants", ["tiny", "nano", "pico"], "Variants of configs/fartrack_sparse.py.")
_BATCHES = flags.DEFINE_list("batches", ["1", "2", "4"], "Batch sizes (sequences at once) for throughput.")
_RUNS = flags.DEFINE_integer("runs", 50, "Timed calls for the latency rows.")
_WARMUP = flags.DEFINE_integer("warmup", 5, "Untimed calls first.")
_NUM_SEQUENCES = flags.DEFINE_integer("num_sequences", 8, "Synthetic sequences for throughput "
                                      "(also --num-sequences).")
_NUM_FRAMES = flags.DEFINE_integer("num_frames", 40, "Frames per synthetic sequence (also --num-frames).")
_JSON = flags.DEFINE_string("json", None, "Write the rows as JSON here.")


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from data_pipelines import synthetic  # pylint: disable=g-import-not-at-top
  from fartrack_jax import model as model_lib  # pylint: disable=g-import-not-at-top
  from fartrack_jax.tracking import crop as crop_lib, tracker as trk  # pylint: disable=g-import-not-at-top
  device = benchmark.jax_device_name()
  rng = np.random.default_rng(0)
  sequences = []
  for i in range(_NUM_SEQUENCES.value):
    frames, boxes = synthetic.render_sequence(rng, _NUM_FRAMES.value, (320, 240))
    sequences.append((f"seq{i}", frames, boxes[0]))
  rows = []
  for variant in _VARIANTS.value:
    config = importlib.import_module("configs.fartrack_sparse").get_config(f"variant={variant}")
    params = model_lib.init_params(model_lib.build_model(config), jax.random.key(0))
    tracker = trk.BatchTracker(config, params, batch=1, capacity=256)
    tc = tracker.tc
    frame, box = sequences[0][1][1], [float(v) for v in sequences[0][2]]
    search, factor = crop_lib.sample_target(frame, box, tc.search_factor, tc.search_size)
    template, _ = crop_lib.sample_target(frame, box, tc.template_factor, tc.template_size)
    tracker.start({0: template})
    args = (search[None], template[None], np.array([False]), np.array([factor], np.float32))
    step = benchmark.time_fn(lambda: tracker.step(*args), _RUNS.value, _WARMUP.value, lambda out: out)

    def whole_frame():
      s, f = crop_lib.sample_target(frame, box, tc.search_factor, tc.search_size)
      t, _ = crop_lib.sample_target(frame, box, tc.template_factor, tc.template_size)
      crop_box, _ = tracker.step(s[None], t[None], np.array([False]), np.array([f], np.float32))
      return crop_lib.clip_box(crop_lib.map_box_back(crop_box[0], box, f, tc.search_size), 240, 320, 10)

    full = benchmark.time_fn(whole_frame, _RUNS.value, _WARMUP.value, lambda out: out)
    common = {"variant": variant, "device": device, "precision": "float32"}
    rows.append({**common, "measure": "step (batch 1)", **step})
    rows.append({**common, "measure": "frame incl. crops (batch 1)", **full})
    print(f"{variant}: step {step['median_ms']:.1f} ms, frame {full['median_ms']:.1f} ms", flush=True)
    for batch in (int(b) for b in _BATCHES.value):
      batched = trk.BatchTracker(config, params, batch=batch, capacity=_NUM_FRAMES.value)
      trk.track_sequences(batched, sequences[:batch])  # compile
      start = time.perf_counter()
      trk.track_sequences(batched, sequences)
      seconds = time.perf_counter() - start
      fps = len(sequences) * _NUM_FRAMES.value / seconds
      rows.append({**common, "measure": f"throughput (batch {batch})", "frames_per_s": fps,
                   "sequences": len(sequences), "frames": len(sequences) * _NUM_FRAMES.value})
      print(f"{variant}: batch {batch}: {fps:.1f} frames/s", flush=True)
  print()
  benchmark.report(rows, ["variant", "measure", "median_ms", "min_ms", "frames_per_s", "device"], _JSON.value)


if __name__ == "__main__":
  cli.run(main)
