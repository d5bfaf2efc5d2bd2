"""The tracking loop without the pipelining, and a tracker without the network: the reference the pipelined
loop (`fartrack_jax.tracking.loop.track_sequences`) must match box for box, and the baselines
`scripts/benchmark_tracker.py` times it against."""

from __future__ import annotations

import time

import numpy as np

from data_pipelines import crops as crop_lib
from fartrack_jax.tracking import loop
from fartrack_jax.tracking import tracker as tracker_lib


class StandInTracker:
  """`BatchTracker`'s host protocol with the network replaced by an instant answer, for timing the host
  path alone (decoding, crops, box mapping): every step returns the search crop's centre with the box's
  area kept as a square, so the box stays put and every crop costs what a real one does."""

  def __init__(self, config, batch: int, capacity: int = 1):
    self.tc = tracker_lib.TrackerConfig.from_config(config, capacity)
    self.batch = batch

  def start(self, slots_templates) -> None:
    del slots_templates

  def step_async(self, search, template, append, resize_factor):
    del search, template, append
    side = self.tc.search_size / np.asarray(resize_factor, np.float64)  # the crop's side in image pixels
    size = side / self.tc.search_factor
    return np.stack([side / 2, side / 2, size, size], axis=-1).astype(np.float32), None

  def step(self, search, template, append, resize_factor):
    return self.step_async(search, template, append, resize_factor)


def track_sequences_serial(tracker, sequences, on_done=None, read_image=loop.read_rgb,
                           progress=None, step_log=None):
  """`track_sequences` in one thread, each step awaited before any host work for the next frame starts:
  the reference the pipelined loop must match box for box, and the baseline its benchmark compares with.
  `step_log` gets `(dispatched, ready)` perf_counter times per step."""
  tc = tracker.tc
  queue = iter(sequences)
  slots: list[loop.Slot | None] = [None] * tracker.batch
  results = {}

  def load(frame):
    return read_image(frame) if isinstance(frame, str) else frame

  def refill():
    starts = {}
    for i in range(tracker.batch):
      while slots[i] is None:
        item = next(queue, None)
        if item is None:
          break
        key, frames, init_box = item
        start = time.perf_counter()
        image = load(frames[0])
        z0, _ = crop_lib.sample_target(image, init_box, tc.template_factor, tc.template_size)
        slot = loop.Slot(key, frames, 1, [float(v) for v in init_box])
        slot.boxes.append(list(slot.box))
        slot.times.append(time.perf_counter() - start)
        if len(frames) == 1:
          loop.deliver(slot, results, on_done, progress)
          continue
        slots[i] = slot
        starts[i] = z0
    if starts:
      tracker.start(starts)

  refill()
  tz, tx = tc.template_size, tc.search_size
  while any(s is not None for s in slots):
    start = time.perf_counter()
    search = np.zeros((tracker.batch, tx, tx, 3), np.uint8)
    template = np.zeros((tracker.batch, tz, tz, 3), np.uint8)
    append = np.zeros((tracker.batch,), bool)
    factors = np.ones((tracker.batch,), np.float64)  # float64 on the host, as the original's Python floats
    images = {}
    for i, slot in enumerate(slots):
      if slot is None:
        continue
      image = load(slot.frames[slot.index])
      images[i] = image
      search[i], factors[i] = crop_lib.sample_target(image, slot.box, tc.search_factor, tx)
      if slot.pending_template is not None:
        template[i], append[i] = slot.pending_template, True
    dispatched = time.perf_counter()
    crop_boxes, _ = tracker.step(search, template, append, factors)
    if step_log is not None:
      step_log.append((dispatched, time.perf_counter()))
    elapsed = time.perf_counter() - start
    active = [i for i, s in enumerate(slots) if s is not None]
    for i in active:
      slot = slots[i]
      image = images[i]
      height, width = image.shape[:2]
      new_box = crop_lib.map_box_back(crop_boxes[i], slot.box, float(factors[i]), tx)
      slot.box = crop_lib.clip_box(new_box, height, width, margin=tc.margin)
      slot.boxes.append(list(slot.box))
      slot.times.append(elapsed / len(active))
      slot.index += 1
      if slot.index == len(slot.frames):
        loop.deliver(slot, results, on_done, progress)
        slots[i] = None
      else:
        slot.pending_template, _ = crop_lib.sample_target(image, slot.box, tc.template_factor, tz)
    refill()
  return results
