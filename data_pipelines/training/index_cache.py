"""The scanned training index kept on disk between runs, pickle-free.

`<cache_dir>/<name>-<key>.npz`, where `key` hashes the format version, the training name, the absolute root
and the split's entries, holds the `layouts.Index` arrays plus one `meta` array: UTF-8 JSON with the
header (format version, name, root, fingerprint) and the index's strings (frame folders, names, classes,
skipped sequences). Frame paths are not stored; they follow from each sequence's folder and frame count.

A cache file is used when its header matches: same name, root and split (the file name), same format
version, and the same fingerprint, i.e. the same mtime and size of the files and folders whose listing
defines the sequences (GOT-10k: the split folder and list.txt; LaSOT: the class folders; TrackingNet: the
twelve `anno` folders; COCO: the instances json and the image folder; and any `_synthetic_split.txt`).
Adding, removing or renaming a sequence changes those; editing an annotation file in place inside a
sequence folder does not, so delete the cache file after such an edit (or build with cache_dir=None).

Written through a temporary file in the same folder and renamed, so a reader never sees half a file; a
cache that cannot be read or written only costs a rescan (logged), never the run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import zipfile
from typing import Any

import numpy as np

from data_pipelines.training.layouts import Index

FORMAT_VERSION = 1
_ARRAYS = ("seq_folder", "seq_class", "offsets", "boxes", "valid", "visible")
_STRINGS = ("folders", "names", "classes", "skipped")

logger = logging.getLogger(__name__)


def cache_file(cache_dir: str, name: str, root: str, selection: list[str]) -> str:
  digest = hashlib.sha256(json.dumps([FORMAT_VERSION, name, root, selection]).encode()).hexdigest()[:16]
  return os.path.join(cache_dir, f"{name}-{digest}.npz")


def header(name: str, root: str, fingerprint: list[Any]) -> dict[str, Any]:
  # Through JSON once, so that a header read back from a file compares equal (tuples become lists).
  return json.loads(json.dumps({"version": FORMAT_VERSION, "name": name, "root": root,
                                "fingerprint": fingerprint}))


def save(path: str, index: Index, head: dict[str, Any]) -> bool:
  """Writes `index` under `head` atomically; False (and a warning) when the folder is not writable."""
  meta = dict(head, is_video=index.is_video, frame_format=index.frame_format, first_frame=index.first_frame,
              **{key: getattr(index, key) for key in _STRINGS})
  arrays = {key: getattr(index, key) for key in _ARRAYS}
  arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), np.uint8)
  folder = os.path.dirname(os.path.abspath(path))
  tmp = None
  try:
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp_", suffix=".npz")
    with os.fdopen(fd, "wb") as f:
      np.savez(f, **arrays)
    os.chmod(tmp, 0o644)  # mkstemp makes the file private
    os.replace(tmp, path)
    tmp = None
  except OSError as e:
    logger.warning("could not write the dataset index cache %s (%s); the next start scans again", path, e)
    return False
  finally:
    if tmp is not None and os.path.exists(tmp):
      os.remove(tmp)
  return True


def load(path: str, head: dict[str, Any]) -> Index | None:
  """The cached index, or None when there is none, it is unreadable, or its header differs from `head`."""
  if not os.path.isfile(path):
    return None
  try:
    with np.load(path, allow_pickle=False) as data:
      meta = json.loads(bytes(data["meta"]).decode("utf-8"))
      if any(meta.get(key) != value for key, value in head.items()):
        logger.info("dataset index cache %s is stale (the root's listing changed); scanning again", path)
        return None
      arrays = {key: np.asarray(data[key]) for key in _ARRAYS}
    return Index(is_video=bool(meta["is_video"]), frame_format=meta["frame_format"],
                 first_frame=int(meta["first_frame"]), **{key: meta[key] for key in _STRINGS}, **arrays)
  except (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as e:
    logger.warning("dataset index cache %s is unreadable (%s: %s); scanning again", path, type(e).__name__, e)
    return None
