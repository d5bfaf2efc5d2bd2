"""storage's copies and log file, on local folders (the same epath calls as on a bucket; the bucket itself is
exercised against the emulator in tests/test_buckets_end_to_end.py)."""

import logging
import os

import pytest

from data_pipelines.training import datasets, packed, synthetic_train
from fartrack_jax import storage


def test_upload_tree_copies_the_named_files_last_and_resumes_without_copying_again(tmp_path, monkeypatch):
  source = tmp_path / "src"
  (source / "sub").mkdir(parents=True)
  for name, text in (("b.bin", "bb"), ("sub/c.bin", "ccc"), ("dataset_info.json", "{}"), ("a.bin", "a")):
    (source / name).write_text(text)
  copied = []
  real_copy = storage.copy_file

  def failing_copy(src, dst):
    if len(copied) == 2:
      raise OSError("connection lost")
    real_copy(src, dst)
    copied.append(os.path.basename(os.fspath(dst)))

  monkeypatch.setattr(storage, "copy_file", failing_copy)
  with pytest.raises(OSError):
    storage.upload_tree(source, tmp_path / "dst", last=("dataset_info.json",))
  assert not (tmp_path / "dst" / "dataset_info.json").exists()  # the marker is never copied before the rest
  monkeypatch.setattr(storage, "copy_file", real_copy)
  assert storage.upload_tree(source, tmp_path / "dst", last=("dataset_info.json",)) == (2, 2)
  assert (tmp_path / "dst" / "sub" / "c.bin").read_text() == "ccc"
  assert sorted(os.listdir(tmp_path / "dst")) == ["a.bin", "b.bin", "dataset_info.json", "sub"]  # no temporaries


def test_an_interrupted_copy_of_a_packed_set_does_not_read_as_a_dataset(tmp_path, monkeypatch):
  root = str(tmp_path / "root")
  synthetic_train.make_synthetic_train_dataset("got10k_train", root, num_sequences=2, num_frames=6)
  local = packed.pack_train_dataset("SYNTHETIC", root, str(tmp_path / "scratch"))
  target = packed.packed_path("SYNTHETIC", str(tmp_path / "bucket"))
  real_copy = storage.copy_file
  calls = []

  def failing_copy(src, dst):
    calls.append(dst)
    if os.fspath(dst).endswith("dataset_info.json"):
      raise OSError("killed")
    real_copy(src, dst)

  monkeypatch.setattr(storage, "copy_file", failing_copy)
  with pytest.raises(OSError):
    storage.upload_tree(local, target, last=(packed.SEQUENCES_FILE, "dataset_info.json"))
  with pytest.raises(datasets.DatasetError, match="no packed SYNTHETIC dataset"):
    packed.PackedTrainDataset("SYNTHETIC", str(tmp_path / "bucket"))
  monkeypatch.setattr(storage, "copy_file", real_copy)
  copied, kept = storage.upload_tree(local, target, last=(packed.SEQUENCES_FILE, "dataset_info.json"))
  assert copied == 1 and kept == len(calls) - 1  # only dataset_info.json: no shard copied twice
  dataset = packed.PackedTrainDataset("SYNTHETIC", str(tmp_path / "bucket"))
  assert len(dataset) == 2 and dataset.sequence(1).frames[3].read_bytes()[:2] == b"\xff\xd8"  # a JPEG


def test_mirrored_log_file_copies_its_lines_over_the_target_and_continues_it(tmp_path):
  target = tmp_path / "run" / "train_log.txt"
  logger = logging.getLogger("test_mirrored_log_file")
  logger.setLevel(logging.INFO)
  for run in ("first", "second"):
    handler = storage.MirroredLogFile(target, every_s=3600)
    logger.addHandler(handler)
    logger.info("%s run", run)
    handler.close()
    logger.removeHandler(handler)
  assert target.read_text() == "first run\nsecond run\n"


def test_bucket_urls_never_become_local_folders(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert os.fspath(storage.as_path("gs://b/run")) == "gs://b/run"
  assert not os.path.exists(tmp_path / "gs:")
