"""Training datasets: the original's `names2datasets` names, read from their native layouts.

    datasets = build_train_datasets(["GOT10K_vottrain", "LASOT", "COCO17", "TRACKINGNET"],
                                    {"got10k": ".../got10k", "lasot": ".../lasot/LaSOTBenchmark",
                                     "coco": ".../coco", "trackingnet": ".../trackingnet"},
                                    cache_dir=".../index_cache")
    seq = datasets[0].sequence(0)   # TrainSequence: frames, boxes, valid, visible, is_video, ...

A root may be a bucket (`gs://my-bucket/got10k`): it is listed and read through etils.epath (`paths.py`), its
frames are `gs://...` paths, which `pipeline.read_image` reads the same way; its index is cached on this
machine (`index_cache.DEFAULT_DIR`) unless `cache_dir` says where.

The layouts, the split lists and the visibility rules are in `layouts.py`; the on-disk index cache and its
invalidation rule in `index_cache.py`. Everything that can be wrong with a root (missing, wrong layout,
split lists that do not fit it, no usable sequence) raises `DatasetError` here, when the datasets are
built, so a training run fails at its start; single bad sequences are left out and listed in
`TrainDataset.skipped` with the reason.

A `TrainDataset` holds its index as a few flat numpy arrays and string tables (it is pickled into every
grain worker); `sequence(i)` builds the frame paths on demand.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Iterator, Mapping, Sequence

import numpy as np

from data_pipelines import paths
from data_pipelines.annotation_files import DatasetError
from data_pipelines.training import index_cache
from data_pipelines.training import layouts
from data_pipelines.training.layouts import Index

TRAIN_NAMES = tuple(layouts.LAYOUTS)

__all__ = ["DatasetError", "TRAIN_NAMES", "TrainDataset", "TrainSequence", "build_train_dataset",
           "build_train_datasets", "root_keys"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, eq=False)
class TrainSequence:
  """One training sequence (COCO: one object in one image).

  boxes: [N, 4] float32 x, y, w, h as the annotation gives them.
  valid: [N] bool, the original's `valid`: w > 0 and h > 0 (COCO: w > 50 and h > 50).
  visible: [N] bool, the original's `visible` (see `layouts.py` for each dataset's rule).
  """
  dataset: str
  name: str
  frames: tuple[str, ...]
  boxes: np.ndarray
  valid: np.ndarray
  visible: np.ndarray
  is_video: bool
  object_class: str | None = None


class TrainDataset:
  """The kept sequences of one training name under one root."""

  def __init__(self, name: str, root: str, index: Index, cache_path: str | None = None,
               from_cache: bool = False):
    self.name = name
    self.root = root
    self.is_video = index.is_video
    self.skipped: dict[str, str] = dict(index.skipped)
    self.cache_path = cache_path
    self.from_cache = from_cache
    self._index = index
    for array in (index.seq_folder, index.seq_class, index.offsets, index.boxes, index.valid, index.visible):
      array.flags.writeable = False  # sequences hand out views of these

  def __len__(self) -> int:
    return len(self._index.names)

  @property
  def num_frames(self) -> int:
    return int(self._index.offsets[-1])

  @property
  def names(self) -> list[str]:
    return list(self._index.names)

  def sequence(self, index: int) -> TrainSequence:
    n = len(self)
    if not -n <= index < n:
      raise IndexError(f"{self.name} has {n} sequences, asked for {index}")
    i = int(index) % n
    ix = self._index
    start, stop = int(ix.offsets[i]), int(ix.offsets[i + 1])
    path = os.path.join(self.root, ix.folders[ix.seq_folder[i]])
    if ix.is_video:
      prefix, fmt = path + os.sep, ix.frame_format
      frames = tuple([prefix + fmt.format(k) for k in range(ix.first_frame, ix.first_frame + stop - start)])
    else:
      frames = (path,)
    class_id = int(ix.seq_class[i])
    return TrainSequence(dataset=self.name, name=ix.names[i], frames=frames, boxes=ix.boxes[start:stop],
                         valid=ix.valid[start:stop], visible=ix.visible[start:stop], is_video=ix.is_video,
                         object_class=ix.classes[class_id] if class_id >= 0 else None)

  def __iter__(self) -> Iterator[TrainSequence]:
    return (self.sequence(i) for i in range(len(self)))

  def __repr__(self) -> str:
    return (f"TrainDataset({self.name!r}, root={self.root!r}, {len(self)} sequences, {self.num_frames} frames, "
            f"{len(self.skipped)} skipped)")


def root_keys(name: str) -> tuple[str, str]:
  """The keys `build_train_datasets` looks up for `name`'s root: the name itself, then its family."""
  return name, _layout(name).root_key


def _layout(name: str) -> layouts.Layout:
  if name not in layouts.LAYOUTS:
    raise ValueError(f"unknown training dataset {name!r}; one of {', '.join(TRAIN_NAMES)}")
  return layouts.LAYOUTS[name]


def build_train_dataset(name: str, root: str, cache_dir: str | None = None) -> TrainDataset:
  """Reads training name `name` (one of TRAIN_NAMES) from `root` (a folder, or a bucket: `gs://...`),
  through the index cache in `cache_dir` when given (see index_cache.py; a folder or a bucket); a root on a
  bucket without `cache_dir` is cached in `index_cache.DEFAULT_DIR` on this machine. DatasetError when the
  root is missing or unreadable, has not the layout, or yields no usable sequence."""
  _layout(name)
  root = paths.normalize(root)
  if cache_dir is None and paths.is_remote(root):
    cache_dir = index_cache.DEFAULT_DIR  # scanning a bucket is one request per file: do it once
  try:
    _check_root(name, root)
    reader = layouts.make_reader(name, root)
    path = None
    if cache_dir is not None:
      cache_dir = paths.normalize(cache_dir)
      # Made before the fingerprint is taken: a cache folder inside the root must not stale its own file.
      try:
        index_cache.make_folder(cache_dir)
      except OSError as e:
        raise DatasetError(f"{cache_dir}: cannot make the index cache folder ({e}); give a folder this "
                           f"machine can write (--cache-dir)") from None
      path = index_cache.cache_file(cache_dir, name, root, reader.selection())
    # Taken before scanning: a change during the scan makes the next start scan again.
    head = index_cache.header(name, root, reader.fingerprint())
    index = index_cache.load(path, head) if path else None
    from_cache = index is not None
    started = time.monotonic()
    if index is None:
      index = reader.scan()
  except OSError as e:  # a storage error outside one sequence's files (those leave out the sequence)
    hint = f" (gcloud storage ls {root})" if paths.is_remote(root) else ""
    raise DatasetError(f"{root}: cannot read the {name} root ({e}); check this machine's access to it{hint} "
                       "and run again") from None
  if not index.names:
    reasons = "; ".join(f"{k}: {v}" for k, v in list(index.skipped.items())[:3])
    raise DatasetError(f"{root}: no usable {name} sequence ({len(index.skipped)} skipped"
                       f"{': ' + reasons if reasons else ''})")
  if path and not from_cache:
    index_cache.save(path, index, head)
  dataset = TrainDataset(name, root, index, path, from_cache)
  how = f"from {path}" if from_cache else f"scanned in {time.monotonic() - started:.1f} s"
  logger.info("%s: %d sequences, %d frames under %s (%s)", name, len(dataset), dataset.num_frames, root, how)
  if dataset.skipped:
    examples = "; ".join(f"{k}: {v}" for k, v in list(dataset.skipped.items())[:3])
    logger.warning("%s: left out %d of %d sequences (e.g. %s); all in TrainDataset.skipped", name,
                   len(dataset.skipped), len(dataset.skipped) + len(dataset), examples)
  return dataset


def _check_root(name: str, root: str) -> None:
  """DatasetError when the root folder is not there: on a bucket, saying whether the bucket itself is."""
  if paths.is_dir(root):
    return
  if not paths.is_remote(root):
    raise DatasetError(f"{root}: missing {name} root folder")
  scheme, _, rest = root.partition("://")
  bucket = f"{scheme}://{rest.split('/', 1)[0]}"
  if bucket != root and not paths.is_dir(bucket):
    raise DatasetError(f"{root}: missing {name} root folder: the bucket {bucket} does not exist or this "
                       f"machine's credentials cannot read it (gcloud storage ls {bucket})")
  raise DatasetError(f"{root}: missing {name} root folder: nothing is stored under it (gcloud storage ls "
                     f"{bucket}/ shows what is)")


def build_train_datasets(names: Sequence[str], roots: Mapping[str, str],
                         cache_dir: str | None = None) -> list[TrainDataset]:
  """One dataset per name, in order. `roots` maps a name or its family (`got10k` for every GOT10K_* name,
  `lasot`, `trackingnet`, `coco`, `synthetic`) to its root; the name's own entry wins."""
  datasets = []
  for name in names:
    keys = root_keys(name)
    root = next((roots[key] for key in keys if key in roots), None)
    if root is None:
      raise DatasetError(f"no root for training dataset {name}: give roots[{keys[0]!r}] or roots[{keys[1]!r}]")
    datasets.append(build_train_dataset(name, root, cache_dir))
  return datasets
