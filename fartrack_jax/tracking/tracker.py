"""The FARTrack trackers: a jitted per-frame step over a device-resident template memory.

Per frame the host sends two uint8 crops (the search crop of this frame around the previous box, and the
template crop of the previous frame around the previous box) and gets the box back; the template memory,
its keep masks and the template sampling stay on the device (or, for long sequences, the memory stays on
the host and the step gets the selected templates: `template_store="host"`). The step is written for one
sequence and vmapped over a batch of sequences (`BatchTracker`), which is also how a single sequence runs
(batch 1).

What the original's tracker (`lib/test/tracker/fartrack_sparse.py`) does, and this reproduces:
  - memory: every frame's template crop (factor 2 around the frame's box) is stored; the initial template
    is slot 0. Before 5 templates exist the slots repeat the oldest ("mode1": 0,0,0,1,2); afterwards
    `template_update_sampling("exponential")` picks indices [0, int((S-1)(1-0.7^i)) for i=1..3, S-1].
  - masks: each forward ranks the newest slot's template tokens and returns 25/50/75/90 %-pruned masks; the
    25 % one is stored for that template and applied whenever it fills a slot later; the newest template
    is always whole.
  - box: mean of the argmax and expectation decodings, x0y0x1y1 -> centre/size, times
    search_size / resize_factor, mapped back around the previous box and clipped with a 10 px margin (the
    last two on the host in float64, as the original does them in Python floats).
The frame-level and distill trackers (`lib/test/tracker/fartrack.py`, `fartrack_distill.py`, for stage-1/2
checkpoints) are the same without masks, decoding the argmax alone as `bin / (bins - 1) - 0.5`; the config's
stage picks which.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

from fartrack_jax import model as model_lib
from fartrack_jax.tracking import crop as crop_lib
from fartrack_jax.tracking import sampling


class _HostTemplates:
  """One sequence's template store on the host: the templates (and 25 %-pruned masks) the selection can
  still pick. Selected indices never decrease as the store grows, so once `count >= T` the templates
  between 0 and `int((count - 1) * (1 - base))` are dropped (about 30 % of the history)."""

  def __init__(self, first: np.ndarray):
    self.templates = {0: first}
    self.masks = {}  # index -> [P_z] bool, set when the template stops being the newest
    self.count = 1
    self.min_kept = 1  # the lowest index above 0 still stored

  def append(self, template: np.ndarray, newest_mask: np.ndarray) -> None:
    self.masks[self.count - 1] = newest_mask
    self.templates[self.count] = template
    self.count += 1

  def selected(self, num_templates: int, base: float, tokens: int):
    """`([T, Hz, Wz, 3] uint8, [T, P_z] bool)`: the slots' templates and masks; the newest is whole."""
    idx = sampling.selection_row(self.count, num_templates, base)
    templates = np.stack([self.templates[i] for i in idx])
    masks = np.stack([self.masks[i] if i < self.count - 1 else np.ones((tokens,), bool) for i in idx])
    if self.count >= num_templates:
      lowest = idx[1]  # the smallest index above 0 this or any later selection can pick
      for i in range(self.min_kept, lowest):
        del self.templates[i]
        self.masks.pop(i, None)
      self.min_kept = max(self.min_kept, lowest)
    return templates, masks


@flax.struct.dataclass
class Memory:
  """One sequence's template memory (leading batch axis when batched)."""
  templates: jax.Array     # [C, Hz, Wz, 3] uint8: stored template crops
  masks: jax.Array         # [C, P_z] bool: 25 %-pruned keep mask of each stored template
  count: jax.Array         # int32: templates stored
  pending_mask: jax.Array  # [P_z] bool: mask from the last forward, stored with the next template


@dataclasses.dataclass(frozen=True)
class TrackerConfig:
  template_factor: float
  search_factor: float
  template_size: int
  search_size: int
  mean: tuple[float, float, float]
  std: tuple[float, float, float]
  capacity: int
  margin: float = 10.0
  sampling_base: float = 0.7

  @classmethod
  def from_config(cls, config, capacity: int) -> "TrackerConfig":
    return cls(template_factor=float(config.test.template_factor), search_factor=float(config.test.search_factor),
               template_size=int(config.test.template_size), search_size=int(config.test.search_size),
               mean=tuple(config.data.mean), std=tuple(config.data.std), capacity=int(capacity),
               sampling_base=float(config.test.get("template_sampling_base", 0.7)))


class BatchTracker:
  """Jitted tracker steps for `batch` sequences at once (slots), sharded over `mesh`'s first axis if given.

  Host protocol per slot: `start(slot, first template crop)` when a sequence begins; then every frame
  `step(...)` with the search crop and (from the second tracked frame on) the previous frame's template
  crop; the returned crop box goes through `crop.map_box_back` and `crop.clip_box`.

  `template_store="device"` keeps every slot's template memory on the device, `[B, capacity, Hz, Wz, 3]`
  uint8 (about 37 KB per frame and slot); `"host"` keeps it on the host (`capacity` is then no limit) and
  sends the T selected templates and their masks with each step instead: no device memory that grows with
  the sequence, for T times the template bytes per step. Same network inputs, same boxes.
  """

  def __init__(self, config, params, batch: int, capacity: int, mesh=None, template_store: str = "device"):
    self.config = config
    self.sparse = config.stage == "fartrack_sparse"
    self.spec = model_lib.ModelSpec.from_config(config)
    self.tc = TrackerConfig.from_config(config, capacity)
    self.batch = batch
    self.net = model_lib.build_model(config)
    self.table = jnp.asarray(sampling.selection_table(capacity, self.spec.num_templates, self.tc.sampling_base))
    s, tc = self.spec, self.tc
    shape = lambda *d: (batch,) + d
    data_sharding = replicated = None
    if mesh is not None:
      from jax.sharding import NamedSharding, PartitionSpec as P  # pylint: disable=g-import-not-at-top
      if batch % mesh.devices.size:
        raise ValueError(f"batch {batch} does not divide over {mesh.devices.size} devices")
      data_sharding = NamedSharding(mesh, P(mesh.axis_names[0]))
      replicated = NamedSharding(mesh, P())
    put = (lambda x: jax.device_put(x, data_sharding)) if mesh is not None else jnp.asarray
    self.params = jax.device_put(params, replicated) if mesh is not None else params
    self.template_store = template_store
    if template_store == "host":
      self.memory = None
      self._stores: list[_HostTemplates | None] = [None] * batch
      self._keep = None  # the last step's keep masks (device), the newest templates' masks
      self._put = put
      self._step = jax.jit(self._step_selected_impl)
      return
    if template_store != "device":
      raise ValueError(f"template_store must be 'device' or 'host', got {template_store!r}")
    self.memory = Memory(
        templates=put(np.zeros(shape(capacity, tc.template_size, tc.template_size, 3), np.uint8)),
        masks=put(np.ones(shape(capacity, s.tokens_per_template), bool)),
        count=put(np.zeros(shape(), np.int32)),
        pending_mask=put(np.ones(shape(s.tokens_per_template), bool)))
    self._put = put
    # Templates stored per slot, mirrored on the host so that a step checks the capacity without waiting
    # for the previous step's memory.
    self._count = np.zeros((batch,), np.int64)
    self._start = jax.jit(self._start_impl, donate_argnums=0)
    self._step = jax.jit(self._step_impl, donate_argnums=1)

  # ---- device functions (batched) ----
  def _start_impl(self, memory: Memory, template, do_start):
    """Slots with `do_start` forget their sequence and store `template` [B, Hz, Wz, 3] as template 0."""
    first = jnp.where(do_start[:, None, None, None], template, memory.templates[:, 0])
    return memory.replace(templates=memory.templates.at[:, 0].set(first),
                          count=jnp.where(do_start, 1, memory.count),
                          pending_mask=jnp.where(do_start[:, None], True, memory.pending_mask))

  def _normalize(self, crops_u8):
    mean = jnp.asarray(self.tc.mean, jnp.float32)
    std = jnp.asarray(self.tc.std, jnp.float32)
    return (crops_u8.astype(jnp.float32) / 255.0 - mean) / std

  def _step_one(self, params, memory: Memory, search, template, append, resize_factor):
    s = self.spec
    # Store the previous frame's template with the mask its predecessor got while it was the newest.
    count = memory.count
    idx = jnp.minimum(count, self.tc.capacity - 1)
    templates = memory.templates.at[idx].set(jnp.where(append, template, memory.templates[idx]))
    mask_idx = jnp.maximum(count - 1, 0)
    masks = memory.masks.at[mask_idx].set(jnp.where(append, memory.pending_mask, memory.masks[mask_idx]))
    count = count + append.astype(jnp.int32)
    slots = self.table[count]                                   # [T]
    slot_masks = jnp.where((slots < count - 1)[:, None], masks[slots], True)  # [T, P_z]
    crop_box, keep = self._forward(params, templates[slots], slot_masks, search, resize_factor)
    new_memory = Memory(templates=templates, masks=masks, count=count, pending_mask=keep[0])
    return new_memory, crop_box, keep

  def _forward(self, params, slot_templates_u8, slot_masks, search, resize_factor):
    """The network on one sequence's selected templates `[T, Hz, Wz, 3]` uint8 with their keep masks
    `[T, P_z]` (sparse stage) -> (crop box [4], keep masks [4, P_z])."""
    s = self.spec
    slot_templates = self._normalize(slot_templates_u8)          # [T, Hz, Wz, 3]
    if self.sparse:
      token_mask = jnp.concatenate([slot_masks.reshape(-1), jnp.ones((s.num_search_tokens + 4,), bool)])
      out = self.net.apply({"params": params}, slot_templates[None], self._normalize(search)[None],
                           token_mask=token_mask[None], prune_mode="track")
      x0, y0, x1, y1 = model_lib.decode_boxes(out["coord_logits"], s)[0]
      keep = out["keep_masks"][0]
    else:
      out = self.net.apply({"params": params}, slot_templates[None], self._normalize(search)[None])
      x0, y0, x1, y1 = model_lib.decode_argmax_boxes(out["coord_logits"], s)[0]
      keep = jnp.ones((len(s.track_prune_ratios), s.tokens_per_template), bool)
    w, h = x1 - x0, y1 - y0
    crop_box = (jnp.stack([x0 + w / 2, y0 + h / 2, w, h]) * self.tc.search_size) / resize_factor
    return crop_box, keep

  def _step_selected_impl(self, params, slot_templates, slot_masks, search, resize_factor):
    return jax.vmap(self._forward, in_axes=(None, 0, 0, 0, 0))(
        params, slot_templates, slot_masks, search, resize_factor)

  def _step_impl(self, params, memory, search, template, append, resize_factor):
    return jax.vmap(self._step_one, in_axes=(None, 0, 0, 0, 0, 0))(
        params, memory, search, template, append, resize_factor)

  # ---- host API ----
  def start(self, slots_templates: dict[int, np.ndarray]) -> None:
    """Begins new sequences in the given slots with their first template crops (uint8)."""
    tz = self.tc.template_size
    template = np.zeros((self.batch, tz, tz, 3), np.uint8)
    do_start = np.zeros((self.batch,), bool)
    if self.template_store == "host":
      for slot, crop in slots_templates.items():
        self._stores[slot] = _HostTemplates(np.array(crop, np.uint8))
      return
    for slot, crop in slots_templates.items():
      template[slot], do_start[slot] = crop, True
      self._count[slot] = 1
    self.memory = self._start(self.memory, self._put(template), self._put(do_start))

  def step_async(self, search: np.ndarray, template: np.ndarray, append: np.ndarray,
                 resize_factor: np.ndarray):
    """Dispatches one frame for every slot and returns at once: `(crop_boxes [B, 4] float32,
    keep_masks [B, 4, P_z])` as device arrays, ready when the step is."""
    if self.template_store == "host":
      return self._step_host_store(search, template, append, resize_factor)
    count = self._count + append.astype(np.int64)
    if np.any(count > self.tc.capacity):
      raise ValueError(f"template memory full ({self.tc.capacity} frames): raise the capacity")
    self._count = count
    self.memory, crop_box, keep = self._step(
        self.params, self.memory, self._put(search), self._put(template), self._put(append),
        self._put(resize_factor.astype(np.float32)))
    return crop_box, keep

  def _step_host_store(self, search, template, append, resize_factor):
    s, tz = self.spec, self.tc.template_size
    newest_masks = np.asarray(self._keep)[:, 0] if np.any(append) else None  # waits for the last step
    slot_templates = np.zeros((self.batch, s.num_templates, tz, tz, 3), np.uint8)
    slot_masks = np.ones((self.batch, s.num_templates, s.tokens_per_template), bool)
    for b, store in enumerate(self._stores):
      if append[b]:
        if store is None:
          raise ValueError(f"slot {b}: a template appended before start")
        store.append(np.array(template[b], np.uint8), newest_masks[b])
      if store is not None:
        slot_templates[b], slot_masks[b] = store.selected(s.num_templates, self.tc.sampling_base,
                                                          s.tokens_per_template)
    crop_box, self._keep = self._step(self.params, self._put(slot_templates), self._put(slot_masks),
                                      self._put(search), self._put(resize_factor.astype(np.float32)))
    return crop_box, self._keep

  def device_bytes_per_slot(self) -> int:
    """Device bytes a slot holds between steps (the template memory), or with `"host"` those it sends
    per step (the selected templates and masks)."""
    s, tz = self.spec, self.tc.template_size
    per_template = tz * tz * 3 + s.tokens_per_template
    if self.template_store == "host":
      return s.num_templates * per_template
    return self.tc.capacity * per_template + s.tokens_per_template + 4

  def step(self, search: np.ndarray, template: np.ndarray, append: np.ndarray, resize_factor: np.ndarray):
    """One frame for every slot. Returns `(crop_boxes [B, 4] float32, keep_masks [B, 4, P_z])` on the host."""
    crop_box, keep = self.step_async(search, template, append, resize_factor)
    return np.asarray(crop_box), np.asarray(keep)


class StandInTracker:
  """`BatchTracker`'s host protocol with the network replaced by an instant answer, for timing the host
  path alone (decoding, crops, box mapping): every step returns the search crop's centre with the box's
  area kept as a square, so the box stays put and every crop costs what a real one does."""

  def __init__(self, config, batch: int, capacity: int = 1):
    self.tc = TrackerConfig.from_config(config, capacity)
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


@dataclasses.dataclass
class _Slot:
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
  import cv2  # pylint: disable=g-import-not-at-top
  image = cv2.imread(path)
  if image is None:
    raise FileNotFoundError(f"cannot read image {path}")
  return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _deliver(slot, results: dict, on_done, progress) -> None:
  """A finished sequence's boxes and times to `on_done` (or into `results`), then `progress`."""
  boxes, times = np.asarray(slot.boxes, np.float64), np.asarray(slot.times, np.float64)
  if on_done is None:
    results[slot.key] = (boxes, times)
  else:
    on_done(slot.key, boxes, times)
  if progress is not None:
    progress(slot.key, len(slot.boxes))


def track_sequences(tracker: BatchTracker, sequences, on_done=None, read_image=read_rgb, progress=None,
                    threads: int | None = None, prefetch: int = 2, step_log=None):
  """Tracks `sequences` (iterable of `(key, frames, init_box)`; frames: paths or arrays) `tracker.batch`
  at a time, refilling a slot with the next sequence as soon as one ends.

  Calls `on_done(key, boxes [N, 4] float64 xywh, times [N] s)` per finished sequence (in completion order)
  and returns `{key: (boxes, times)}` when `on_done` is None. Frame 0's box is the initial box; a frame's
  time is the time between two step results divided by the active sequences.

  Pipelined, with the boxes of `track_sequences_serial` (the same crops of the same frames go into the same
  steps): a pool of `threads` (default: the CPU count) decodes each sequence's next `prefetch` frames and
  the first frames of the sequences due next; as soon as a step's boxes arrive, every slot's template crop
  (of the frame just tracked) and search crop (of the next frame) are cut at once, in the pool and the
  calling thread (which takes one share, so a step of one or two crops pays no hand-over); the next step
  is dispatched without waiting for it, and the host hands out finished sequences and queues reads while it
  runs. A frame that cannot be read raises its error here (naming the file), after the sequences finished
  before it were handed out. `step_log` gets `(dispatched, ready)` perf_counter times per step.
  """
  import collections  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  from concurrent import futures  # pylint: disable=g-import-not-at-top
  tc = tracker.tc
  tz, tx = tc.template_size, tc.search_size
  queue = iter(sequences)
  slots: list[_Slot | None] = [None] * tracker.batch
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
      _deliver(finished.pop(0), results, on_done, progress)

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
          slot = _Slot(key, frames, 1, [float(v) for v in init_box])
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


def track_sequences_serial(tracker: BatchTracker, sequences, on_done=None, read_image=read_rgb,
                           progress=None, step_log=None):
  """`track_sequences` in one thread, each step awaited before any host work for the next frame starts:
  the reference the pipelined loop must match box for box, and the baseline its benchmark compares with.
  `step_log` gets `(dispatched, ready)` perf_counter times per step."""
  import time  # pylint: disable=g-import-not-at-top
  tc = tracker.tc
  queue = iter(sequences)
  slots: list[_Slot | None] = [None] * tracker.batch
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
        slot = _Slot(key, frames, 1, [float(v) for v in init_box])
        slot.boxes.append(list(slot.box))
        slot.times.append(time.perf_counter() - start)
        if len(frames) == 1:
          _deliver(slot, results, on_done, progress)
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
        _deliver(slot, results, on_done, progress)
        slots[i] = None
      else:
        slot.pending_template, _ = crop_lib.sample_target(image, slot.box, tc.template_factor, tz)
    refill()
  return results
