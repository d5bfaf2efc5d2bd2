"""Paths that may be on remote storage (`gs://...`): the checks and reads the data layers and
`fartrack_jax.storage` share.

A dataset root may be a bucket (`--root gs://my-bucket/got10k`: a Dataflow worker sees no local disk of
yours). The readers list and open it through these helpers: a local path takes the plain `os` / `open` call it
always took (the fast path: scanning a root is millions of small reads), a URL goes through etils.epath (what
tfds and orbax use: TensorFlow's gfile, or fsspec with `EPATH_USE_TF=false`). A URL never reaches `os.path`
functions that make paths absolute (`os.path.abspath("gs://b/x")` is `./gs:/b/x`).

Errors on remote storage come out as OSError like local ones (`FileNotFoundError` for a missing object):
gfile raises TensorFlow's own `OpError`s, which are translated here.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import posixpath
import sys

from etils import epath


def is_remote(path) -> bool:
  """A URL with a scheme (`gs://bucket/...`), as etils.epath reads it, rather than a local path."""
  return "://" in os.fspath(path)


def normalize(path) -> str:
  """A local path absolute with `~` expanded; a URL as it is, without a trailing `/`."""
  text = os.fspath(path)
  if is_remote(text):
    scheme, _, rest = text.partition("://")
    return f"{scheme}://{rest.rstrip('/')}"
  return os.path.abspath(os.path.expanduser(text))


def as_path(path) -> epath.Path:
  """`epath.Path` of `path`: URLs as they are, local paths absolute with `~` expanded."""
  return epath.Path(normalize(path))


def join(path, *parts: str) -> str:
  """`os.path.join` for local paths; `/`-joined for URLs."""
  text = os.fspath(path)
  return posixpath.join(text, *parts) if is_remote(text) else os.path.join(text, *parts)


def relative(path, start) -> str:
  """`path` relative to the folder `start` (`os.path.relpath`; for URLs by their names only)."""
  path, start = os.fspath(path), os.fspath(start)
  if not is_remote(start):
    return os.path.relpath(path, start)
  scheme, _, rest = start.partition("://")
  prefix = f"{scheme}://"
  if not path.startswith(prefix):
    raise ValueError(f"{path} is not under {start}")
  return posixpath.relpath("/" + path[len(prefix):], "/" + rest)


@contextlib.contextmanager
def os_errors(path):
  """Turns the storage errors of a remote read (TensorFlow's `OpError`s from gfile) into OSError naming
  `path`: FileNotFoundError for a missing object, PermissionError for a denied one."""
  try:
    yield
  except OSError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    tf = sys.modules.get("tensorflow")
    errors = getattr(tf, "errors", None)
    if errors is None or not isinstance(e, errors.OpError):
      raise
    kind = (FileNotFoundError if isinstance(e, errors.NotFoundError) else
            PermissionError if isinstance(e, (errors.PermissionDeniedError, errors.UnauthenticatedError)) else
            OSError)
    # One line: gfile's messages may hold the server's answer over several.
    raise kind(f"{os.fspath(path)}: {' '.join(str(getattr(e, 'message', e)).split())}") from None


def is_storage_failure(path, error: OSError) -> bool:
  """Whether `error`, raised reading `path`, says nothing about the file itself: a request to remote storage
  that failed (denied, unavailable, timed out: gfile has already retried it), not a missing object. A reader
  must not take such a file for a bad one (skip a sequence, store a frame empty) and keep that."""
  return is_remote(path) and not isinstance(error, (FileNotFoundError, IsADirectoryError, NotADirectoryError))


def is_dir(path) -> bool:
  """Whether `path` is a folder (on a bucket: any object under it, or the bucket itself)."""
  if not is_remote(path):
    return os.path.isdir(path)
  with os_errors(path):
    return epath.Path(path).is_dir()


def is_file(path) -> bool:
  """Whether `path` is a file. On a bucket: whether the object exists (one request; a bucket's "folder" of
  that name would count too)."""
  if not is_remote(path):
    return os.path.isfile(path)
  with os_errors(path):
    return epath.Path(path).exists()


def listdir(path) -> list[str]:
  """The names in the folder `path` (`os.listdir`'s order locally; the storage's, name order, on a bucket)."""
  if not is_remote(path):
    return os.listdir(path)
  with os_errors(path):
    return [p.name for p in epath.Path(path).iterdir()]


def read_bytes(path) -> bytes:
  if not is_remote(path):
    with open(path, "rb") as f:
      return f.read()
  with os_errors(path):
    return epath.Path(path).read_bytes()


def read_text(path) -> str:
  """The file's UTF-8 text with universal newlines (what `open(path, encoding="utf-8").read()` gives)."""
  if not is_remote(path):
    with open(path, encoding="utf-8") as f:
      return f.read()
  return io.TextIOWrapper(io.BytesIO(read_bytes(path)), encoding="utf-8").read()


def stamp(path) -> list | None:
  """What changes when the file or folder `path` changes (part of an index cache's fingerprint), None when it
  does not exist. Locally [mtime_ns, size]. On a bucket a file's [mtime (whole seconds), size]; a bucket's
  folders have no mtime, so a folder's is ["listing", number of names, digest of the sorted names] (one
  listing request per 1,000 names)."""
  if not is_remote(path):
    try:
      st = os.stat(path)
    except OSError:
      return None
    return [st.st_mtime_ns, st.st_size]
  try:
    with os_errors(path):
      st = epath.Path(path).stat()
      if not st.is_directory:
        return [int(st.mtime), int(st.length)]
      names = sorted(listdir(path))
  except FileNotFoundError:
    return None
  return ["listing", len(names), hashlib.sha256("\n".join(names).encode("utf-8")).hexdigest()[:16]]
