"""The training datasets' native on-disk layouts, scanned into one flat per-frame index.

One reader per layout of the original's `lib/train/dataset/` (got10k.py, lasot.py, tracking_net.py,
coco_seq.py), configured per training name as `lib/train/base_functions.py::names2datasets` does:

| name                  | reader      | sequences                                                           |
|-----------------------|-------------|---------------------------------------------------------------------|
| `GOT10K_vottrain`     | GOT-10k     | `<root>/train`, positions in list.txt from got10k_vot_train_split   |
| `GOT10K_votval`       | GOT-10k     | `<root>/train`, positions from got10k_vot_val_split                 |
| `GOT10K_train_full`   | GOT-10k     | `<root>/train`, positions from got10k_train_full_split (all 9335)   |
| `GOT10K_official_val` | GOT-10k     | `<root>/val`, every list.txt sequence (the original: split=None)    |
| `SYNTHETIC`           | GOT-10k     | `<root>/train`, every list.txt sequence                              |
| `LASOT`               | LaSOT       | the 1120 names of lasot_train_split (`<root>/<class>/<class>-<n>`)  |
| `TRACKINGNET`         | TrackingNet | every `<root>/TRAIN_<k>/anno/*.txt` for k in 0..11 (all 12 chunks)  |
| `COCO17`              | COCO        | every non-crowd object of `<root>/annotations/instances_train2017.json` |

Visibility, exactly as the original's `get_sequence_info` computes it (the `~` there is a bitwise NOT of a
uint8 tensor, so a flag counts by its lowest bit; the files hold 0/1):
- GOT-10k: `~absence & (cover > 0) & valid`, with valid = w > 0 and h > 0.
- LaSOT: `~full_occlusion & ~out_of_view & valid`.
- TrackingNet: `valid`.
- COCO: `valid`, where COCO's valid is w > 50 and h > 50 ("to avoid too small bounding boxes"). The
  original's sampler ignores visibility for image datasets, so smaller objects are still drawn.

Deviations, all at build time rather than mid-training:
- A sequence whose annotation cannot be read, whose flag files do not match its boxes in length, whose
  first or last frame file is missing, or that has no valid box is left out and listed in `skipped`
  (the original would fail or loop when it draws one). COCO objects are kept whatever their size (as the
  original), except those with an empty or malformed box or a missing image.
- GOT-10k roots: `root` is the GOT-10k folder holding `train/` and `val/` (as the evaluation readers);
  a root that is itself the split folder (holds `list.txt`, as the original's `got10k_dir`) works too.
- GOT-10k's object class is read from meta_info.ini's `object_class:` line by key (the original reads
  line 6 by position; the same value on the real files).
- TrackingNet's sequences are sorted by name within each chunk (the original keeps `os.listdir` order).
- COCO annotations without `iscrowd` count as not crowd (the original would raise).

A root may be on a bucket (`gs://my-bucket/got10k`): every listing and read here goes through
`data_pipelines/paths.py`, which keeps the plain `os` / `open` calls for a local root and reads a URL through
etils.epath; the index and the records are the same either way.

A synthetic root may hold `_synthetic_split.txt` (written by `synthetic_train.py`): lines
`<split> <entry>` (`#` starts a comment). When present, the GOT-10k and LaSOT readers take the split's
entries from it instead of the packaged split list: 0-based list.txt positions for GOT-10k's `train_full`,
`vottrain`, `votval`; sequence names for LaSOT's `train`.
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import functools
import io
import json
import os
from typing import Any, Sequence

import numpy as np

from data_pipelines import paths
from data_pipelines.annotation_files import DatasetError
from data_pipelines.annotation_files import read_boxes
from data_pipelines.annotation_files import read_labels

SPLITS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "splits")
SYNTHETIC_SPLIT = "_synthetic_split.txt"
# The original's TrackingNet(set_ids=None) default, which names2datasets uses: all twelve training chunks.
TRACKINGNET_CHUNKS = tuple(range(12))
# coco_seq.py: "To avoid too small bounding boxes. Here we change the threshold to 50 pixels".
COCO_MIN_VALID_SIZE = 50
SCAN_THREADS = 16

_GOT10K_SPLIT_FILES = {
    "train_full": "got10k_train_full_split.txt",
    "vottrain": "got10k_vot_train_split.txt",
    "votval": "got10k_vot_val_split.txt",
}
_GOT10K_FILES = "<sequence>/{00000001.jpg.., groundtruth.txt, absence.label, cover.label, meta_info.ini}"
_LASOT_FILES = ("<class>/<class>-<n>/{img/00000001.jpg.., groundtruth.txt, full_occlusion.txt, "
                "out_of_view.txt}")


@dataclasses.dataclass(frozen=True)
class Layout:
  """How one training name is read: `reader` over `<root>/<subdir>`, restricted to `split`."""
  reader: str  # "got10k", "lasot", "trackingnet" or "coco"
  root_key: str  # the key of `build_train_datasets`' roots that serves every name of this family
  subdir: str = ""
  split: str | None = None


LAYOUTS = {
    "GOT10K_vottrain": Layout("got10k", "got10k", "train", "vottrain"),
    "GOT10K_votval": Layout("got10k", "got10k", "train", "votval"),
    "GOT10K_train_full": Layout("got10k", "got10k", "train", "train_full"),
    "GOT10K_official_val": Layout("got10k", "got10k", "val"),
    "SYNTHETIC": Layout("got10k", "synthetic", "train"),
    "LASOT": Layout("lasot", "lasot", "", "train"),
    "TRACKINGNET": Layout("trackingnet", "trackingnet"),
    "COCO17": Layout("coco", "coco"),
}


@dataclasses.dataclass
class Index:
  """Every kept sequence of one dataset, frames concatenated.

  Sequence s has frames `offsets[s]:offsets[s+1]` of `boxes` [F, 4] float32, `valid` [F] bool and
  `visible` [F] bool. Its frame files are `<root>/<folders[seq_folder[s]]>/<frame_format.format(k)>` for
  k from `first_frame`, or for an image dataset the one file `<root>/<folders[seq_folder[s]]>`.
  """
  is_video: bool
  frame_format: str
  first_frame: int
  folders: list[str]
  names: list[str]
  classes: list[str]
  seq_folder: np.ndarray  # [S] int32 into folders
  seq_class: np.ndarray  # [S] int32 into classes, -1 for none
  offsets: np.ndarray  # [S + 1] int64
  boxes: np.ndarray
  valid: np.ndarray
  visible: np.ndarray
  skipped: dict[str, str]


@dataclasses.dataclass
class _Record:
  name: str
  folder: str  # relative to the root
  object_class: str | None
  boxes: np.ndarray  # [N, 4] float32
  valid: np.ndarray
  visible: np.ndarray


def _assemble(records: Sequence[_Record], skipped: dict[str, str], is_video: bool, frame_format: str,
              first_frame: int) -> Index:
  folder_ids: dict[str, int] = {}
  class_ids: dict[str, int] = {}
  seq_folder = np.array([folder_ids.setdefault(r.folder, len(folder_ids)) for r in records], np.int32)
  seq_class = np.array([-1 if r.object_class is None else class_ids.setdefault(r.object_class, len(class_ids))
                        for r in records], np.int32)
  lengths = np.array([len(r.boxes) for r in records], np.int64)
  offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)

  def cat(field, shape, dtype):
    parts = [getattr(r, field) for r in records]
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(shape, dtype)

  return Index(is_video=is_video, frame_format=frame_format, first_frame=first_frame,
               folders=list(folder_ids), names=[r.name for r in records], classes=list(class_ids),
               seq_folder=seq_folder, seq_class=seq_class, offsets=offsets,
               boxes=cat("boxes", (0, 4), np.float32), valid=cat("valid", (0,), bool),
               visible=cat("visible", (0,), bool), skipped=dict(skipped))


def _stat(path: str) -> list | None:
  """What changes with a file or folder (`paths.stamp`: [mtime_ns, size] locally), None when it does not
  exist (part of a cache fingerprint)."""
  return paths.stamp(path)


def _read_synthetic_split(path: str, split: str) -> list[str]:
  entries = []
  with io.StringIO(paths.read_text(path)) as f:
    for number, line in enumerate(f, start=1):
      line = line.split("#", 1)[0].strip()
      if not line:
        continue
      fields = line.split()
      if len(fields) != 2:
        raise DatasetError(f"{path}:{number}: expected '<split> <entry>', got {line!r}")
      if fields[0] == split:
        entries.append(fields[1])
  if not entries:
    raise DatasetError(f"{path}: no '{split} <entry>' line; this file replaces the {split} split list of "
                       f"the synthetic root it sits in")
  return entries


def split_entries(root: str, split: str, packaged_file: str) -> tuple[list[str], str]:
  """The split's entries and the file they came from: `<root>/_synthetic_split.txt` when present, else
  the packaged copy of the original's split list."""
  synthetic = paths.join(root, SYNTHETIC_SPLIT)
  if paths.is_file(synthetic):
    return _read_synthetic_split(synthetic, split), synthetic
  return packaged_split(packaged_file), os.path.join(SPLITS_DIR, packaged_file)


def packaged_split(file_name: str) -> list[str]:
  """The non-empty lines of a split list copied from the original (`splits/`)."""
  with open(os.path.join(SPLITS_DIR, file_name), encoding="utf-8") as f:
    return [line.strip() for line in f if line.strip()]


def _is_file(path: str) -> bool:
  return paths.is_file(path)


def _missing_frame(folder: str, frame_format: str, first: int, count: int) -> str | None:
  """The first or last frame file when it is missing; the frames between are not checked (one
  directory listing per sequence would be 1.4M names for GOT-10k)."""
  for number in (first, first + count - 1):
    path = paths.join(folder, frame_format.format(number))
    if not _is_file(path):
      return f"missing frame file {path} ({count} boxes)"
  return None


def _read_flags(path: str) -> np.ndarray:
  """`read_labels`, about 10x faster on well-formed files (one value per line, or one comma-separated
  line); anything else goes through `read_labels`, which reads it or names the bad line."""
  text = None
  try:
    text = paths.read_text(path)
    if "#" not in text:
      return np.array(text.split() if "," not in text else text.strip().split(","), np.float64)
  except (OSError, ValueError):  # UnicodeDecodeError is a ValueError
    pass
  return read_labels(path, text)


def _flags_clear(values: np.ndarray) -> np.ndarray:
  """True where the original's `~flag` on a uint8 tensor leaves bit 0 set, i.e. the flag is even."""
  return (~values.astype(np.int64) & 1).astype(bool)


def _valid(boxes: np.ndarray) -> np.ndarray:
  return (boxes[:, 2] > 0) & (boxes[:, 3] > 0)


class _VideoReader:
  """A video layout: a list of entries, each read into one `_Record` or a reason to skip it."""
  frame_format = "{:08d}.jpg"
  first_frame = 1

  def __init__(self, root: str, layout: Layout):
    self.root = root
    self.layout = layout

  def selection(self) -> list[str]:
    """What picks the sequences besides the root (part of the cache file name)."""
    return []

  def fingerprint(self) -> list[Any]:
    """Stats of the files and folders whose change means the index must be rebuilt."""
    raise NotImplementedError

  def entries(self) -> list[Any]:
    raise NotImplementedError

  def entry_name(self, entry) -> str:
    return str(entry)

  def read(self, entry) -> _Record | str:
    raise NotImplementedError

  def _read_or_reason(self, entry) -> _Record | str:
    try:
      record = self.read(entry)
    except (DatasetError, OSError, UnicodeDecodeError) as e:
      if isinstance(e, OSError) and paths.is_storage_failure(self.root, e):
        raise  # a failed request to a bucket: stop the scan rather than leave out (and cache) a good sequence
      return f"unreadable annotation: {e}"
    if isinstance(record, str):
      return record
    if not record.valid.any():
      return f"no valid box (w > 0 and h > 0) among {len(record.boxes)} frames"
    return record

  def scan(self) -> Index:
    entries = self.entries()
    with concurrent.futures.ThreadPoolExecutor(SCAN_THREADS) as pool:
      results = list(pool.map(self._read_or_reason, entries))
    records, skipped = [], {}
    for entry, result in zip(entries, results):
      if isinstance(result, str):
        skipped[self.entry_name(entry)] = result
      else:
        records.append(result)
    return _assemble(records, skipped, True, self.frame_format, self.first_frame)


class _Got10k(_VideoReader):
  """got10k.py: sequences are list.txt's rows, a split picks rows by 0-based position."""

  def __init__(self, root: str, layout: Layout):
    super().__init__(root, layout)
    split_dir = paths.join(root, layout.subdir)
    if not paths.is_file(paths.join(split_dir, "list.txt")):
      if paths.is_file(paths.join(root, "list.txt")):
        split_dir = root  # the original's got10k_dir points at the split folder itself
      else:
        raise DatasetError(f"{paths.join(split_dir, 'list.txt')}: missing GOT-10k sequence list "
                           f"(expected {split_dir}/list.txt and {split_dir}/{_GOT10K_FILES})")
    self.split_dir = split_dir
    self.list_path = paths.join(split_dir, "list.txt")
    # As open(newline=""), which csv asks for: the bytes' own line ends.
    with io.StringIO(paths.read_bytes(self.list_path).decode("utf-8"), newline="") as f:
      listed = [row[0].strip() for row in csv.reader(f) if row and row[0].strip()]
    if layout.split is None:
      self.names, self.split_source = listed, None
      self.positions: list[str] = []
      return
    self.positions, self.split_source = split_entries(root, layout.split, _GOT10K_SPLIT_FILES[layout.split])
    names = []
    for entry in self.positions:
      try:
        position = int(entry)
      except ValueError:
        raise DatasetError(f"{self.split_source}: {entry!r} is not a list.txt position") from None
      if not 0 <= position < len(listed):
        raise DatasetError(f"{self.split_source}: position {position} is past the {len(listed)} sequences of "
                           f"{self.list_path} (the GOT-10k {layout.split} split needs the full train set)")
      names.append(listed[position])
    self.names = names

  def selection(self) -> list[str]:
    return [self.split_dir, *self.positions]

  def fingerprint(self) -> list[Any]:
    return [_stat(self.split_dir), _stat(self.list_path),
            _stat(self.split_source) if self.split_source else None]

  def entries(self) -> list[str]:
    return self.names

  def read(self, name: str) -> _Record | str:
    seq_dir = paths.join(self.split_dir, name)
    boxes = read_boxes(paths.join(seq_dir, "groundtruth.txt")).astype(np.float32)
    absence = _read_flags(paths.join(seq_dir, "absence.label"))
    cover = _read_flags(paths.join(seq_dir, "cover.label"))
    for what, values in (("absence.label", absence), ("cover.label", cover)):
      if len(values) != len(boxes):
        return f"{len(values)} values in {what} for {len(boxes)} boxes"
    valid = _valid(boxes)
    visible = _flags_clear(absence) & (cover > 0) & valid
    missing = valid.any() and _missing_frame(seq_dir, self.frame_format, self.first_frame, len(boxes))
    if missing:
      return missing
    return _Record(name, paths.relative(seq_dir, self.root), _got10k_object_class(seq_dir), boxes, valid,
                   visible)


def _got10k_object_class(seq_dir: str) -> str | None:
  try:
    with io.StringIO(paths.read_text(paths.join(seq_dir, "meta_info.ini"))) as f:
      for line in f:
        key, _, value = line.partition(":")
        if key.strip() == "object_class":
          return value.strip() or None
  except (OSError, UnicodeDecodeError) as e:
    if isinstance(e, OSError) and paths.is_storage_failure(seq_dir, e):
      raise
    # the original falls back to no class as well
  return None


class _Lasot(_VideoReader):
  """lasot.py with split='train': the names of lasot_train_split.txt."""

  def __init__(self, root: str, layout: Layout):
    super().__init__(root, layout)
    self.names, self.split_source = split_entries(root, layout.split, "lasot_train_split.txt")
    self.class_dirs = sorted({paths.join(root, name.split("-")[0]) for name in self.names})
    if not any(paths.is_dir(d) for d in self.class_dirs):
      raise DatasetError(f"{root}: none of the {len(self.class_dirs)} LaSOT training class folders "
                         f"(expected {root}/{_LASOT_FILES}, e.g. {root}/{self.names[0].split('-')[0]}/"
                         f"{self.names[0]})")

  def selection(self) -> list[str]:
    return self.names

  def fingerprint(self) -> list[Any]:
    return [_stat(self.split_source)] + [_stat(d) for d in self.class_dirs]

  def entries(self) -> list[str]:
    return self.names

  def read(self, name: str) -> _Record | str:
    parts = name.split("-")
    if len(parts) < 2:
      return "sequence name is not <class>-<n>"
    class_name, number = parts[0], parts[1]  # the original's _get_sequence_path
    seq_dir = paths.join(self.root, class_name, f"{class_name}-{number}")
    if not paths.is_dir(seq_dir):
      return f"missing sequence folder {seq_dir}"
    boxes = read_boxes(paths.join(seq_dir, "groundtruth.txt")).astype(np.float32)
    occlusion = _read_flags(paths.join(seq_dir, "full_occlusion.txt"))
    out_of_view = _read_flags(paths.join(seq_dir, "out_of_view.txt"))
    for what, values in (("full_occlusion.txt", occlusion), ("out_of_view.txt", out_of_view)):
      if len(values) != len(boxes):
        return f"{len(values)} values in {what} for {len(boxes)} boxes"
    valid = _valid(boxes)
    visible = _flags_clear(occlusion) & _flags_clear(out_of_view) & valid
    frame_dir = paths.join(seq_dir, "img")
    missing = valid.any() and _missing_frame(frame_dir, self.frame_format, self.first_frame, len(boxes))
    if missing:
      return missing
    return _Record(name, paths.relative(frame_dir, self.root), class_name, boxes, valid, visible)


@functools.lru_cache(maxsize=1)
def trackingnet_classes() -> dict[str, str]:
  """The original's trackingnet_classmap.txt: video name -> class."""
  with open(os.path.join(SPLITS_DIR, "trackingnet_classmap.txt"), encoding="utf-8") as f:
    return dict(line.rstrip("\n").split("\t")[:2] for line in f if "\t" in line)


class _TrackingNet(_VideoReader):
  """tracking_net.py with set_ids=None: every anno/*.txt of TRAIN_0..TRAIN_11, frames from 0.jpg."""
  frame_format = "{}.jpg"
  first_frame = 0

  def __init__(self, root: str, layout: Layout):
    super().__init__(root, layout)
    self.anno_dirs = [paths.join(root, f"TRAIN_{k}", "anno") for k in TRACKINGNET_CHUNKS]
    missing = [d for d in self.anno_dirs if not paths.is_dir(d)]
    if missing:
      what = "none" if len(missing) == len(self.anno_dirs) else f"{len(missing)}"
      raise DatasetError(f"{root}: {what} of the TrackingNet training chunks' annotation folders are missing "
                         f"({', '.join(missing)}); expected {root}/TRAIN_<k>/{{anno/<video>.txt, "
                         f"frames/<video>/0.jpg..}} for k in 0..11, as the original uses all twelve")

  def fingerprint(self) -> list[Any]:
    return [_stat(d) for d in self.anno_dirs]

  def entries(self) -> list[tuple[int, str]]:
    out = []
    for k, anno_dir in zip(TRACKINGNET_CHUNKS, self.anno_dirs):
      out.extend((k, name) for name in sorted(os.path.splitext(f)[0] for f in paths.listdir(anno_dir)
                                              if f.endswith(".txt")))
    return out

  def entry_name(self, entry) -> str:
    return f"TRAIN_{entry[0]}/{entry[1]}"

  def read(self, entry: tuple[int, str]) -> _Record | str:
    chunk, name = entry
    boxes = read_boxes(paths.join(self.root, f"TRAIN_{chunk}", "anno", f"{name}.txt")).astype(np.float32)
    valid = _valid(boxes)
    frame_dir = paths.join(self.root, f"TRAIN_{chunk}", "frames", name)
    missing = valid.any() and _missing_frame(frame_dir, self.frame_format, self.first_frame, len(boxes))
    if missing:
      return missing
    return _Record(name, paths.relative(frame_dir, self.root), trackingnet_classes().get(name), boxes, valid,
                   valid.copy())


class _Coco:
  """coco_seq.py with version='2017', split='train': every annotation with iscrowd == 0 is a one-frame
  sequence, in the order of the COCO API's `anns` dict (json order; a repeated id keeps its first place
  and its last value)."""
  is_video = False

  def __init__(self, root: str, layout: Layout):
    self.root = root
    self.layout = layout
    self.json_path = paths.join(root, "annotations", "instances_train2017.json")
    self.image_dir = paths.join(root, "images", "train2017")
    expected = f"expected {self.json_path} and {self.image_dir}/<file_name>.jpg"
    if not paths.is_file(self.json_path):
      raise DatasetError(f"{self.json_path}: missing COCO 2017 train annotations ({expected})")
    if not paths.is_dir(self.image_dir):
      raise DatasetError(f"{self.image_dir}: missing COCO 2017 train image folder ({expected})")

  def selection(self) -> list[str]:
    return []

  def fingerprint(self) -> list[Any]:
    return [_stat(self.json_path), _stat(self.image_dir)]

  def scan(self) -> Index:
    try:
      data = json.loads(paths.read_text(self.json_path))
      annotations = {}
      for ann in data["annotations"]:
        annotations[ann["id"]] = ann
      images = {image["id"]: image for image in data["images"]}
      categories = {cat["id"]: cat for cat in data.get("categories", [])}
    except (OSError, ValueError, KeyError, TypeError) as e:
      if isinstance(e, OSError) and paths.is_storage_failure(self.json_path, e):
        raise
      raise DatasetError(f"{self.json_path}: not a COCO instances file ({type(e).__name__}: {e})") from None
    present = set(paths.listdir(self.image_dir))
    records, skipped = [], {}
    for ann_id, ann in annotations.items():
      if ann.get("iscrowd", 0) != 0:
        continue
      name = str(ann_id)
      result = self._record(name, ann, images, categories, present)
      if isinstance(result, str):
        skipped[name] = result
      else:
        records.append(result)
    return _assemble(records, skipped, False, "", 0)

  def _record(self, name, ann, images, categories, present) -> _Record | str:
    try:
      box = np.asarray(ann["bbox"], np.float64).reshape(1, 4)
    except (KeyError, TypeError, ValueError):
      return f"malformed bbox {ann.get('bbox')!r}"
    if not np.all(np.isfinite(box)) or box[0, 2] <= 0 or box[0, 3] <= 0:
      return f"empty bbox {box[0].tolist()}"
    image = images.get(ann.get("image_id"))
    if image is None or "file_name" not in image:
      return f"image id {ann.get('image_id')!r} is not in the images list"
    file_name = image["file_name"]
    if file_name not in present and not paths.is_file(paths.join(self.image_dir, file_name)):
      return f"missing image file {paths.join(self.image_dir, file_name)}"
    boxes = box.astype(np.float32)
    valid = (boxes[:, 2] > COCO_MIN_VALID_SIZE) & (boxes[:, 3] > COCO_MIN_VALID_SIZE)
    category = categories.get(ann.get("category_id"), {})
    return _Record(name, paths.relative(paths.join(self.image_dir, file_name), self.root),
                   category.get("name"), boxes, valid, valid.copy())


def make_reader(name: str, root: str):
  """The reader of training name `name` over `root`, with its layout checked (DatasetError if absent)."""
  layout = LAYOUTS[name]
  reader = {"got10k": _Got10k, "lasot": _Lasot, "trackingnet": _TrackingNet, "coco": _Coco}[layout.reader]
  return reader(root, layout)
