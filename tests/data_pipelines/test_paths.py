"""`data_pipelines/paths.py` on local paths (the calls a local root has always taken) and on URLs as strings
(no server: a bucket root is read in tests/data_pipelines/training/test_bucket_roots.py, on the emulator)."""

import os
import sys
import types

import pytest

from data_pipelines import paths


def test_local_paths_read_list_and_stamp_as_os_does(tmp_path):
  folder = tmp_path / "seq"
  folder.mkdir()
  (folder / "a.txt").write_bytes(b"1\r\n2\r3\n")
  (folder / "b.bin").write_bytes(b"\x00\xff")
  a = os.fspath(folder / "a.txt")
  assert paths.read_text(a) == "1\n2\n3\n"  # universal newlines, as open() reads it
  assert paths.read_bytes(a) == b"1\r\n2\r3\n"
  assert paths.is_file(a) and not paths.is_dir(a)
  assert paths.is_dir(os.fspath(folder)) and not paths.is_file(os.fspath(folder))
  assert not paths.is_file(os.fspath(folder / "missing")) and not paths.is_dir(os.fspath(folder / "missing"))
  assert sorted(paths.listdir(os.fspath(folder))) == ["a.txt", "b.bin"]
  st = os.stat(a)
  assert paths.stamp(a) == [st.st_mtime_ns, st.st_size]
  assert paths.stamp(os.fspath(folder / "missing")) is None
  with pytest.raises(FileNotFoundError):
    paths.read_text(os.fspath(folder / "missing"))


def test_local_paths_are_made_absolute_and_urls_are_left_as_they_are(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv("HOME", os.fspath(tmp_path / "home"))
  assert paths.normalize("root") == os.fspath(tmp_path / "root")
  assert paths.normalize("~/root") == os.fspath(tmp_path / "home" / "root")
  assert paths.normalize("gs://bucket/got10k/") == "gs://bucket/got10k"  # never ./gs:/bucket/got10k
  assert os.fspath(paths.as_path("gs://bucket/got10k")) == "gs://bucket/got10k"
  assert paths.join("gs://bucket/got10k", "train", "list.txt") == "gs://bucket/got10k/train/list.txt"
  assert paths.join("/data/got10k", "train") == os.path.join("/data/got10k", "train")
  assert paths.relative("gs://bucket/got10k/train/seq/img", "gs://bucket/got10k") == "train/seq/img"
  assert paths.relative("/data/got10k/train/seq", "/data/got10k") == os.path.join("train", "seq")
  with pytest.raises(ValueError, match="is not under"):
    paths.relative("/data/got10k/train", "gs://bucket/got10k")
  assert paths.is_remote("gs://b/x") and not paths.is_remote("/data/gs:/x")
  assert not os.path.exists(tmp_path / "gs:")


class _OpError(Exception):
  def __init__(self, message):
    super().__init__(message)
    self.message = message


class _NotFoundError(_OpError):
  pass


class _PermissionDeniedError(_OpError):
  pass


class _UnauthenticatedError(_OpError):
  pass


def test_storage_errors_become_os_errors_naming_the_path(monkeypatch):
  # gfile raises TensorFlow's OpErrors (not OSError); the readers catch OSError. A stand-in for tf.errors, so
  # this test needs no TensorFlow.
  errors = types.SimpleNamespace(OpError=_OpError, NotFoundError=_NotFoundError,
                                 PermissionDeniedError=_PermissionDeniedError,
                                 UnauthenticatedError=_UnauthenticatedError)
  monkeypatch.setitem(sys.modules, "tensorflow", types.SimpleNamespace(errors=errors))
  for raised, expected in ((_NotFoundError("no such object"), FileNotFoundError),
                           (_PermissionDeniedError("403"), PermissionError), (_OpError("503"), OSError)):
    with pytest.raises(expected, match=f"^gs://b/x: {raised.message}$"):
      with paths.os_errors("gs://b/x"):
        raise raised
  with pytest.raises(KeyError):  # anything else passes through
    with paths.os_errors("gs://b/x"):
      raise KeyError("x")
