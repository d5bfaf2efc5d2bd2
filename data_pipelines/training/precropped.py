"""Pre-cropped training frames: every frame cut once, offline, around its target at the resolution the crops
need, packed in tfds `array_record` files (the accelerator data path for stages 1 and 2).

The exact path decodes six whole frames per example (5 templates + 1 search; a 1280x720 JPEG costs ~4 ms)
to cut 112- and 224-pixel crops out of them. Here each frame is stored as a few small JPEG *windows*
centred on its box, and an example decodes one window per crop (pysot's "crop511" training sets do the
same with one fixed window per frame; FARTrack's search jitter is wider, scale x exp(N(0, 0.5^2)) per side
and centre +-1.75 crop sizes, so one window at one resolution would be either huge or too coarse):

  - a crop with factor f and size S asks for S / f output pixels per unit of its jittered box's
    s' = sqrt(w' h'); its region reaches (center_jitter + f) / 2 * s' from the true box's centre at most;
  - per crop kind (template, search) the windows are that reach and that density at s' = L * s for each
    level L of LEVELS (one level when the kind is not jittered): all about (center_jitter + f) * S / f
    pixels a side (420 for the search, 112 + margin for the templates), never finer than the frame itself,
    clipped to the frame (outside it the crop is zero padding, as in the original);
  - a crop takes, among its kind's windows, the smallest (in stored pixels; the finer of equals) that covers
    its region (inside the frame) at its density or finer, else the finest that covers it, else the
    largest, zero outside it (a crop of a rare, very large jitter reaching past every window: `coverage()`
    counts them);
  - a frame is stored twice: its template windows alone (~8 kB), then all its windows (~150-280 kB). A frame
    drawn only as a template (~3.5 of an example's ~4.5 distinct frames) reads the first, any other frame
    the second: one record per frame still, about a quarter of the bytes per example (docs/performance.md).

What stays exact: the example's random draws, frames, jittered boxes, box labels and tokens, validity
checks and skip counters are the exact path's (the same `FrameProcessing` on the same draws: only
`sample_target`'s pixels come from the window, `PrecroppedFrame.sample_target`). What differs: the pixels,
resampled twice (INTER_AREA into the window, bilinear out of it; the original samples the full frame once,
bilinear), re-encoded as JPEG, grayscale taken after the crop instead of before, and the original's quirk
of dropping the frame's last column/row when a crop reaches it is not reproduced.
`compare_examples` measures the difference on the same draws.

    python scripts/build_tfds.py --dataset LASOT --root /data/lasot --data-dir /data/tfds --format crops
    datasets = open_precropped_datasets(["LASOT"], "/data/tfds", FrameProcessing.from_config(config))

Stored (builder `tracking_crops`, one config per training name, `<data_dir>/tracking_crops/<name>/2.0.0/`):
RECORDS_PER_FRAME records per (sequence, frame), the parts of RECORD_KINDS in order (an image dataset's
objects each have their own), features `windows` (see `encode_windows`; empty for a frame that could not be
read), `image_size` [2] int32 (height, width of the frame; 0, 0 when unreadable), `sequence`, `frame`,
`part` (index in RECORD_KINDS); and `sequences.npz` as `packed.py`'s (`first_record` counting records) plus
the crop settings it was built for (`crop_specs`, `window_specs` with `window_kinds`, `jpeg_quality`), which
opening checks against the run's: a set built for other crops is refused with one line saying how to
rebuild it, a set of the older format 1.0.0 (all of a frame's windows in its one record) likewise.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import multiprocessing
import os
from typing import Sequence

import cv2
import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from data_pipelines import crops
from data_pipelines import paths
from data_pipelines.training import packed
from data_pipelines.training import pipeline
from data_pipelines.training import processing
from data_pipelines.training.datasets import DatasetError

__all__ = ["BUILDER_NAME", "LEVELS", "PrecroppedFrame", "PrecroppedTrainDataset", "TrackingCrops",
           "WindowSpec", "compare_examples", "coverage", "crop_records", "open_precropped_datasets",
           "pack_precropped_dataset", "window_specs"]

BUILDER_NAME = "tracking_crops"
# 2.0.0: two records per frame (RECORD_KINDS). The former 1.0.0: one record per frame, every window in it.
DATASET_VERSION = "2.0.0"
_FORMER_VERSION = "1.0.0"
TABLE_FORMAT = 2
KINDS = pipeline.CROP_KINDS  # ("template", "search")
# A frame's records, in order, by the crop kinds whose windows each holds: a frame drawn only as a template
# reads the first (its template windows, ~8 kB), any other frame the second (all its windows, ~150-280 kB).
RECORD_KINDS = (KINDS[:1], KINDS)
RECORDS_PER_FRAME = len(RECORD_KINDS)
# Search windows for s' = L * s, levels sqrt(2) apart: a crop whose jittered box lies between two levels is
# covered by the coarser one at >= 1/sqrt(2) of the density it asks for (or by the finer one). 0.5..4 spans
# s' within +-2 standard deviations of the search jitter below and +-3.9 above (exp(N(0, 0.354^2))).
LEVELS = tuple(2.0 ** (k / 2) for k in range(-2, 5))  # 0.5, 0.71, 1, ..., 4
JPEG_QUALITY = 95
# Pixels added around every window: `sample_target`'s rounding of the crop's corner (+-0.5) and its ceil.
MARGIN = 2
# Per window: x0, y0, x1, y1 (frame pixels), stored width, height, JPEG bytes, crop kind (index in KINDS).
_HEADER_FIELDS = 8

# Crops made in this process: "covered" (a window holds the crop's region), "uncovered" (it reaches past
# every window inside the frame), "outside" (wholly outside the frame: all padding, no window needed).
_coverage = collections.Counter()


def coverage() -> dict[str, int]:
  """How many crops this process made from a covering window, an uncovering one, or none (see _coverage)."""
  return dict(_coverage)


@dataclasses.dataclass(frozen=True)
class WindowSpec:
  """A window reaching `half_extent * s` from the box centre, stored at `pixels_per_s / s` pixels per frame
  pixel (at most 1), s = sqrt(w * h) of the frame's box."""
  half_extent: float
  pixels_per_s: float


def window_specs(template: processing.CropSpec, search: processing.CropSpec,
                 levels: Sequence[float] = LEVELS, oversample: float = 1.0) -> dict[str, tuple[WindowSpec, ...]]:
  """The windows every frame stores for each crop kind (KINDS; see the module docstring), distinct, in
  order. `oversample` > 1 stores every window that much finer: closer crops (less blur from resampling
  twice), for oversample^2 the decoding and storage."""
  if not oversample >= 1:
    raise ValueError(f"oversample must be >= 1, got {oversample}")
  out = {}
  for kind, spec in zip(KINDS, (template, search)):
    reach = (spec.center_jitter + spec.factor) / 2
    density = spec.size / spec.factor * oversample
    jittered = spec.center_jitter != 0 or spec.scale_jitter != 0
    windows = []
    for level in (levels if jittered else (1.0,)):
      window = WindowSpec(reach * level, density / level)
      if window not in windows:
        windows.append(window)
    out[kind] = tuple(windows)
  return out


def window_regions(box_xywh, height: int, width: int, specs: Sequence[WindowSpec]) -> list[tuple[int, ...]]:
  """(x0, y0, x1, y1, stored width, stored height) of each window of a frame, clipped to the frame, without
  the windows another one makes redundant (contains it at the same density or finer)."""
  x, y, w, h = (float(v) for v in box_xywh)
  s = math.sqrt(w * h)
  cx, cy = x + 0.5 * w, y + 0.5 * h
  regions = []
  for spec in specs:
    half = spec.half_extent * s + MARGIN
    x0, y0 = max(0, math.floor(cx - half)), max(0, math.floor(cy - half))
    x1, y1 = min(width, math.ceil(cx + half)), min(height, math.ceil(cy + half))
    if x1 <= x0 or y1 <= y0:
      continue
    scale = min(1.0, spec.pixels_per_s / s)
    # Rounded up: a window is never coarser than its spec (the template crop asks for exactly that density).
    regions.append((x0, y0, x1, y1, math.ceil((x1 - x0) * scale), math.ceil((y1 - y0) * scale)))

  def density(r):
    return min(r[4] / (r[2] - r[0]), r[5] / (r[3] - r[1]))

  kept = []
  for i, r in enumerate(regions):
    # Only a window of the same region and no finer than another (e.g. both at the frame's own resolution)
    # is redundant: a smaller window inside a finer one still saves decoding.
    if not any(o[:4] == r[:4] and density(o) >= density(r) and (o != r or j < i)
               for j, o in enumerate(regions) if j != i):
      kept.append(r)
  return kept


def _encode_kind(image_bgr: np.ndarray, box_xywh, specs: Sequence[WindowSpec], kind: int,
                 quality: int) -> list[tuple[list[int], bytes]]:
  """(header fields, JPEG) of each window of `specs` (crop kind index `kind`); none when the box is not usable
  (non-finite, empty, outside the frame): training then skips the frame as a bad box, as the exact path
  does."""
  height, width = image_bgr.shape[:2]
  box = np.asarray(box_xywh, np.float64)
  if not (np.all(np.isfinite(box)) and box[2] > 0 and box[3] > 0):
    return []
  out = []
  for x0, y0, x1, y1, out_w, out_h in window_regions(box, height, width, specs):
    region = image_bgr[y0:y1, x0:x1]
    if (out_w, out_h) != (x1 - x0, y1 - y0):
      region = cv2.resize(region, (out_w, out_h), interpolation=cv2.INTER_AREA)
    ok, jpeg = cv2.imencode(".jpg", region, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
      raise ValueError(f"could not encode a {out_w}x{out_h} window")
    out.append(([x0, y0, x1, y1, out_w, out_h, len(jpeg), kind], jpeg.tobytes()))
  return out


def _blob(windows: Sequence[tuple[list[int], bytes]]) -> bytes:
  header = [len(windows)] + [field for fields, _ in windows for field in fields]
  return np.asarray(header, np.int32).tobytes() + b"".join(jpeg for _, jpeg in windows)


def encode_windows(image_bgr: np.ndarray, box_xywh, specs: dict[str, Sequence[WindowSpec]],
                   quality: int = JPEG_QUALITY) -> bytes:
  """A frame's windows of each crop kind in `specs` (`window_specs`' dict, or part of it) as one blob: int32
  count, count x _HEADER_FIELDS int32 (the last: the window's kind, an index in KINDS), then the JPEGs in
  order. No window (count 0) when the box is not usable."""
  return _blob([w for i, kind in enumerate(KINDS) if kind in specs
                for w in _encode_kind(image_bgr, box_xywh, specs[kind], i, quality)])


@dataclasses.dataclass(frozen=True)
class _Window:
  x0: int
  y0: int
  x1: int
  y1: int
  stored_width: int
  stored_height: int
  jpeg: memoryview  # into the record's blob: the JPEGs are not copied out of it

  @property
  def density(self) -> float:
    return min(self.stored_width / (self.x1 - self.x0), self.stored_height / (self.y1 - self.y0))

  def contains(self, x0, y0, x1, y1) -> bool:
    return self.x0 <= x0 and self.y0 <= y0 and self.x1 >= x1 and self.y1 >= y1


def decode_windows(blob: bytes, kinds: Sequence[str] = KINDS) -> dict[str, list[_Window]]:
  """`encode_windows`' blob -> its windows (JPEGs still encoded) by crop kind, every kind of `kinds` present
  (the kinds the blob was made for: none of their windows when the box was not usable)."""
  count = int(np.frombuffer(blob, np.int32, 1)[0])
  header = np.frombuffer(blob, np.int32, count * _HEADER_FIELDS, 4).reshape(count, _HEADER_FIELDS)
  offset = 4 * (1 + count * _HEADER_FIELDS)
  view = memoryview(blob)
  windows = {kind: [] for kind in kinds}
  for x0, y0, x1, y1, out_w, out_h, size, kind in header.tolist():
    if not (0 <= kind < len(KINDS) and KINDS[kind] in windows):
      raise ValueError(f"a window of crop kind {kind} in a blob of kinds {tuple(kinds)}")
    windows[KINDS[kind]].append(_Window(x0, y0, x1, y1, out_w, out_h, view[offset:offset + size]))
    offset += size
  return windows


class PrecroppedFrame:
  """A frame as its windows: what `FrameProcessing` needs of a frame (`shape`, grayscale, flip,
  `sample_target`) without its full pixels. `windows` maps each crop kind read (KINDS) to that kind's
  windows; a crop of a kind is cut from that kind's windows. Windows are decoded on first use."""

  def __init__(self, height: int, width: int, windows: dict[str, Sequence[_Window]], name: object = "",
               grayscale: bool = False, mirrored: bool = False, decoded: dict | None = None):
    self.shape = (int(height), int(width), 3)
    self.windows = {kind: tuple(w) for kind, w in windows.items()}
    self._name = name  # a string, or a frame reference whose `name` is made only for a message
    self.grayscale = grayscale
    self.mirrored = mirrored
    self._decoded = {} if decoded is None else decoded  # shared by the grayscale/mirrored views

  def _view(self, **change) -> "PrecroppedFrame":
    state = dict(grayscale=self.grayscale, mirrored=self.mirrored) | change
    return PrecroppedFrame(self.shape[0], self.shape[1], self.windows, self._name, decoded=self._decoded, **state)

  @property
  def name(self) -> str:
    return str(getattr(self._name, "name", self._name))

  def to_grayscale(self) -> "PrecroppedFrame":
    return self._view(grayscale=True)

  def mirror(self) -> "PrecroppedFrame":
    """The frame flipped left-right (`frame[:, ::-1]`)."""
    return self._view(mirrored=not self.mirrored)

  def _pixels(self, kind: str, index: int) -> np.ndarray:
    if (kind, index) not in self._decoded:
      window = self.windows[kind][index]
      image = cv2.imdecode(np.frombuffer(window.jpeg, np.uint8), cv2.IMREAD_COLOR)
      if image is None or image.shape[:2] != (window.stored_height, window.stored_width):
        raise pipeline.BadSample("unreadable_image", f"{self.name} ({kind} window {index})")
      self._decoded[kind, index] = image
    return self._decoded[kind, index]

  @staticmethod
  def _choose(windows: Sequence[_Window], x0, y0, x1, y1, density: float) -> int:
    covering = [i for i, w in enumerate(windows) if w.contains(x0, y0, x1, y1)]
    if not covering:
      _coverage["uncovered"] += 1
      return max(range(len(windows)), key=lambda i: (windows[i].x1 - windows[i].x0) * (windows[i].y1 - windows[i].y0))
    _coverage["covered"] += 1
    # A float32 ulp of slack: the template crop asks for exactly its window's density.
    fine = [i for i in covering if windows[i].density >= density * (1 - 1e-6)]
    if fine:
      return min(fine, key=lambda i: (windows[i].stored_width * windows[i].stored_height, -windows[i].density))
    return max(covering, key=lambda i: windows[i].density)

  def sample_target(self, box, factor: float, output_size: int, kind: str) -> tuple[np.ndarray, float]:
    """`crops.sample_target` of the (grayscale, mirrored) frame, sampled from a window of crop kind `kind`.
    Returns `(crop [output_size, output_size, 3] uint8 RGB, resize_factor = output_size / crop_side)`."""
    if kind not in self.windows:
      raise ValueError(f"{self.name}: a {kind} crop asked of a frame read for {', '.join(self.windows)} crops "
                       f"only (pipeline.for_crops)")
    windows = self.windows[kind]
    x1, y1, side = crops.crop_window(box, factor)
    crops.check_croppable(box, side)
    height, width = self.shape[:2]
    # The crop's columns in the stored (unmirrored) frame: mirrored column c is column width - 1 - c.
    left = width - x1 - side if self.mirrored else x1
    region = (max(left, 0), max(y1, 0), min(left + side, width), min(y1 + side, height))
    crop = np.zeros((output_size, output_size, 3), np.uint8)
    resize_factor = output_size / side
    if region[2] <= region[0] or region[3] <= region[1] or not windows:
      _coverage["outside"] += 1
      return crop, resize_factor
    index = self._choose(windows, *region, output_size / side)
    window, pixels = windows[index], self._pixels(kind, index)
    sx = window.stored_width / (window.x1 - window.x0)
    sy = window.stored_height / (window.y1 - window.y0)
    step = side / output_size
    # Output pixel u samples crop pixel (u + 0.5) * step - 0.5 (cv2.resize's centres), i.e. frame column
    # x1 + that (mirrored: width - 1 - it), i.e. window pixel (column - x0 + 0.5) * sx - 0.5.
    first_x = x1 + 0.5 * step - 0.5
    if self.mirrored:
      ax, bx = -step * sx, (width - 1 - first_x - window.x0 + 0.5) * sx - 0.5
    else:
      ax, bx = step * sx, (first_x - window.x0 + 0.5) * sx - 0.5
    ay, by = step * sy, (y1 + 0.5 * step - 0.5 - window.y0 + 0.5) * sy - 0.5
    matrix = np.array([[ax, 0.0, bx], [0.0, ay, by]], np.float64)
    bgr = cv2.warpAffine(pixels, matrix, (output_size, output_size), crop,
                         flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=0)
    if self.grayscale:
      gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
      return np.stack([gray, gray, gray], axis=2), resize_factor
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), resize_factor


@dataclasses.dataclass(frozen=True, slots=True)
class PrecroppedFrameRef(packed.PackedFrame):
  """A frame of a pre-cropped set: `read_frame()` gives its `PrecroppedFrame` (`pipeline.read_image` calls
  it) with the windows of at least the crop kinds in `kinds`, read from the smallest of its records that
  holds them (`for_crops` narrows the kinds: a frame drawn only as a template reads its template record);
  BadSample("unreadable_image") for a frame that could not be read when packing. `record` is the frame's
  first record (RECORDS_PER_FRAME a frame, see RECORD_KINDS)."""
  kinds: tuple[str, ...] = KINDS

  @property
  def part(self) -> int:
    """Which of the frame's records it reads: the first holding every kind of `kinds`."""
    return next(i for i, held in enumerate(RECORD_KINDS) if set(self.kinds) <= set(held))

  @property
  def record_index(self) -> int:
    return self.record + self.part

  def for_crops(self, kinds) -> "PrecroppedFrameRef":
    """This frame reading only what crops of `kinds` (a non-empty subset of KINDS) need."""
    if not kinds or set(kinds) - set(KINDS):
      raise ValueError(f"crop kinds must be a non-empty subset of {KINDS}, got {tuple(kinds)}")
    return dataclasses.replace(self, kinds=tuple(k for k in KINDS if k in kinds), prefetched=None)

  def check_record(self, record: dict, index: int) -> None:
    super(PrecroppedFrameRef, self).check_record(record, index)  # slots: no zero-argument super()
    if int(record["part"]) != index - self.record:
      raise DatasetError(f"{self.source.path}: record {index} is part {int(record['part'])} of its frame, the "
                         f"layout says part {index - self.record} ({RECORDS_PER_FRAME} records a frame, holding "
                         f"the windows of {' and '.join('+'.join(k) for k in RECORD_KINDS)} crops)")

  def read_frame(self) -> PrecroppedFrame:
    record = self.checked_record()
    height, width = (int(v) for v in record["image_size"])
    if height == 0 or width == 0:
      raise pipeline.BadSample("unreadable_image", self.name)
    try:
      windows = decode_windows(record["windows"], RECORD_KINDS[self.part])
    except ValueError as e:
      raise DatasetError(f"{self.name}: {e}") from e
    return PrecroppedFrame(height, width, windows, self)


def _crop_specs_array(template: processing.CropSpec, search: processing.CropSpec) -> np.ndarray:
  return np.array([[s.factor, s.size, s.center_jitter, s.scale_jitter] for s in (template, search)], np.float64)


def _describe(specs: np.ndarray) -> str:
  return "; ".join(f"{kind} factor {f:g} size {s:g} center_jitter {c:g} scale_jitter {j:g}"
                   for kind, (f, s, c, j) in zip(("template", "search"), np.asarray(specs).reshape(2, 4)))


def _encode_frame(task) -> tuple[tuple[bytes, ...], tuple[int, int]]:
  """(windows blob of each of the frame's records (RECORD_KINDS), (height, width)) of one frame file; (empty
  blobs, (0, 0)) when it cannot be read. `task`: (path, box, {kind: window specs}, JPEG quality)."""
  path, box, specs, quality = task
  unreadable = tuple(b"" for _ in RECORD_KINDS), (0, 0)
  if paths.is_remote(path):  # a root on a bucket: the same decoder on the file's bytes
    try:
      data = paths.read_bytes(path)
    except OSError as e:
      if paths.is_storage_failure(path, e):
        raise packed.storage_failure(path, e) from None
      return unreadable
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
  else:
    image = cv2.imread(path, cv2.IMREAD_COLOR)
  if image is None:
    return unreadable
  windows = {kind: _encode_kind(image, box, specs[kind], i, quality) for i, kind in enumerate(KINDS)}
  return tuple(_blob([w for kind in held for w in windows[kind]]) for held in RECORD_KINDS), image.shape[:2]


def _crop_examples(train_name: str, index: int, frame: int, blobs: Sequence[bytes], size):
  """(record, None or why the frame could not be read) of each of frame `frame`'s records (RECORD_KINDS) in
  sequence `index`; the reason comes with the first only (a frame is counted once)."""
  problem = f"{train_name} sequence {index} frame {frame}" if tuple(size) == (0, 0) else None
  for part, blob in enumerate(blobs):
    yield {"windows": blob, "image_size": np.asarray(size, np.int32), "sequence": index, "frame": frame,
           "part": part}, problem if part == 0 else None


def crop_records(seq, index: int, first_record: int, num_records: int, specs: dict[str, Sequence[WindowSpec]],
                 quality: int = JPEG_QUALITY):
  """The records of sequence `index` (`seq`, of training name `seq.dataset`), cut in this process:
  RECORDS_PER_FRAME (tfds key, example, None or why the frame could not be read) per frame, as
  `TrackingCrops` writes them (a Beam worker's unit of work: `beam_packing.py`)."""
  record = first_record
  for k, path in enumerate(seq.frames):
    for example, problem in _crop_examples(
        seq.dataset, index, k, *_encode_frame((path, np.asarray(seq.boxes[k], np.float64), specs, quality))):
      yield packed.record_key(record, num_records), example, problem
      record += 1


class TrackingCrops(packed.TrackingFrames):
  """Pre-cropped frames of one training dataset (see the module docstring), built from its native root.

  `TrackingCrops(config=..., data_dir=..., root=ROOT, template=CropSpec, search=CropSpec, num_workers=N)`:
  frames are cut in N processes (0: in this one), in order."""

  VERSION = tfds.core.Version(DATASET_VERSION)
  RELEASE_NOTES = {_FORMER_VERSION: "Per frame, JPEG windows around its box at the crops' resolution.",
                   DATASET_VERSION: "Two records per frame, its template windows then all its windows: a frame "
                                    "drawn only as a template reads the first."}

  def __init__(self, *, template: processing.CropSpec | None = None, search: processing.CropSpec | None = None,
               levels: Sequence[float] = LEVELS, oversample: float = 1.0, quality: int = JPEG_QUALITY,
               num_workers: int = 0, **kwargs):
    super().__init__(**kwargs)
    self._template, self._search = template, search
    self._specs = window_specs(template, search, levels, oversample) if template is not None else {}
    self._quality = int(quality)
    self._num_workers = int(num_workers)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.builder_config.description,
        features=tfds.features.FeaturesDict({
            "windows": tfds.features.Tensor(shape=(), dtype=np.object_, doc="precropped.encode_windows blob"),
            "image_size": tfds.features.Tensor(shape=(2,), dtype=np.int32, doc="frame height, width; 0 0: "
                                               "unreadable"),
            "sequence": tfds.features.Scalar(dtype=np.int64, doc="sequence index in sequences.npz"),
            "frame": tfds.features.Scalar(dtype=np.int64, doc="frame index in the sequence"),
            "part": tfds.features.Scalar(dtype=np.int64, doc="which of the frame's records: index in "
                                         "precropped.RECORD_KINDS (0: template windows, 1: all)"),
        }),
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    if not self._specs:
      raise ValueError("TrackingCrops needs template= and search= crop specs to build")
    source = self.source_dataset(dl_manager)
    lengths = RECORDS_PER_FRAME * np.array([len(source.sequence(i).frames) for i in range(len(source))], np.int64)
    first_record = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    num_records = int(lengths.sum())
    self._layout = (first_record, num_records)
    print(f"{source.name}: cutting {len(source)} sequences, {num_records // RECORDS_PER_FRAME} frames into "
          f"windows from {source.root} ({' + '.join(str(len(self._specs[k])) for k in KINDS)} window sizes, "
          f"{'Beam workers' if self._beam else f'{max(self._num_workers, 1)} processes'})", flush=True)
    if self._beam:
      return {packed.SPLIT: self._beam_split(source, np.arange(len(source)), first_record, num_records)}
    return {packed.SPLIT: self._generate_crops(source, first_record, num_records)}

  def _sequence_work(self, source, first_record, num_records):
    from data_pipelines.training import beam_packing  # pylint: disable=g-import-not-at-top
    return beam_packing.SequenceWork(source.name, source.root, self._cache_dir, first_record, num_records,
                                     functools.partial(crop_records, specs=self._specs, quality=self._quality))

  def _generate_crops(self, source, first_record, num_records):
    def tasks():
      for i in range(len(source)):
        seq = source.sequence(i)
        for k, path in enumerate(seq.frames):
          yield path, np.asarray(seq.boxes[k], np.float64), self._specs, self._quality

    def records(results):
      record = 0
      for i in range(len(source)):
        end = int(first_record[i + 1]) if i + 1 < len(source) else num_records
        for k in range((end - int(first_record[i])) // RECORDS_PER_FRAME):
          for example, problem in _crop_examples(source.name, i, k, *next(results)):
            if problem:
              self._unreadable.append(problem)
            yield packed.record_key(record, num_records), example
            record += 1

    if self._num_workers > 0:
      with multiprocessing.get_context("spawn").Pool(self._num_workers) as pool:
        yield from records(pool.imap(_encode_frame, tasks(), chunksize=16))
    else:
      yield from records(map(_encode_frame, tasks()))

  def _download_and_prepare(self, dl_manager, download_config=None):
    tfds.core.GeneratorBasedBuilder._download_and_prepare(self, dl_manager=dl_manager,
                                                          download_config=download_config)
    first_record, num_records = self._layout
    packed._write_table(  # pylint: disable=protected-access
        self.data_path / packed.SEQUENCES_FILE, self.source_dataset(), first_record, num_records,
        self._count_unreadable(), table_format=TABLE_FORMAT, crop_specs=_crop_specs_array(self._template, self._search),
        window_specs=np.array([[w.half_extent, w.pixels_per_s] for k in KINDS for w in self._specs[k]],
                              np.float64).reshape(-1, 2),
        window_kinds=np.array([i for i, k in enumerate(KINDS) for _ in self._specs[k]], np.int64),
        jpeg_quality=np.int64(self._quality), table_kind=np.str_(BUILDER_NAME))


class PrecroppedTrainDataset(packed.PackedTrainDataset):
  """A pre-cropped training dataset with `TrainDataset`'s interface; its frames are `PrecroppedFrameRef`s.
  Refuses (DatasetError, one line) a set built for other crop settings than `template`/`search`."""

  BUILDER = BUILDER_NAME
  VERSION = DATASET_VERSION
  TABLE_FORMAT = TABLE_FORMAT
  FRAME = PrecroppedFrameRef
  RECORDS_PER_FRAME = RECORDS_PER_FRAME

  def __init__(self, name: str, data_dir: str, template: processing.CropSpec, search: processing.CropSpec,
               config_arg: str = "configs/fartrack.py:variant=tiny"):
    self._want = _crop_specs_array(template, search)
    self.BUILD_FLAGS = f" --format crops --config {config_arg}"  # pylint: disable=invalid-name
    super().__init__(name, data_dir)

  def _not_built(self, path) -> str:
    older = packed.packed_path(self.name, self.data_dir, BUILDER_NAME, _FORMER_VERSION)
    if not (older / "dataset_info.json").exists():
      return super()._not_built(path)
    return (f"{older}: a pre-cropped set in the older format {_FORMER_VERSION} (one record a frame); this reader "
            f"reads {DATASET_VERSION} (a frame's template windows in a record of their own): build it with: python "
            f"scripts/build_tfds.py --dataset {self.name} --root ROOT --data-dir {self.data_dir}{self.BUILD_FLAGS} "
            f"(then {older} can be deleted)")

  def _check_table(self, path, table) -> None:
    built = np.asarray(table.get("crop_specs", np.zeros((2, 4))), np.float64)
    if built.shape != self._want.shape or not np.allclose(built, self._want, rtol=0, atol=1e-9):
      raise DatasetError(f"{path}: stale pre-cropped set, built for {_describe(built)}, the run asks for "
                         f"{_describe(self._want)}; delete it and rebuild with: python scripts/build_tfds.py "
                         f"--dataset {self.name} --root ROOT --data-dir {self.data_dir}{self.BUILD_FLAGS}")


def open_precropped_datasets(names: Sequence[str], data_dir: str, crops: processing.FrameProcessing,
                             config_arg: str = "configs/fartrack.py:variant=tiny") -> list[PrecroppedTrainDataset]:
  """One pre-cropped dataset per training name, in order, for the crops of `crops` (the run's
  `FrameProcessing`); DatasetError naming the folder for a missing or stale set. `config_arg` is the config
  the rebuild command in the message names."""
  return [PrecroppedTrainDataset(n, data_dir, crops.template, crops.search, config_arg) for n in names]


def pack_precropped_dataset(name: str, root: str, data_dir: str, crops: processing.FrameProcessing,
                            cache_dir: str | None = None, num_workers: int = 0,
                            quality: int = JPEG_QUALITY, oversample: float = 1.0,
                            beam_options=None) -> epath.Path:
  """Cuts training name `name` from its native `root` into `data_dir` for the crops of `crops`; returns
  the folder. A bad root fails with the reader's DatasetError before anything is written; a set already
  there is left as it is (opening it checks that it fits). With `beam_options` the frames are cut by that
  Beam pipeline (one shard of consecutive sequences a unit of work, `num_workers` unused): the same
  records."""
  builder = TrackingCrops(config=packed.config_name(name), data_dir=os.fspath(data_dir), root=os.fspath(root),
                          cache_dir=cache_dir, template=crops.template, search=crops.search,
                          num_workers=num_workers, quality=quality, oversample=oversample,
                          beam=beam_options is not None)
  return packed.build_with_tfds(builder, name, data_dir, BUILDER_NAME, DATASET_VERSION, beam_options)


def compare_examples(exact: pipeline.FrameExamples, fast: pipeline.FrameExamples, indices: Sequence[int],
                     std: Sequence[float]) -> dict:
  """The fast path's examples against the exact path's on the same indices (the same random draws).

  Pixels are compared in uint8 units (the normalisation's division by `std` and 255 undone; its offset
  cancels in the difference). Returns {"examples", "template_mean_abs",
  "template_max_abs", "search_mean_abs", "search_max_abs", "search_box_max_abs" (clamped corners,
  normalised), "token_mismatches" (examples whose target tokens differ), "skip_mismatches" (examples whose
  skip counters differ), "uncovered_crops", "crops"}."""
  scale = np.asarray(std, np.float32) * 255
  before = collections.Counter(_coverage)
  sums = collections.defaultdict(float)
  maxima = collections.defaultdict(float)
  counts = collections.defaultdict(int)
  box_diff, token_mismatches, skip_mismatches = 0.0, 0, 0
  for index in indices:
    a, b = exact(int(index)), fast(int(index))
    for key in ("templates", "search"):
      diff = np.abs((a[key] - b[key]) * scale)
      sums[key] += float(diff.sum())
      counts[key] += diff.size
      maxima[key] = max(maxima[key], float(diff.max()))
    box_diff = max(box_diff, float(np.abs(a["search_box"] - b["search_box"]).max()))
    token_mismatches += int(not np.array_equal(a["target_tokens"], b["target_tokens"]))
    skip_mismatches += int(not np.array_equal(a["skips"], b["skips"]))
  made = collections.Counter(_coverage)
  made.subtract(before)
  return {"examples": len(indices),
          "template_mean_abs": sums["templates"] / max(counts["templates"], 1),
          "template_max_abs": maxima["templates"],
          "search_mean_abs": sums["search"] / max(counts["search"], 1), "search_max_abs": maxima["search"],
          "search_box_max_abs": box_diff, "token_mismatches": token_mismatches,
          "skip_mismatches": skip_mismatches, "uncovered_crops": made["uncovered"],
          "crops": made["covered"] + made["uncovered"] + made["outside"]}
