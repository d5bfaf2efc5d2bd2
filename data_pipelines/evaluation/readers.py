"""Evaluation datasets (the tracking benchmarks GOT-10k, LaSOT, ...) read from their native on-disk layouts.

`load_dataset(name, root)` returns the benchmark's sequences with absolute frame paths and the boxes as the
files give them (x, y, w, h, nominally 1-based; never shifted), the same sequences, names, frames and boxes
the original's `lib/test/evaluation/*dataset.py` loaders build. `root` is what the original's
`env_settings()` path for the benchmark points at:

| name          | root holds                                                                          |
|---------------|-------------------------------------------------------------------------------------|
| `got10k_val`  | `val/list.txt`, `val/<seq>/{00000001.jpg.., groundtruth.txt, absence.label, cover.label}` |
| `got10k_test` | `test/list.txt`, `test/<seq>/{00000001.jpg.., groundtruth.txt}` (first box only)    |
| `lasot`       | `<class>/<class>-<n>/{img/00000001.jpg.., groundtruth.txt, full_occlusion.txt,`      |
|               | `out_of_view.txt}` (the 280 test sequences)                                          |
| `lasot_ext`   | the same layout, for the 150 extension-subset sequences                             |
| `trackingnet` | `TEST/frames/<seq>/0.jpg..`, `TEST/anno/<seq>.txt` (first box only)                 |
| `nfs`         | `sequences/<seq>/00001.jpg..`, `anno/nfs_<seq>.txt` (30 fps)                        |
| `uav123`      | `data_seq/UAV123/<folder>/000001.jpg..`, `anno/UAV123/<seq>.txt`                    |
| `otb`         | `<seq>/img/0001.jpg..`, `<seq>/groundtruth_rect.txt`                                |

GOT-10k and TrackingNet list their sequences on disk (`list.txt`, the `anno` folder). The others use
fixed tables (`tables.py`) and every table sequence must be there, unless the root holds
`_synthetic_sequences.txt` (written by `data_pipelines.synthetic`): then its lines, `<name> <num frames>`,
replace the table, so that a small synthetic root with the first few table sequences reads like a full
one. Its frame counts stand in for the table's frame ranges (NFS, UAV123, OTB), which are the real
videos' lengths.

Frame counts are checked against the annotations where the benchmark annotates every frame; test splits
(GOT-10k test, TrackingNet) give only the first box and their other rows are NaN. Every frame file is
checked to exist (one directory listing per folder). Any mismatch raises `DatasetError`.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from collections.abc import Callable, Iterable
from typing import Sequence as SequenceOf

import numpy as np

from data_pipelines.evaluation import tables
from data_pipelines.annotation_files import DatasetError
from data_pipelines.annotation_files import read_boxes
from data_pipelines.annotation_files import read_labels

DATASETS = ("got10k_val", "got10k_test", "lasot", "lasot_ext", "trackingnet", "nfs", "uav123", "otb")
SYNTHETIC_LIST = "_synthetic_sequences.txt"

__all__ = ["DATASETS", "DatasetError", "SYNTHETIC_LIST", "Sequence", "TableEntry", "load_dataset",
           "table_entries"]


@dataclasses.dataclass(frozen=True)
class Sequence:
  """One evaluation sequence.

  ground_truth: [N, 4] float64 x, y, w, h as the files give them; NaN rows where the benchmark gives no
    box (all but frame 0 of GOT-10k test and TrackingNet; UAV123 writes NaN itself for absent targets).
  target_visible: [N] bool where the benchmark says (LaSOT: neither fully occluded nor out of view;
    GOT-10k val: cover.label > 0 as its toolkit, or absence.label == 0 without it), else None.
  """
  name: str
  dataset: str
  frames: tuple[str, ...]
  ground_truth: np.ndarray
  target_visible: np.ndarray | None
  object_class: str | None = None

  @property
  def init_box(self) -> np.ndarray:
    """[4] the first frame's box, which initialises the tracker."""
    box = self.ground_truth[0]
    if not np.all(np.isfinite(box)) or box[2] <= 0 or box[3] <= 0:
      raise ValueError(f"{self.dataset} sequence {self.name!r} has no usable first-frame box: {box.tolist()}")
    return box


@dataclasses.dataclass(frozen=True)
class TableEntry:
  """A sequence of a table-driven benchmark, paths relative to the root. Frames are
  `frame_dir/{i:0{zero_pad}d}.jpg` for i in [first_frame + init_omit, last_frame]; the annotation has a
  row for every frame of [first_frame, last_frame] and its first `init_omit` rows are dropped."""
  name: str
  frame_dir: str
  annotation: str
  first_frame: int
  last_frame: int
  zero_pad: int
  init_omit: int
  object_class: str


def _lasot_entry(name: str) -> TableEntry:
  # The class folder is the part before the '-'; class names keep their case (rubicCube-1).
  class_name = name.split("-")[0]
  folder = f"{class_name}/{name}"
  return TableEntry(name, f"{folder}/img", f"{folder}/groundtruth.txt", 1, 0, 8, 0, class_name)


def table_entries(name: str) -> list[TableEntry]:
  """The full sequence table of a table-driven benchmark (lasot, lasot_ext, nfs, uav123, otb). LaSOT's
  entries have last_frame 0: their length is the annotation's."""
  if name == "lasot":
    return [_lasot_entry(n) for n in tables.names(tables.LASOT_TEST)]
  if name == "lasot_ext":
    return [_lasot_entry(n) for n in tables.names(tables.LASOT_EXT)]
  if name == "nfs":
    return [TableEntry(f"nfs_{r[0]}", f"sequences/{r[0]}", f"anno/nfs_{r[0]}.txt", 1, int(r[1]), 5, 0,
                       " ".join(r[2:])) for r in tables.rows(tables.NFS)]
  if name == "uav123":
    return [TableEntry(f"uav_{r[0]}", f"data_seq/UAV123/{r[1]}", f"anno/UAV123/{r[0]}.txt", int(r[2]),
                       int(r[3]), 6, 0, " ".join(r[4:])) for r in tables.rows(tables.UAV123)]
  if name == "otb":
    entries = []
    for r in tables.rows(tables.OTB):
      folder, annotation = tables.OTB_FOLDERS.get(r[0], (r[0], "groundtruth_rect.txt"))
      entries.append(TableEntry(r[0], f"{folder}/img", f"{folder}/{annotation}", int(r[1]), int(r[2]),
                                tables.OTB_ZERO_PAD.get(r[0], 4), tables.OTB_INIT_OMIT.get(r[0], 0),
                                " ".join(r[3:])))
    return entries
  raise ValueError(f"{name!r} has no sequence table; table-driven benchmarks: lasot, lasot_ext, nfs, "
                   "uav123, otb")


class _Listings:
  """Directory listings, each read once per load (UAV123's parts share a folder). `check` is
  load_dataset's check_frames."""

  def __init__(self, check: bool):
    self.check = check
    self._cache: dict[str, frozenset[str]] = {}

  def __call__(self, folder: str) -> frozenset[str]:
    if folder not in self._cache:
      try:
        self._cache[folder] = frozenset(os.listdir(folder))
      except FileNotFoundError:
        raise DatasetError(f"{folder}: missing frame folder") from None
      except NotADirectoryError:
        raise DatasetError(f"{folder}: expected a frame folder, found a file") from None
    return self._cache[folder]


def _require_dir(path: str, what: str) -> None:
  if not os.path.isdir(path):
    raise DatasetError(f"{path}: missing {what}")


def _read_name_list(path: str) -> list[str]:
  try:
    with open(path, encoding="utf-8") as f:
      return [line.strip() for line in f if line.strip()]
  except FileNotFoundError:
    raise DatasetError(f"{path}: missing sequence list") from None


def _select(dataset: str, available: list[str], wanted: SequenceOf[str] | None,
            listed_in: str | None = None) -> list[str]:
  if wanted is None:
    return list(available)
  if isinstance(wanted, str):
    wanted = [wanted]
  known = set(available)
  for name in wanted:
    if name not in known:
      close = difflib.get_close_matches(name, available, n=3)
      hint = f"did you mean {', '.join(close)}? " if close else ""
      raise ValueError(f"unknown {dataset} sequence {name!r}; {hint}valid names include "
                       f"{', '.join(available[:5])}{', ...' if len(available) > 5 else ''} "
                       f"({len(available)} in all{f', as listed in {listed_in}' if listed_in else ''})")
  return list(wanted)


def _check_frames(frames: Iterable[str], listings: _Listings, sequence: str) -> tuple[str, ...]:
  frames = tuple(frames)
  for path in frames if listings.check else ():
    if os.path.basename(path) not in listings(os.path.dirname(path)):
      raise DatasetError(f"{path}: missing frame file (sequence {sequence!r}, {len(frames)} frames)")
  return frames


def _check_count(what: str, path: str, count: int, num_frames: int, sequence: str) -> None:
  if count != num_frames:
    raise DatasetError(f"{path}: {count} {what} for {num_frames} frames (sequence {sequence!r})")


def _numbered_jpegs(folder: str, listings: _Listings, first: int) -> list[str]:
  """The folder's `<int>.jpg` files as absolute paths, which must number first, first+1, ... with no gap
  (the original sorts them by number and takes them all)."""
  numbered = {}
  for file_name in listings(folder):
    if file_name.endswith(".jpg"):
      if not re.fullmatch(r"\d+\.jpg", file_name):
        raise DatasetError(f"{os.path.join(folder, file_name)}: frame file name is not a number")
      numbered[int(file_name[:-4])] = file_name
  if not numbered:
    raise DatasetError(f"{folder}: no .jpg frames")
  frames = []
  for number in range(first, first + len(numbered)):
    if number not in numbered:
      width = min(len(f) for f in numbered.values()) - 4  # 8 for GOT-10k, 1 (no padding) for TrackingNet
      raise DatasetError(f"{os.path.join(folder, f'{number:0{width}d}.jpg')}: missing frame file "
                         f"({len(numbered)} frames in the folder, numbered from {first})")
    frames.append(os.path.join(folder, numbered[number]))
  return frames


def _pad_first_boxes(boxes: np.ndarray, num_frames: int, path: str) -> np.ndarray:
  if len(boxes) == 0:
    raise DatasetError(f"{path}: no box in the annotation file")
  if len(boxes) > num_frames:
    raise DatasetError(f"{path}: {len(boxes)} boxes for {num_frames} frames")
  full = np.full((num_frames, 4), np.nan)
  full[:len(boxes)] = boxes
  return full


def _load_got10k(root: str, split: str, wanted: SequenceOf[str] | None, check: bool) -> list[Sequence]:
  dataset = f"got10k_{split}"
  split_dir = os.path.join(root, split)
  _require_dir(split_dir, f"GOT-10k {split} folder")
  names = _select(dataset, _read_name_list(os.path.join(split_dir, "list.txt")), wanted)
  listings = _Listings(check)
  out = []
  for name in names:
    seq_dir = os.path.join(split_dir, name)
    _require_dir(seq_dir, f"sequence directory of {dataset} sequence {name!r}")
    gt_path = os.path.join(seq_dir, "groundtruth.txt")
    boxes = read_boxes(gt_path)
    visible = None
    if split == "test":
      frames = _numbered_jpegs(seq_dir, listings, first=1)
      boxes = _pad_first_boxes(boxes, len(frames), gt_path)
    elif not check:
      frames = [os.path.join(seq_dir, f"{i:08d}.jpg") for i in range(1, len(boxes) + 1)]
    else:
      frames = _numbered_jpegs(seq_dir, listings, first=1)
      if len(frames) < len(boxes):
        raise DatasetError(f"{os.path.join(seq_dir, f'{len(frames) + 1:08d}.jpg')}: missing frame file "
                           f"({len(boxes)} boxes in {gt_path})")
      _check_count("boxes", gt_path, len(boxes), len(frames), name)
    if split == "val":
      absence = os.path.join(seq_dir, "absence.label")
      cover = os.path.join(seq_dir, "cover.label")
      # The GOT-10k toolkit scores frames with cover > 0; absence.label == 0 stands in without it.
      if os.path.exists(cover):
        labels = read_labels(cover)
        _check_count("labels", cover, len(labels), len(frames), name)
        visible = labels > 0
      elif os.path.exists(absence):
        labels = read_labels(absence)
        _check_count("labels", absence, len(labels), len(frames), name)
        visible = labels == 0
    out.append(Sequence(name, dataset, tuple(frames), boxes, visible))
  return out


def _load_trackingnet(root: str, wanted: SequenceOf[str] | None, check: bool) -> list[Sequence]:
  anno_dir = os.path.join(root, "TEST", "anno")
  _require_dir(anno_dir, "TrackingNet TEST/anno folder")
  available = sorted(f[:-4] for f in os.listdir(anno_dir) if f.endswith(".txt"))
  listings = _Listings(check)
  out = []
  for name in _select("trackingnet", available, wanted):
    frame_dir = os.path.join(root, "TEST", "frames", name)
    _require_dir(frame_dir, f"frame folder of trackingnet sequence {name!r}")
    gt_path = os.path.join(anno_dir, f"{name}.txt")
    # TrackingNet numbers its frames from 0.
    frames = _numbered_jpegs(frame_dir, listings, first=0)
    boxes = _pad_first_boxes(read_boxes(gt_path), len(frames), gt_path)
    out.append(Sequence(name, "trackingnet", tuple(frames), boxes, None))
  return out


def _synthetic_counts(root: str) -> dict[str, int] | None:
  path = os.path.join(root, SYNTHETIC_LIST)
  if not os.path.exists(path):
    return None
  counts = {}
  for number, line in enumerate(_read_name_list(path), start=1):
    fields = line.split()
    if len(fields) != 2 or not fields[1].isdigit() or int(fields[1]) < 1:
      raise DatasetError(f"{path}:{number}: expected '<sequence name> <number of frames>', got {line!r}")
    counts[fields[0]] = int(fields[1])
  return counts


def _table_sequence(root: str, dataset: str, entry: TableEntry, listings: _Listings) -> Sequence:
  gt_path = os.path.join(root, entry.annotation)
  frame_dir = os.path.join(root, entry.frame_dir)
  if dataset in ("lasot", "lasot_ext"):
    seq_dir = os.path.dirname(frame_dir)
    _require_dir(seq_dir, f"sequence directory of {dataset} sequence {entry.name!r}")
    boxes = read_boxes(gt_path)
    num_frames = len(boxes)
    frames = _check_frames((os.path.join(frame_dir, f"{i:08d}.jpg") for i in range(1, num_frames + 1)),
                           listings, entry.name)
    num_files = len([f for f in listings(frame_dir) if f.endswith(".jpg")]) if listings.check else num_frames
    if num_files != num_frames:
      raise DatasetError(f"{gt_path}: {num_frames} boxes for {num_files} frame files in {frame_dir}")
    visible = np.ones(num_frames, dtype=bool)
    for label_file in ("full_occlusion.txt", "out_of_view.txt"):
      label_path = os.path.join(seq_dir, label_file)
      labels = read_labels(label_path)
      _check_count("labels", label_path, len(labels), num_frames, entry.name)
      visible &= labels == 0
    return Sequence(entry.name, dataset, frames, boxes, visible, entry.object_class)
  if not os.path.exists(gt_path):
    raise DatasetError(f"{gt_path}: missing annotation file of {dataset} sequence {entry.name!r}")
  boxes = read_boxes(gt_path)
  _check_count("boxes", gt_path, len(boxes), entry.last_frame - entry.first_frame + 1, entry.name)
  frames = _check_frames(
      (os.path.join(frame_dir, f"{i:0{entry.zero_pad}d}.jpg")
       for i in range(entry.first_frame + entry.init_omit, entry.last_frame + 1)), listings, entry.name)
  return Sequence(entry.name, dataset, frames, boxes[entry.init_omit:], None, entry.object_class)


def _load_table_dataset(root: str, dataset: str, wanted: SequenceOf[str] | None,
                        check: bool) -> list[Sequence]:
  entries = {e.name: e for e in table_entries(dataset)}
  synthetic = _synthetic_counts(root)
  if synthetic is not None:
    for name, count in synthetic.items():
      if name not in entries:
        raise DatasetError(f"{os.path.join(root, SYNTHETIC_LIST)}: {name!r} is not a {dataset} sequence")
      entry = entries[name]
      if dataset not in ("lasot", "lasot_ext"):
        entries[name] = dataclasses.replace(entry, last_frame=entry.first_frame + count - 1)
    available = list(synthetic)
  else:
    available = list(entries)
  names = _select(dataset, available, wanted,
                  None if synthetic is None else os.path.join(root, SYNTHETIC_LIST))
  if wanted is None and synthetic is None:
    # Fail before reading anything when the root is only part of the benchmark.
    marker = (lambda e: os.path.dirname(e.annotation)) if dataset in ("lasot", "lasot_ext") else (
        lambda e: e.annotation)
    missing = [n for n in names if not os.path.exists(os.path.join(root, marker(entries[n])))]
    if missing:
      raise DatasetError(
          f"{os.path.join(root, marker(entries[missing[0]]))}: missing {dataset} sequence {missing[0]!r} "
          f"({len(missing)} of the {len(names)} table sequences are absent from {root}); pass "
          f"sequences=[...] to read a subset")
  listings = _Listings(check)
  return [_table_sequence(root, dataset, entries[n], listings) for n in names]


_LOADERS: dict[str, Callable[[str, SequenceOf[str] | None, bool], list[Sequence]]] = {
    "got10k_val": lambda root, wanted, check: _load_got10k(root, "val", wanted, check),
    "got10k_test": lambda root, wanted, check: _load_got10k(root, "test", wanted, check),
    "trackingnet": _load_trackingnet,
    **{name: (lambda root, wanted, check, name=name: _load_table_dataset(root, name, wanted, check))
       for name in ("lasot", "lasot_ext", "nfs", "uav123", "otb")},
}


def load_dataset(name: str, root: str, sequences: SequenceOf[str] | None = None, *,
                 check_frames: bool = True) -> list[Sequence]:
  """The benchmark's sequences under `root` (all of them, or those named in `sequences`, in that order).

  check_frames=False skips the per-frame existence checks and the frame-file counts (for scoring, which
  reads only annotations); GOT-10k test and TrackingNet still list their frame folders, since those give
  the sequence length.

  Raises ValueError for an unknown benchmark or sequence name and DatasetError (a ValueError) for a root
  that does not match the benchmark's layout.
  """
  if name not in DATASETS:
    raise ValueError(f"unknown benchmark {name!r}; one of {', '.join(DATASETS)}")
  root = os.path.abspath(os.path.expanduser(root))
  _require_dir(root, f"{name} root")
  return _LOADERS[name](root, sequences, check_frames)
