"""Offline evaluation: track a benchmark's sequences in batches and write pytracking result files.

Results go to `<results_dir>/<seq>.txt` (one `x\ty\tw\th` line per frame, integers as pytracking's
`np.savetxt(fmt='%d')` writes them, so scores compare with the original's) and `<seq>_time.txt` (seconds per
frame; in a batched run, the batch step's time divided by the active sequences). Each file is written
atomically when its sequence ends; a sequence whose two files exist is skipped, so a killed run resumes
where it stopped.
"""

from __future__ import annotations

import math
import os
import sys
import time

import numpy as np

from fartrack_jax import storage
from fartrack_jax.tracking import loop
from fartrack_jax.tracking import tracker as trk


def params_for(config, checkpoint: str, seed: int = 0):
  """Params from an orbax params directory (scripts/convert_torch.py, scripts/export_variant.py), a training
  run's workdir or its `checkpoints` folder (scripts/train.py: the latest step), or an original `.pth.tar`."""
  from fartrack_jax import checkpoints  # pylint: disable=g-import-not-at-top
  if storage.as_path(checkpoint).is_dir():
    params, meta = checkpoints.load_any_params(checkpoint)
    checkpoints.check_params_fit(params, config, checkpoint, meta)
    return params
  import jax  # pylint: disable=g-import-not-at-top
  from fartrack_jax import convert, model as model_lib, torch_io  # pylint: disable=g-import-not-at-top
  _, sd = torch_io.load_state_dict(checkpoint)
  init = model_lib.init_params(model_lib.build_model(config), jax.random.key(seed))
  params, _ = convert.torch_to_flax(sd, model_lib.ModelSpec.from_config(config), init)
  return params


def process_share(sequences, index: int, count: int) -> list:
  """The sequences process `index` of `count` tracks: longest first, each to the process with the fewest
  frames so far (ties: the lowest index), so every process gets a similar number of frames; disjoint, and
  together all of `sequences`, in the same order as given. Every process computes the same split."""
  if count == 1:
    return list(sequences)
  load = [0] * count
  owner = {}
  for i in sorted(range(len(sequences)), key=lambda i: (-len(sequences[i].frames), i)):
    p = min(range(count), key=lambda p: (load[p], p))
    owner[i] = p
    load[p] += len(sequences[i].frames)
  return [s for i, s in enumerate(sequences) if owner[i] == index]


def result_paths(results_dir: str, name: str):
  """`epath.Path`s of a sequence's boxes and times files (`results_dir` may be a bucket)."""
  folder = storage.as_path(results_dir)
  return folder / f"{name}.txt", folder / f"{name}_time.txt"


def is_complete(results_dir: str, name: str, num_frames: int) -> bool:
  boxes_path, time_path = result_paths(results_dir, name)
  if not (boxes_path.is_file() and time_path.is_file()):
    return False
  return sum(1 for line in boxes_path.read_text().splitlines() if line.strip()) == num_frames


def write_results(results_dir: str, name: str, boxes: np.ndarray, times: np.ndarray) -> None:
  boxes_path, time_path = result_paths(results_dir, name)
  box_text = "".join("\t".join("%d" % v for v in row) + "\n" for row in np.asarray(boxes, np.float64))
  time_text = "".join("%f\n" % t for t in np.asarray(times, np.float64))
  # Times first: a boxes file is the mark of a finished sequence.
  storage.write_text_atomic(time_path, time_text)
  storage.write_text_atomic(boxes_path, box_text)


# Longer sequences keep their template memory on the host (`BatchTracker(template_store="host")`): at
# about 37 KB per frame, 1024 frames are 38 MB per slot on the device, an 11k-frame LaSOT video 0.4 GB.
DEVICE_STORE_MAX_FRAMES = 1024


def capacity_for(lengths, multiple: int = 256) -> int:
  """Template-memory capacity (a static shape): the longest sequence, rounded up so that datasets of
  similar lengths share one compiled step."""
  return int(math.ceil(max(lengths) / multiple) * multiple)


def evaluate(config, params, sequences, results_dir: str, batch: int = 1, mesh=None, log=print,
             threads: int | None = None, template_store: str = "auto") -> dict:
  """Tracks the `sequences` (reader `Sequence`s) not yet complete in `results_dir`, reading and cropping
  frames in `threads` host threads (default: the CPU count). `template_store` "device" or "host" (see
  `tracker.BatchTracker`); "auto": on the device up to `DEVICE_STORE_MAX_FRAMES`, else on the host.
  Returns counts, seconds and frames/s."""
  storage.as_path(results_dir).mkdir(parents=True, exist_ok=True)
  todo = [s for s in sequences if not is_complete(results_dir, s.name, len(s.frames))]
  skipped = len(sequences) - len(todo)
  if skipped:
    log(f"{skipped} of {len(sequences)} sequences already complete in {results_dir}: skipped")
  if not todo:
    return {"tracked": 0, "skipped": skipped, "frames": 0, "seconds": 0.0, "frames_per_s": 0.0}
  capacity = capacity_for(len(s.frames) for s in todo)
  if template_store == "auto":
    template_store = "device" if capacity <= DEVICE_STORE_MAX_FRAMES else "host"
  if template_store == "host":
    log(f"template memory on the host (sequences up to {capacity} frames)")
  tracker = trk.BatchTracker(config, params, batch=batch, capacity=capacity, mesh=mesh,
                             template_store=template_store)
  total_frames = sum(len(s.frames) for s in todo)
  state = {"done": 0, "frames": 0, "start": time.perf_counter()}

  def on_done(name, boxes, times):
    write_results(results_dir, name, boxes, times)
    state["done"] += 1
    state["frames"] += len(boxes)
    elapsed = time.perf_counter() - state["start"]
    fps = state["frames"] / max(elapsed, 1e-9)
    eta = (total_frames - state["frames"]) / max(fps, 1e-9)
    log(f"[{state['done']}/{len(todo)}] {name}: {len(boxes)} frames | {fps:.1f} frames/s | ETA {eta:.0f} s")

  loop.track_sequences(tracker, ((s.name, s.frames, s.init_box) for s in todo), on_done=on_done,
                      threads=threads)
  elapsed = time.perf_counter() - state["start"]
  fps = state["frames"] / max(elapsed, 1e-9)
  log(f"tracked {len(todo)} sequences, {state['frames']} frames in {elapsed:.1f} s "
      f"({fps:.1f} frames/s, batch {batch})")
  return {"tracked": len(todo), "skipped": skipped, "frames": state["frames"], "seconds": elapsed,
          "frames_per_s": fps}


def _read_result_boxes(path) -> np.ndarray:
  rows = []
  for number, line in enumerate(storage.as_path(path).read_text().splitlines(), 1):
    if not line.strip():
      continue
    parts = line.replace(",", "\t").split()
    if len(parts) != 4:
      raise ValueError(f"{path}:{number}: expected 4 values, got {line.strip()!r}")
    rows.append([int(float(v)) for v in parts])
  return np.asarray(rows, np.int64)


def package_submission(results_dir: str, dataset: str, sequences, output_zip: str) -> str:
  """The evaluation servers' formats, zipped: GOT-10k test `<seq>/<seq>_001.txt` (comma-separated
  integers) plus `<seq>/<seq>_time.txt`; TrackingNet `<seq>.txt` (comma-separated integers). Every listed
  sequence must have a complete result. Written to a temporary file, then renamed."""
  import io  # pylint: disable=g-import-not-at-top
  import zipfile  # pylint: disable=g-import-not-at-top
  if dataset not in ("got10k_test", "trackingnet"):
    raise ValueError(f"submission packaging is for got10k_test and trackingnet, not {dataset!r}")
  missing = [s.name for s in sequences if not is_complete(results_dir, s.name, len(s.frames))]
  if missing:
    raise ValueError(f"{len(missing)} sequences have no complete result in {results_dir}, e.g. {missing[:5]}")
  buffer = io.BytesIO()  # a few KB per sequence: built in memory, then written where it goes (a bucket too)
  with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
    for s in sequences:
      boxes_path, time_path = result_paths(results_dir, s.name)
      text = "".join(",".join(str(v) for v in row) + "\n" for row in _read_result_boxes(boxes_path))
      if dataset == "got10k_test":
        zf.writestr(f"{s.name}/{s.name}_001.txt", text)
        zf.writestr(f"{s.name}/{s.name}_time.txt", time_path.read_text())
      else:
        zf.writestr(f"{s.name}.txt", text)
  output_zip = os.fspath(storage.as_path(output_zip))
  storage.write_bytes_atomic(output_zip, buffer.getvalue())
  return output_zip


if __name__ == "__main__":
  sys.exit("use scripts/evaluate.py")
