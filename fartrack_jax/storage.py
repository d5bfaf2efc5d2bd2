"""Paths that may be buckets: the workdir, checkpoints, exports, results (`gs://...` or a local folder).

Everything goes through `etils.epath`, as orbax and tfds do, so the backend is the one they pick: TensorFlow's
gfile when TensorFlow is importable (it is: clu needs it), fsspec/gcsfs with `EPATH_USE_TF=false`. Local paths
are made absolute; `os.path.abspath` must never see a URL (it turns `gs://b/run` into `./gs:/b/run`).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import uuid

from etils import epath

from data_pipelines.paths import as_path, is_remote  # also storage.as_path / storage.is_remote for callers


class StorageError(RuntimeError):
  """A directory that cannot be used (missing bucket, no write permission)."""


def write_text_atomic(path, text: str) -> None:
  """Writes `text` (UTF-8) to a temporary name beside `path`, then renames it over `path` (on a bucket the
  rename is a copy and a delete: readers still never see a half-written object)."""
  write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path, data: bytes) -> None:
  """`write_text_atomic` for bytes (a zip, a PNG, a .pth.tar)."""
  path = as_path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.parent / f".tmp_{uuid.uuid4().hex}_{path.name}"
  try:
    tmp.write_bytes(data)
    tmp.replace(path)
  except BaseException:
    try:
      tmp.unlink(missing_ok=True)
    except Exception:  # pylint: disable=broad-except
      pass
    raise


def copy_file(source, destination) -> None:
  """Copies one file between any two places (local, bucket), through a temporary name beside
  `destination`, so a reader never sees a part of it."""
  destination = as_path(destination)
  destination.parent.mkdir(parents=True, exist_ok=True)
  tmp = destination.parent / f".tmp_{uuid.uuid4().hex}_{destination.name}"
  try:
    as_path(source).copy(tmp, overwrite=True)  # streamed, not held in memory (a shard of a packed set)
    tmp.replace(destination)
  except BaseException:
    try:
      tmp.unlink(missing_ok=True)
    except Exception:  # pylint: disable=broad-except
      pass
    raise


def upload_tree(local_dir, destination, last: tuple[str, ...] = ()) -> tuple[int, int]:
  """Copies the files under `local_dir` to the same names under `destination` (a bucket or a folder), the
  files named in `last` (relative paths) after all others, in that order, so a reader that waits for
  `last[-1]` never sees a partial tree. A file already at the destination with the same size is not
  copied again (an interrupted upload resumes). Returns (files copied, files kept)."""
  local_dir, destination = as_path(local_dir), as_path(destination)
  files = sorted(folder / name for folder, _, names in local_dir.walk() for name in names)
  rank = {name: i for i, name in enumerate(last)}
  files.sort(key=lambda p: rank.get(os.fspath(p.relative_to(local_dir)), -1))
  copied = kept = 0
  for path in files:
    target = destination / os.fspath(path.relative_to(local_dir))
    try:
      if target.exists() and target.stat().length == path.stat().length:
        kept += 1
        continue
    except FileNotFoundError:
      pass
    copy_file(path, target)
    copied += 1
  return copied, kept


class MirroredLogFile(logging.FileHandler):
  """A log file that may live on a bucket (where objects cannot be appended to): lines go to a local file,
  copied over `path` at most every `every_s` seconds and when the handler closes (the end of the run).
  A file already at `path` (a resumed run) is continued."""

  def __init__(self, path, every_s: float = 30.0):
    self.target = as_path(path)
    folder = tempfile.mkdtemp(prefix="fartrack_log_")
    local = os.path.join(folder, self.target.name)
    try:
      if self.target.exists():
        with open(local, "wb") as f:
          f.write(self.target.read_bytes())
    except Exception:  # pylint: disable=broad-except
      pass  # a log that cannot be read back is started afresh, never a reason to stop the run
    super().__init__(local, mode="a")
    self.every_s = every_s
    self._last_copy = time.monotonic()

  def _copy(self) -> None:
    try:
      copy_file(self.baseFilename, self.target)
    except Exception:  # pylint: disable=broad-except
      pass  # retried at the next copy; the local file keeps every line
    self._last_copy = time.monotonic()

  def emit(self, record):
    super().emit(record)
    if time.monotonic() - self._last_copy >= self.every_s:
      self._copy()

  def close(self):
    super().close()
    self._copy()


def log_file_handler(path) -> logging.FileHandler:
  """A `logging.FileHandler` writing `path`: a plain one for a local file, a `MirroredLogFile` on a bucket."""
  path = as_path(path)
  if is_remote(path):
    return MirroredLogFile(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  return logging.FileHandler(os.fspath(path))


def check_writable(directory, what: str) -> epath.Path:
  """Creates `directory` and writes and deletes one small file in it; `StorageError` naming `what` and the
  path when that fails (a bucket that does not exist or that this account cannot write)."""
  path = as_path(directory)
  text = os.fspath(path)
  if is_remote(text):
    # A missing bucket first: writing into one makes the GCS client retry for minutes before it gives up.
    scheme, rest = text.split("://", 1)
    bucket = f"{scheme}://{rest.split('/', 1)[0]}"
    try:
      found = epath.Path(bucket).exists()
    except Exception as e:  # pylint: disable=broad-except
      raise StorageError(f"{what} {path}: cannot reach {bucket}: {type(e).__name__}: "
                         f"{' '.join(str(e).split())[:300]}") from None
    if not found:
      raise StorageError(f"{what} {path}: the bucket {bucket} does not exist (or this account cannot see it)")
  probe = path / f".write_probe_{uuid.uuid4().hex}"
  try:
    path.mkdir(parents=True, exist_ok=True)
    probe.write_text("ok")
    probe.unlink()
  except Exception as e:  # pylint: disable=broad-except
    detail = " ".join(str(e).split())[:300] or type(e).__name__
    raise StorageError(f"{what} {path} is not writable: {type(e).__name__}: {detail}") from None
  return path
