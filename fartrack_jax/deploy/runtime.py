"""The FARTrack tracker on an ONNX export, with numpy, OpenCV and onnxruntime only (no JAX, no PyTorch).

It does what the JAX tracker (`fartrack_jax/tracking/tracker.py`) does, on the host: the same crops
(`data_pipelines/crops.py`), a template memory of every frame's template crop with the 25 %-pruned keep mask each
got while it was the newest, the same template selection (`tracking/sampling.py`), the same two-way box
decoding (sparse stage; argmax alone for the frame-level and distill exports) and the same mapping back and
clipping. Everything it needs to know about the network comes from the file's metadata.

The template memory holds only what the selection can still pick, as the JAX tracker's host store
(`BatchTracker(template_store="host")`): the selected indices never decrease as the memory grows, so once
`T` templates exist everything between the first template and the second slot's index is dropped. That is
about 30 % of the history (a 30 fps video grows it by about 2.8 GB an hour instead of 4.1 GB), and no box
changes: any index at or above the second slot's may still be picked later, so keeping less would.
"""

from __future__ import annotations

import os
import time

import numpy as np

from data_pipelines import crops as crop_lib
from fartrack_jax.deploy import metadata as meta_lib
from fartrack_jax.tracking import sampling

ONNXRUNTIME_PIN = "onnxruntime==1.32.0"


def import_onnxruntime():
  try:
    import onnxruntime  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise meta_lib.DeployError(f"onnxruntime is not installed: pip install {ONNXRUNTIME_PIN}") from None
  return onnxruntime


class OnnxNetwork:
  """An ONNX export under onnxruntime: `net(templates, search[, token_mask]) -> (coord_logits, keep_masks
  or None)`; `net.meta` is its tracker metadata. `stage`, if given, refuses an export of another stage."""

  def __init__(self, path: str, stage: str | None = None, threads: int | None = None, providers=None):
    ort = import_onnxruntime()
    if not os.path.isfile(path):
      raise meta_lib.DeployError(f"no such ONNX file: {path}")
    options = ort.SessionOptions()
    if threads:
      options.intra_op_num_threads = int(threads)
    try:
      self.session = ort.InferenceSession(path, options, providers=providers or ["CPUExecutionProvider"])
    except Exception as e:  # pylint: disable=broad-except
      reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      raise meta_lib.DeployError(f"{path} is not a model onnxruntime can load: {reason}") from None
    custom = self.session.get_modelmeta().custom_metadata_map
    self.meta = meta_lib.check(custom.get(meta_lib.KEY), path, stage)
    inputs = [i.name for i in self.session.get_inputs()]
    outputs = [o.name for o in self.session.get_outputs()]
    if inputs != self.meta["inputs"] or outputs != self.meta["outputs"]:
      raise meta_lib.DeployError(f"{path}: graph inputs {inputs} / outputs {outputs} do not match its "
                                 f"{self.meta['stage']} metadata ({self.meta['inputs']} / {self.meta['outputs']})")
    self.path = path
    self.sparse = self.meta["stage"] == "fartrack_sparse"

  def __call__(self, templates, search, token_mask=None):
    feeds = {"templates": np.asarray(templates, np.float32), "search": np.asarray(search, np.float32)}
    if self.sparse:
      if token_mask is None:
        token_mask = np.ones((feeds["search"].shape[0], self.meta["num_tokens"]), bool)
      feeds["token_mask"] = np.asarray(token_mask, bool)
    out = self.session.run(None, feeds)
    return out[0], (out[1] if self.sparse else None)


def bin_centers(meta: dict) -> np.ndarray:
  """`model.bin_centers` in float32: `start + step * k`."""
  start = np.float32(-meta["range"] * 0.5 + 0.5)
  step = np.float32(2.0 / (meta["bins"] * meta["range"]))
  return start + step * np.arange(meta["bins"] * meta["range"], dtype=np.float32)


def decode_box(coord_logits: np.ndarray, meta: dict) -> np.ndarray:
  """`[4, V]` logits -> (x0, y0, x1, y1) in search-crop units, float32: `model.decode_boxes` for the sparse
  stage (mean of the argmax and the expectation), `model.decode_argmax_boxes` otherwise."""
  logits = np.asarray(coord_logits, np.float32)
  argmax = np.argmax(logits, axis=-1).astype(np.float32)
  bins = meta["bins"]
  if meta["stage"] != "fartrack_sparse":
    return argmax / np.float32(bins - 1) - np.float32(0.5)
  by_argmax = (argmax + np.float32(0.5)) / np.float32(bins - 1) - np.float32(0.5)
  coords = logits[:, :bins * meta["range"]]
  e = np.exp(coords - coords.max(axis=-1, keepdims=True))
  probs = e / e.sum(axis=-1, keepdims=True)
  by_expectation = np.sum(probs * bin_centers(meta), axis=-1)
  return (by_argmax + by_expectation) / np.float32(2)


def normalize(crops_u8: np.ndarray, meta: dict) -> np.ndarray:
  mean, std = np.asarray(meta["mean"], np.float32), np.asarray(meta["std"], np.float32)
  return (crops_u8.astype(np.float32) / np.float32(255.0) - mean) / std


class RuntimeTracker:
  """One sequence at a time: `initialize(image, box)`, then `track(image) -> box` per frame (RGB uint8
  images, boxes x, y, w, h in pixels).

  The original stores every frame's template crop; this stores those the selection can still pick:
  `templates` maps a frame's index to its crop, `masks` the index of every template but the newest to its
  25 %-pruned keep mask, `count` is how many templates the original would hold.
  """

  def __init__(self, network: OnnxNetwork):
    self.net = network
    self.meta = network.meta

  def initialize(self, image: np.ndarray, box) -> None:
    m = self.meta
    crop, _ = crop_lib.sample_target(image, box, m["template_factor"], m["template_size"])
    self.templates = {0: crop}
    self.masks = {}
    self.count = 1
    self.min_kept = 1  # the lowest index above 0 still stored
    self.box = [float(v) for v in box]
    self.pending_template = None
    self.pending_mask = np.ones((m["tokens_per_template"],), bool)

  def track(self, image: np.ndarray) -> list[float]:
    m = self.meta
    search, factor = crop_lib.sample_target(image, self.box, m["search_factor"], m["search_size"])
    if self.pending_template is not None:
      # The previous newest template keeps the mask it got from the last forward (its 25 %-pruned one).
      self.masks[self.count - 1] = self.pending_mask
      self.templates[self.count] = self.pending_template
      self.count += 1
    count = self.count
    slots = sampling.selection_row(count, m["num_templates"], m["sampling_base"])
    templates = normalize(np.stack([self.templates[i] for i in slots]), m)[None]
    slot_masks = [self.masks[i] if i < count - 1 else np.ones((m["tokens_per_template"],), bool) for i in slots]
    if count >= m["num_templates"]:
      # The second slot's index is the smallest above 0 that this or any later selection picks.
      for i in range(self.min_kept, slots[1]):
        del self.templates[i]
        self.masks.pop(i, None)
      self.min_kept = max(self.min_kept, slots[1])
    token_mask = None
    if self.net.sparse:
      rest = np.ones((m["num_search_tokens"] + 4,), bool)
      token_mask = np.concatenate(slot_masks + [rest])[None]
    logits, keep = self.net(templates, normalize(search, m)[None], token_mask)
    x0, y0, x1, y1 = decode_box(logits[0], m)
    w, h = x1 - x0, y1 - y0
    crop_box = (np.stack([x0 + w / 2, y0 + h / 2, w, h]) * m["search_size"]) / np.float32(factor)
    if keep is not None:
      self.pending_mask = keep[0, 0]
    height, width = image.shape[:2]
    new_box = crop_lib.map_box_back(crop_box, self.box, float(factor), m["search_size"])
    self.box = crop_lib.clip_box(new_box, height, width, margin=m["margin"])
    self.pending_template, _ = crop_lib.sample_target(image, self.box, m["template_factor"],
                                                      m["template_size"])
    return list(self.box)


def read_rgb(path: str) -> np.ndarray:
  import cv2  # pylint: disable=g-import-not-at-top
  image = cv2.imread(path)
  if image is None:
    raise FileNotFoundError(f"cannot read image {path}")
  return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def track_frames(tracker: RuntimeTracker, frames, init_box, read_image=read_rgb):
  """Tracks one sequence (`frames`: paths or RGB arrays). Returns `(boxes [N, 4] float64 xywh, times [N]
  s)`, frame 0's box being `init_box`; as `tracking.loop.track_sequences` for one sequence."""
  load = lambda f: read_image(f) if isinstance(f, str) else f
  start = time.perf_counter()
  tracker.initialize(load(frames[0]), init_box)
  boxes, times = [list(tracker.box)], [time.perf_counter() - start]
  for i in range(1, len(frames)):
    start = time.perf_counter()
    boxes.append(tracker.track(load(frames[i])))
    times.append(time.perf_counter() - start)
  return np.asarray(boxes, np.float64), np.asarray(times, np.float64)
