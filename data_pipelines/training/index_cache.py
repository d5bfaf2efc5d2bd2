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

A root on a bucket (`gs://...`) has its index cached like a local one; without a cache folder it goes to
DEFAULT_DIR on this machine (where the trainer puts it for a bucket workdir), since scanning a bucket is a
storage request per file. Its file name hashes the root's URL, so two roots never share a file. A bucket's
folders have no mtime: their part of the fingerprint is their listing (`paths.stamp`). The cache folder
may itself be a bucket (`--cache-dir gs://...`): what a remote Beam runner's workers need to read the
launcher's index instead of each scanning the root again.

Written through a temporary file in the same folder and renamed, so a reader never sees half a file; a
cache that cannot be read or written only costs a rescan (logged), never the run.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tempfile
import uuid
import zipfile
from typing import Any

import numpy as np

from data_pipelines import paths
from data_pipelines.training.layouts import Index

FORMAT_VERSION = 1
# The cache of a bucket root when no cache folder is given (as `fartrack_jax.training.trainer.default_data`
# for a bucket workdir).
DEFAULT_DIR = "~/.cache/fartrack_jax/index_cache"
_ARRAYS = ("seq_folder", "seq_class", "offsets", "boxes", "valid", "visible")
_STRINGS = ("folders", "names", "classes", "skipped")

logger = logging.getLogger(__name__)


def make_folder(cache_dir: str) -> None:
  if paths.is_remote(cache_dir):
    with paths.os_errors(cache_dir):
      paths.as_path(cache_dir).mkdir(parents=True, exist_ok=True)
  else:
    os.makedirs(cache_dir, exist_ok=True)


def cache_file(cache_dir: str, name: str, root: str, selection: list[str]) -> str:
  digest = hashlib.sha256(json.dumps([FORMAT_VERSION, name, root, selection]).encode()).hexdigest()[:16]
  return paths.join(cache_dir, f"{name}-{digest}.npz")


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
  if paths.is_remote(path):
    return _save_remote(path, arrays)
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


def _save_remote(path: str, arrays: dict[str, np.ndarray]) -> bool:
  """`save` into a bucket: a temporary name beside `path`, then renamed over it."""
  target = paths.as_path(path)
  tmp = target.parent / f".tmp_{uuid.uuid4().hex}_{target.name}"
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  try:
    with paths.os_errors(path):
      target.parent.mkdir(parents=True, exist_ok=True)
      tmp.write_bytes(buffer.getvalue())
      tmp.replace(target)
  except OSError as e:
    logger.warning("could not write the dataset index cache %s (%s); the next start scans again", path, e)
    try:
      with paths.os_errors(tmp):
        tmp.unlink(missing_ok=True)
    except OSError:
      pass
    return False
  return True


def load(path: str, head: dict[str, Any]) -> Index | None:
  """The cached index, or None when there is none, it is unreadable, or its header differs from `head`."""
  try:
    if not paths.is_file(path):
      return None
  except OSError as e:
    logger.warning("dataset index cache %s is unreadable (%s); scanning again", path, e)
    return None
  try:
    source = io.BytesIO(paths.read_bytes(path)) if paths.is_remote(path) else path
    with np.load(source, allow_pickle=False) as data:
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
