"""The pipelined tracking loop: sequences through a tracker's slots, frames read and cropped on the host while
the device runs the previous step.

`track_sequences` drives any tracker with `BatchTracker`'s host protocol (`tracker.py`): `batch`, `tc` (its
`TrackerConfig`), `start(slots_templates)` and `step_async(search, template, append, resize_factors)`.
"""

from __future__ import annotations

import collections
from concurrent import futures
import dataclasses
import os
import time
from typing import Any

import cv2
import numpy as np

from data_pipelines import crops as crop_lib


@dataclasses.dataclass
class Slot:
  """Host state of one running sequence."""
  key: Any
  frames: Any
  index: int = 0
  box: list = dataclasses.field(default_factory=list)
  pending_template: np.ndarray | None = None
  reads: Any = None       # the pipelined loop's `_Reads`
  image: Any = None       # the pipelined loop's frame being tracked
  started: float = 0.0
  boxes: list = dataclasses.field(default_factory=list)
  times: list = dataclasses.field(default_factory=list)


def read_rgb(path: str) -> np.ndarray:
  """The image at `path` as RGB uint8 [H, W, 3]; FileNotFoundError naming it when it cannot be read."""
  image = cv2.imread(path)
  if image is None:
    raise FileNotFoundError(f"cannot read image {path}")
  return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def deliver(slot, results: dict, on_done, progress) -> None:
  """A finished sequence's boxes and times to `on_done` (or into `results`), then `progress`."""
  boxes, times = np.asarray(slot.boxes, np.float64), np.asarray(slot.times, np.float64)
  if on_done is None:
    results[slot.key] = (boxes, times)
  else:
    on_done(slot.key, boxes, times)
  if progress is not None:
    progress(slot.key, len(slot.boxes))


def track_sequences(tracker, sequences, on_done=None, read_image=read_rgb, progress=None,
                    threads: int | None = None, prefetch: int = 2, step_log=None):
  """Tracks `sequences` (iterable of `(key, frames, init_box)`; frames: paths or arrays) `tracker.batch`
  at a time, refilling a slot with the next sequence as soon as one ends.

  Calls `on_done(key, boxes [N, 4] float64 xywh, times [N] s)` per finished sequence (in completion order)
  and returns `{key: (boxes, times)}` when `on_done` is None. Frame 0's box is the initial box; a frame's
  time is the time between two step results divided by the active sequences.

  Pipelined, with the boxes of the serial loop (`scripts/benchmarks/serial_tracking.py`: the same crops of
  the same frames go into the same steps): a pool of `threads` (default: the CPU count) decodes each sequence's next `prefetch` frames and
  the first frames of the sequences due next; as soon as a step's boxes arrive, every slot's template crop
  (of the frame just tracked) and search crop (of the next frame) are cut at once, in the pool and the
  calling thread (which takes one share, so a step of one or two crops pays no hand-over); the next step
  is dispatched without waiting for it, and the host hands out finished sequences and queues reads while it
  runs. A frame that cannot be read raises its error here (naming the file), after the sequences finished
  before it were handed out. `step_log` gets `(dispatched, ready)` perf_counter times per step.
  """
  tc = tracker.tc
  tz, tx = tc.template_size, tc.search_size
  queue = iter(sequences)
  slots: list[Slot | None] = [None] * tracker.batch
  upcoming = collections.deque()   # the next sequences, their first frames being read
  finished = []                    # sequences to hand out while the next step runs
  results = {}
  threads = threads or os.cpu_count() or 1
  pool = futures.ThreadPoolExecutor(threads, thread_name_prefix="track")

  def load(frame):
    return read_image(frame) if isinstance(frame, str) else frame

  def top_up():
    while len(upcoming) < tracker.batch:
      item = next(queue, None)
      if item is None:
        return
      key, frames, init_box = item
      reads = _Reads(pool, frames, load)
      reads.ahead(min(2, len(frames)))
      upcoming.append((key, frames, init_box, reads))

  def hand_out():
    while finished:
      deliver(finished.pop(0), results, on_done, progress)

  try:
    top_up()
    in_flight = None  # (crop boxes of the step running, its active slots, resize factors)
    last_ready = time.perf_counter()
    while True:
      search = np.zeros((tracker.batch, tx, tx, 3), np.uint8)
      template = np.zeros((tracker.batch, tz, tz, 3), np.uint8)
      append = np.zeros((tracker.batch,), bool)
      factors = np.ones((tracker.batch,), np.float64)  # float64 on the host, as the original's Python floats
      starts = {}
      crops = []  # (image, box, factor, size, where the crop goes)
      if in_flight is not None:
        crop_box, active, step_factors = in_flight
        crop_boxes = np.asarray(crop_box)
        ready = time.perf_counter()
        if step_log is not None:
          step_log[-1] = (step_log[-1][0], ready)
        per_frame, last_ready = (ready - last_ready) / len(active), ready
        for i in active:
          slot = slots[i]
          height, width = slot.image.shape[:2]
          new_box = crop_lib.map_box_back(crop_boxes[i], slot.box, float(step_factors[i]), tx)
          slot.box = crop_lib.clip_box(new_box, height, width, margin=tc.margin)
          slot.boxes.append(list(slot.box))
          slot.times.append(per_frame)
          slot.index += 1
          if slot.index == len(slot.frames):
            finished.append(slot)
            slots[i] = None
          else:
            crops.append((slot.image, slot.box, tc.template_factor, tz, (template, None, i)))
            append[i] = True
      new_slots = []
      for i in range(tracker.batch):
        while slots[i] is None:
          top_up()
          if not upcoming:
            break
          key, frames, init_box, reads = upcoming.popleft()
          slot = Slot(key, frames, 1, [float(v) for v in init_box])
          slot.reads, slot.started = reads, time.perf_counter()
          slot.boxes.append(list(slot.box))
          first = reads.get(0)
          if len(frames) == 1:
            slot.times.append(time.perf_counter() - slot.started)
            finished.append(slot)
            continue
          slots[i] = slot
          new_slots.append(i)
          crops.append((first, slot.box, tc.template_factor, tz, (starts, None, i)))
      active = [i for i, s in enumerate(slots) if s is not None]
      if not active:
        break
      for i in active:
        slot = slots[i]
        slot.image = slot.reads.get(slot.index)
        crops.append((slot.image, slot.box, tc.search_factor, tx, (search, factors, i)))
      _cut(pool, crops, threads)
      if new_slots:
        for i in new_slots:
          slots[i].times.append(time.perf_counter() - slots[i].started)
        tracker.start(starts)
      if step_log is not None:
        step_log.append((time.perf_counter(), None))
      crop_box, _ = tracker.step_async(search, template, append, factors)
      in_flight = (crop_box, active, factors)
      # While the step runs: hand out finished sequences, read ahead.
      hand_out()
      for i in active:
        slots[i].reads.ahead(slots[i].index + 1 + prefetch)
      top_up()
  finally:
    pool.shutdown(wait=True, cancel_futures=True)
    hand_out()
  return results


def _cut(pool, crops, threads: int, per_thread: int = 2) -> None:
  """Cuts `crops` (`(image, box, factor, size, (crops_out, factors_out, index))`) with `crop.sample_target`
  into their outputs, in up to `threads` shares of at least `per_thread` crops: the calling thread cuts the
  first share itself, so that a step with a crop or two pays no hand-over to the pool."""

  def cut(share):
    for image, box, factor, size, (out, factors_out, index) in share:
      out[index], resize_factor = crop_lib.sample_target(image, box, factor, size)
      if factors_out is not None:
        factors_out[index] = resize_factor

  shares = max(1, min(threads, len(crops) // per_thread))
  bounds = [len(crops) * k // shares for k in range(shares + 1)]
  jobs = [pool.submit(cut, crops[lo:hi]) for lo, hi in zip(bounds[1:-1], bounds[2:])]
  cut(crops[bounds[0]:bounds[1]])
  for job in jobs:
    job.result()


class _Reads:
  """One sequence's frames, read in the pool ahead of their use."""

  def __init__(self, pool, frames, load):
    self._pool, self._frames, self._load = pool, frames, load
    self._jobs = {}
    self._next = 0

  def ahead(self, end: int) -> None:
    """Queues the reads of the frames before `end`."""
    while self._next < min(end, len(self._frames)):
      self._jobs[self._next] = self._pool.submit(self._load, self._frames[self._next])
      self._next += 1

  def get(self, index: int):
    self.ahead(index + 1)
    return self._jobs.pop(index).result()
