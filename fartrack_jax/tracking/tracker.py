"""The FARTrack trackers on the device: a jitted per-frame step over a device-resident template memory.

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

`loop.track_sequences` drives a tracker over whole sequences (reading and cropping frames on the host while
the device steps); it is also importable from here, as `read_rgb` is.
"""

from __future__ import annotations

import dataclasses

import flax
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from fartrack_jax import model as model_lib
from fartrack_jax.tracking import loop
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
  crop; the returned crop box goes through `data_pipelines.crops.map_box_back` and `clip_box`.

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


# The loop that drives a tracker, under the names it had here.
read_rgb = loop.read_rgb
track_sequences = loop.track_sequences
