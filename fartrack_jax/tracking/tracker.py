"""The FARTrack trackers: a jitted per-frame step over a device-resident template memory.

Per frame the host sends two uint8 crops (the search crop of this frame around the previous box, and the
template crop of the previous frame around the previous box) and gets the box back; the template memory,
its keep masks and the template sampling stay on the device. The step is written for one sequence and
vmapped over a batch of sequences (`BatchTracker`), which is also how a single sequence runs (batch 1).

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
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

from fartrack_jax import model as model_lib
from fartrack_jax.tracking import crop as crop_lib


def selection_table(capacity: int, num_templates: int, base: float = 0.7) -> np.ndarray:
  """`[capacity + 1, T]` int32: row S holds the stored-template index of each slot when S templates are
  stored. Computed in float64 on the host: `int((S - 1) * (1 - 0.7 ** i))` flips at different S in
  float32."""
  table = np.zeros((capacity + 1, num_templates), np.int32)
  for s in range(1, capacity + 1):
    if s < num_templates:  # mode1: shift the few templates to the newest slots
      shift = num_templates - s
      idx = [min(max(0, pos - shift), s - 1) for pos in range(num_templates)]
    else:
      idx = [0] + [int((s - 1) * (1 - base ** i)) for i in range(1, num_templates - 1)] + [s - 1]
    table[s] = idx
  return table


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
  """

  def __init__(self, config, params, batch: int, capacity: int, mesh=None):
    self.config = config
    self.sparse = config.stage == "fartrack_sparse"
    self.spec = model_lib.ModelSpec.from_config(config)
    self.tc = TrackerConfig.from_config(config, capacity)
    self.batch = batch
    self.net = model_lib.build_model(config)
    self.table = jnp.asarray(selection_table(capacity, self.spec.num_templates, self.tc.sampling_base))
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
    self.memory = Memory(
        templates=put(np.zeros(shape(capacity, tc.template_size, tc.template_size, 3), np.uint8)),
        masks=put(np.ones(shape(capacity, s.tokens_per_template), bool)),
        count=put(np.zeros(shape(), np.int32)),
        pending_mask=put(np.ones(shape(s.tokens_per_template), bool)))
    self._put = put
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
    slot_templates = self._normalize(templates[slots])          # [T, Hz, Wz, 3]
    if self.sparse:
      has_mask = slots < count - 1
      slot_masks = jnp.where(has_mask[:, None], masks[slots], True)  # [T, P_z]
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
    new_memory = Memory(templates=templates, masks=masks, count=count, pending_mask=keep[0])
    return new_memory, crop_box, keep

  def _step_impl(self, params, memory, search, template, append, resize_factor):
    return jax.vmap(self._step_one, in_axes=(None, 0, 0, 0, 0, 0))(
        params, memory, search, template, append, resize_factor)

  # ---- host API ----
  def start(self, slots_templates: dict[int, np.ndarray]) -> None:
    """Begins new sequences in the given slots with their first template crops (uint8)."""
    tz = self.tc.template_size
    template = np.zeros((self.batch, tz, tz, 3), np.uint8)
    do_start = np.zeros((self.batch,), bool)
    for slot, crop in slots_templates.items():
      template[slot], do_start[slot] = crop, True
    self.memory = self._start(self.memory, self._put(template), self._put(do_start))

  def step(self, search: np.ndarray, template: np.ndarray, append: np.ndarray, resize_factor: np.ndarray):
    """One frame for every slot. Returns `(crop_boxes [B, 4] float32, keep_masks [B, 4, P_z])` on the host."""
    count = np.asarray(self.memory.count)
    if np.any(count + append.astype(np.int32) > self.tc.capacity):
      raise ValueError(f"template memory full ({self.tc.capacity} frames): raise the capacity")
    self.memory, crop_box, keep = self._step(
        self.params, self.memory, self._put(search), self._put(template), self._put(append),
        self._put(resize_factor.astype(np.float32)))
    return np.asarray(crop_box), np.asarray(keep)


@dataclasses.dataclass
class _Slot:
  """Host state of one running sequence."""
  key: Any
  frames: Any
  index: int = 0
  box: list = dataclasses.field(default_factory=list)
  pending_template: np.ndarray | None = None
  boxes: list = dataclasses.field(default_factory=list)
  times: list = dataclasses.field(default_factory=list)


def read_rgb(path: str) -> np.ndarray:
  import cv2  # pylint: disable=g-import-not-at-top
  image = cv2.imread(path)
  if image is None:
    raise FileNotFoundError(f"cannot read image {path}")
  return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def track_sequences(tracker: BatchTracker, sequences, on_done=None, read_image=read_rgb, progress=None):
  """Tracks `sequences` (iterable of `(key, frames, init_box)`; frames: paths or arrays) `tracker.batch`
  at a time, refilling a slot with the next sequence as soon as one ends.

  Calls `on_done(key, boxes [N, 4] float64 xywh, times [N] s)` per finished sequence (in completion order)
  and returns `{key: (boxes, times)}` when `on_done` is None. Frame 0's box is the initial box.
  """
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
          finish(slot)
          continue
        slots[i] = slot
        starts[i] = z0
    if starts:
      tracker.start(starts)

  def finish(slot):
    boxes, times = np.asarray(slot.boxes, np.float64), np.asarray(slot.times, np.float64)
    if on_done is None:
      results[slot.key] = (boxes, times)
    else:
      on_done(slot.key, boxes, times)
    if progress is not None:
      progress(slot.key, len(slot.boxes))

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
    crop_boxes, _ = tracker.step(search, template, append, factors)
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
        finish(slot)
        slots[i] = None
      else:
        slot.pending_template, _ = crop_lib.sample_target(image, slot.box, tc.template_factor, tz)
    refill()
  return results
