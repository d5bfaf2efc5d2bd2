"""Paths that may be buckets: the workdir, checkpoints, exports, results (`gs://...` or a local folder).

Everything goes through `etils.epath`, as orbax and tfds do, so the backend is the one they pick: TensorFlow's
gfile when TensorFlow is importable (it is: clu needs it), fsspec/gcsfs with `EPATH_USE_TF=false`. Local paths
are made absolute; `os.path.abspath` must never see a URL (it turns `gs://b/run` into `./gs:/b/run`).
"""

from __future__ import annotations

import os
import uuid

from etils import epath


class StorageError(RuntimeError):
  """A directory that cannot be used (missing bucket, no write permission)."""


def is_remote(path) -> bool:
  return "://" in os.fspath(path)


def as_path(path) -> epath.Path:
  """`epath.Path` of `path`: URLs as they are, local paths absolute with `~` expanded."""
  text = os.fspath(path)
  if is_remote(text):
    return epath.Path(text)
  return epath.Path(os.path.abspath(os.path.expanduser(text)))


def write_text_atomic(path, text: str) -> None:
  """Writes `text` to a temporary name beside `path`, then renames it over `path` (on a bucket the rename
  is a copy and a delete: readers still never see a half-written object)."""
  path = as_path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.parent / f".tmp_{uuid.uuid4().hex}_{path.name}"
  try:
    tmp.write_text(text)
    tmp.replace(path)
  except BaseException:
    try:
      tmp.unlink(missing_ok=True)
    except Exception:  # pylint: disable=broad-except
      pass
    raise


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
