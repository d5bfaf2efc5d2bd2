"""Training dataset readers: every layout read back from a synthetic root, the original's split and
visibility rules, COCO's filters, the index cache, and the errors and skips a broken root gives."""

import json
import logging
import os
import pickle
import shutil

import numpy as np
import pytest

from data_pipelines import synthetic
from data_pipelines.annotation_files import format_boxes
from data_pipelines.training import datasets
from data_pipelines.training import layouts
from data_pipelines.training import synthetic_train
from data_pipelines.training.datasets import build_train_dataset
from data_pipelines.training.datasets import build_train_datasets
from data_pipelines.training.datasets import DatasetError

NUM_SEQUENCES, NUM_FRAMES, SIZE = 3, 8, (64, 48)


def make(layout, root, **kwargs):
  kwargs = dict(dict(num_sequences=NUM_SEQUENCES, num_frames=NUM_FRAMES, size=SIZE), **kwargs)
  return synthetic_train.make_synthetic_train_dataset(layout, str(root), **kwargs)


def assert_same_sequence(got, want):
  assert (got.dataset, got.name, got.is_video, got.object_class) == (
      want.dataset, want.name, want.is_video, want.object_class)
  assert got.frames == want.frames
  assert got.boxes.dtype == np.float32 and got.boxes.shape == (len(got.frames), 4)
  np.testing.assert_array_equal(got.boxes, want.boxes)  # integers: exact
  np.testing.assert_array_equal(got.valid, want.valid)
  np.testing.assert_array_equal(got.visible, want.visible)
  assert all(os.path.isfile(f) for f in got.frames)


@pytest.mark.parametrize("layout", synthetic_train.LAYOUTS)
def test_every_layout_reads_back_what_was_generated(tmp_path, layout):
  want = make(layout, tmp_path)
  got = build_train_dataset(synthetic_train.READER_NAMES[layout], tmp_path)
  assert len(got) == len(want) and not got.skipped
  for got_seq, want_seq in zip(got, want):
    assert_same_sequence(got_seq, want_seq)
  if layout == "coco":
    assert len(want) == NUM_SEQUENCES * synthetic_train.OBJECTS_PER_IMAGE  # the crowd regions dropped
  else:
    # The hidden stretch is there and not visible; LaSOT/TrackingNet also leave it without a valid box.
    assert all(not s.visible.all() and s.visible.any() for s in want)
    assert all(s.valid.all() for s in want) == (layout == "got10k_train")


def test_got10k_names_pick_the_split_positions(tmp_path):
  want = make("got10k_train", tmp_path)
  names = [s.name for s in want]
  by_name = build_train_datasets(["GOT10K_vottrain", "GOT10K_votval", "GOT10K_train_full"],
                                 {"got10k": str(tmp_path)})
  assert [d.names for d in by_name] == [names[:-1], names[-1:], names]
  assert {s.dataset for s in by_name[0]} == {"GOT10K_vottrain"}
  # The root may also be the split folder itself, as the original's got10k_dir.
  assert build_train_dataset("SYNTHETIC", tmp_path / "train").names == names


def test_got10k_split_positions_index_list_txt_not_names(tmp_path):
  make("got10k_train", tmp_path)
  (tmp_path / layouts.SYNTHETIC_SPLIT).write_text("vottrain 2\nvottrain 0\nvotval 1\n")
  assert build_train_dataset("GOT10K_vottrain", tmp_path).names == ["GOT-10k_Train_000003",
                                                                     "GOT-10k_Train_000001"]
  (tmp_path / layouts.SYNTHETIC_SPLIT).write_text("vottrain 3\n")
  with pytest.raises(DatasetError, match="position 3 is past the 3 sequences"):
    build_train_dataset("GOT10K_vottrain", tmp_path)
  # Without a synthetic split the packaged vot list (positions up to 9331) does not fit 3 sequences.
  (tmp_path / layouts.SYNTHETIC_SPLIT).unlink()
  with pytest.raises(DatasetError, match="got10k_vot_train_split.txt"):
    build_train_dataset("GOT10K_vottrain", tmp_path)


def test_got10k_visibility_is_the_originals_bitwise_rule(tmp_path):
  make("got10k_train", tmp_path, num_sequences=1, num_frames=6)
  seq_dir = tmp_path / "train" / "GOT-10k_Train_000001"
  boxes = np.tile([[4, 4, 10, 8]], (6, 1))
  boxes[5, 2] = 0
  (seq_dir / "groundtruth.txt").write_text(format_boxes(boxes))
  (seq_dir / "absence.label").write_text("0\n1\n0\n0\n2\n0\n")
  (seq_dir / "cover.label").write_text("8\n8\n0\n3\n8\n8\n")
  seq = build_train_dataset("SYNTHETIC", tmp_path).sequence(0)
  # `~absence` on a uint8 tensor: an even absence value (2) counts as present; cover 0 hides; w=0 invalid.
  np.testing.assert_array_equal(seq.visible, [1, 0, 0, 1, 1, 0])
  np.testing.assert_array_equal(seq.valid, [1, 1, 1, 1, 1, 0])


def test_official_val_reads_the_evaluation_layout(tmp_path):
  synthetic.make_synthetic_dataset("got10k", str(tmp_path), num_sequences=2, num_frames=8, size=SIZE)
  val = build_train_dataset("GOT10K_official_val", tmp_path)
  assert val.names == ["GOT-10k_Val_000001", "GOT-10k_Val_000002"]
  for seq in val:
    absent = np.loadtxt(os.path.join(tmp_path, "val", seq.name, "absence.label")).astype(bool)
    np.testing.assert_array_equal(seq.visible, ~absent)
    assert seq.frames[0].endswith(f"val/{seq.name}/00000001.jpg") and len(seq.frames) == 8


def test_lasot_uses_the_training_split_list(tmp_path):
  want = make("lasot_train", tmp_path)
  (tmp_path / layouts.SYNTHETIC_SPLIT).unlink()
  got = build_train_dataset("LASOT", tmp_path)
  assert got.names == [s.name for s in want]
  # The other names of the original's 1120-sequence split are missing here: left out, each listed.
  assert len(got.skipped) == 1120 - NUM_SEQUENCES
  assert all(reason.startswith("missing sequence folder") for reason in got.skipped.values())


def test_trackingnet_needs_all_twelve_chunks(tmp_path):
  make("trackingnet_train", tmp_path)
  shutil.rmtree(tmp_path / "TRAIN_7")
  with pytest.raises(DatasetError, match="TRAIN_7"):
    build_train_dataset("TRACKINGNET", tmp_path)


def write_coco(root, annotations, file_names=("000000000001.jpg",)):
  image_dir = root / "images" / "train2017"
  image_dir.mkdir(parents=True)
  for name in file_names:
    (image_dir / name).write_bytes(b"jpeg")
  images = [{"id": i + 1, "file_name": name} for i, name in enumerate(file_names)]
  images.append({"id": 99, "file_name": "not_there.jpg"})
  (root / "annotations").mkdir()
  (root / "annotations" / "instances_train2017.json").write_text(json.dumps(
      {"images": images, "annotations": annotations,
       "categories": [{"id": 1, "name": "dog", "supercategory": "animal"}]}))


def test_coco_keeps_non_crowd_objects_and_flags_boxes_over_50_pixels(tmp_path):
  def ann(ann_id, bbox, **kw):
    return dict(dict(id=ann_id, image_id=1, category_id=1, bbox=bbox, iscrowd=0), **kw)
  write_coco(tmp_path, [
      ann(1, [0, 0, 60, 60], iscrowd=1),  # crowd: never a sequence
      ann(2, [1, 2, 50, 80]),  # kept; w = 50 is not > 50: not valid
      ann(3, [1, 2, 51, 51]),  # kept, valid
      ann(4, [3, 4, 10, 10]),  # kept (the original samples small objects too), not valid
      ann(5, [0, 0, 0, 20]),  # empty box: left out, listed
      ann(6, [0, 0, 60, 60], image_id=99),  # image file missing: left out, listed
      ann(7, [5, 6, 70, 70], category_id=8),  # unknown category: no class
      {"id": 8, "image_id": 1, "category_id": 1, "bbox": [0, 0, 90, 90]},  # no iscrowd: not crowd
  ])
  coco = build_train_dataset("COCO17", tmp_path)
  assert coco.names == ["2", "3", "4", "7", "8"]
  assert set(coco.skipped) == {"5", "6"}
  assert "empty bbox" in coco.skipped["5"] and "missing image file" in coco.skipped["6"]
  seqs = {s.name: s for s in coco}
  assert [bool(seqs[n].valid[0]) for n in coco.names] == [False, True, False, True, True]
  assert all(np.array_equal(s.valid, s.visible) and not s.is_video for s in coco)
  np.testing.assert_array_equal(seqs["2"].boxes, [[1, 2, 50, 80]])
  assert seqs["2"].frames == (str(tmp_path / "images" / "train2017" / "000000000001.jpg"),)
  assert (seqs["2"].object_class, seqs["7"].object_class) == ("dog", None)


def test_cache_is_written_once_and_reused(tmp_path, monkeypatch):
  root, cache = tmp_path / "root", tmp_path / "cache"
  make("got10k_train", root)
  first = build_train_dataset("GOT10K_train_full", root, cache_dir=cache)
  assert not first.from_cache and os.path.isfile(first.cache_path)
  assert os.path.basename(first.cache_path).startswith("GOT10K_train_full-")
  assert os.listdir(cache) == [os.path.basename(first.cache_path)]  # no temporary file left

  def no_scan(*args, **kwargs):
    raise AssertionError("the cached index was rescanned")
  monkeypatch.setattr(os, "listdir", no_scan)
  monkeypatch.setattr(os, "scandir", no_scan)
  monkeypatch.setattr(layouts, "read_boxes", no_scan)
  monkeypatch.setattr(layouts, "read_labels", no_scan)
  second = build_train_dataset("GOT10K_train_full", root, cache_dir=cache)
  monkeypatch.undo()
  assert second.from_cache and second.cache_path == first.cache_path
  for a, b in zip(first, second):
    assert_same_sequence(a, b)


def test_cache_is_rebuilt_when_the_root_changes(tmp_path):
  root, cache = tmp_path / "root", tmp_path / "cache"
  make("got10k_train", root)
  first = build_train_dataset("SYNTHETIC", root, cache_dir=cache)
  # A fourth sequence: list.txt (and the split folder) change, so the cache is stale.
  shutil.copytree(root / "train" / "GOT-10k_Train_000001", root / "train" / "GOT-10k_Train_000004")
  with open(root / "train" / "list.txt", "a") as f:
    f.write("GOT-10k_Train_000004\n")
  second = build_train_dataset("SYNTHETIC", root, cache_dir=cache)
  assert not second.from_cache and len(second) == len(first) + 1
  assert build_train_dataset("SYNTHETIC", root, cache_dir=cache).from_cache
  # Another root path gets its own cache file; a changed split its own too.
  shutil.copytree(root, tmp_path / "other")
  other = build_train_dataset("SYNTHETIC", tmp_path / "other", cache_dir=cache)
  assert not other.from_cache and other.cache_path != second.cache_path
  assert other.sequence(0).frames[0].startswith(str(tmp_path / "other"))
  vot = build_train_dataset("GOT10K_vottrain", root, cache_dir=cache)
  (root / layouts.SYNTHETIC_SPLIT).write_text("vottrain 1\n")
  changed = build_train_dataset("GOT10K_vottrain", root, cache_dir=cache)
  assert not changed.from_cache and changed.cache_path != vot.cache_path
  assert changed.names == ["GOT-10k_Train_000002"]


def test_corrupt_cache_file_is_rescanned(tmp_path):
  make("got10k_train", tmp_path / "root")
  first = build_train_dataset("SYNTHETIC", tmp_path / "root", cache_dir=tmp_path / "cache")
  with open(first.cache_path, "wb") as f:
    f.write(b"not a zip")
  again = build_train_dataset("SYNTHETIC", tmp_path / "root", cache_dir=tmp_path / "cache")
  assert not again.from_cache and len(again) == len(first)


@pytest.mark.parametrize("name", datasets.TRAIN_NAMES)
def test_missing_or_empty_root_raises_naming_it(tmp_path, name):
  missing = tmp_path / "nowhere"
  with pytest.raises(DatasetError, match=str(missing)):
    build_train_dataset(name, missing)
  with pytest.raises(DatasetError, match=f"{tmp_path}.*expected"):
    build_train_dataset(name, tmp_path)


def test_unknown_name_and_missing_root_key():
  with pytest.raises(ValueError, match="GOT10K_vottrain"):
    build_train_dataset("GOT10K", "/")
  with pytest.raises(DatasetError, match="'coco'"):
    build_train_datasets(["COCO17"], {"lasot": "/"})


def test_bad_sequences_are_left_out_and_listed(tmp_path, caplog):
  make("got10k_train", tmp_path, num_sequences=4)
  train = tmp_path / "train"
  (train / "GOT-10k_Train_000001" / "groundtruth.txt").write_text("1,2,3\nnot,a,box,here\n")
  (train / "GOT-10k_Train_000002" / "groundtruth.txt").write_text(format_boxes(np.zeros((NUM_FRAMES, 4))))
  (train / "GOT-10k_Train_000003" / "cover.label").write_text("8\n")
  with caplog.at_level(logging.WARNING, logger=datasets.__name__):
    got = build_train_dataset("SYNTHETIC", tmp_path)
  assert got.names == ["GOT-10k_Train_000004"]
  assert "groundtruth.txt:1: malformed annotation line" in got.skipped["GOT-10k_Train_000001"]
  assert got.skipped["GOT-10k_Train_000002"].startswith("no valid box")
  assert got.skipped["GOT-10k_Train_000003"] == f"1 values in cover.label for {NUM_FRAMES} boxes"
  assert [r.message for r in caplog.records if "left out 3 of 4" in r.message]
  # Every sequence bad: an error at build time.
  (train / "GOT-10k_Train_000004" / "absence.label").unlink()
  with pytest.raises(DatasetError, match="no usable SYNTHETIC sequence"):
    build_train_dataset("SYNTHETIC", tmp_path)


def test_dataset_pickles_for_grain_workers(tmp_path):
  make("lasot_train", tmp_path)
  dataset = build_train_dataset("LASOT", tmp_path)
  copy = pickle.loads(pickle.dumps(dataset))
  assert len(copy) == len(dataset) and copy.sequence(-1).frames == dataset.sequence(2).frames
  assert_same_sequence(copy.sequence(1), dataset.sequence(1))
  with pytest.raises(IndexError):
    dataset.sequence(3)


class _Bucket:
  """etils.epath for `data_pipelines.paths`, with `gs://fake` served from a local folder (what the readers do
  with a bucket root, without a storage server: tests/data_pipelines/training/test_bucket_roots.py has one);
  `fail` names files whose reads fail as a denied storage request does; `reads` lists the files read."""

  def __init__(self, folder):
    self.folder, self.fail, self.reads = str(folder), set(), []

  def Path(self, path):  # pylint: disable=invalid-name
    from etils import epath  # pylint: disable=g-import-not-at-top
    path = str(path)
    assert path == "gs://fake" or path.startswith("gs://fake/"), path
    local = epath.Path(self.folder + path[len("gs://fake"):])
    bucket = self

    class Object(type(local)):
      def read_bytes(self):
        bucket.reads.append(path)
        if path in bucket.fail:
          raise PermissionError(f"{path}: 403 denied")
        return super().read_bytes()
    return Object(local)


@pytest.mark.parametrize("layout", synthetic_train.LAYOUTS)
def test_a_bucket_root_reads_through_epath_as_the_local_root(tmp_path, monkeypatch, layout):
  from data_pipelines import paths  # pylint: disable=g-import-not-at-top
  name = synthetic_train.READER_NAMES[layout]
  make(layout, tmp_path / "root", num_frames=NUM_FRAMES if layout != "coco" else 2)
  want = build_train_dataset(name, tmp_path / "root")
  bucket = _Bucket(tmp_path / "root")
  monkeypatch.setattr(paths, "epath", bucket)
  monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the default cache of a bucket root
  got = build_train_dataset(name, "gs://fake/")
  assert got.root == "gs://fake" and bucket.reads
  assert got.cache_path.startswith(str(tmp_path / "home" / ".cache" / "fartrack_jax" / "index_cache"))
  assert got.names == want.names and got.skipped == want.skipped
  for a, b in zip(want, got):
    assert b.frames == tuple("gs://fake/" + os.path.relpath(f, want.root) for f in a.frames)
    assert (a.name, a.object_class) == (b.name, b.object_class)
    for key in ("boxes", "valid", "visible"):
      np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
  from data_pipelines.training import pipeline  # pylint: disable=g-import-not-at-top
  np.testing.assert_array_equal(pipeline.read_image(got.sequence(0).frames[-1]),
                                pipeline.read_image(want.sequence(0).frames[-1]))
  bucket.reads.clear()
  assert build_train_dataset(name, "gs://fake").from_cache
  # From the cache: no annotation read, only the lists that define the sequences.
  assert {os.path.basename(r) for r in bucket.reads} <= {"list.txt", layouts.SYNTHETIC_SPLIT}, bucket.reads


def test_a_failed_bucket_request_stops_the_scan_rather_than_leave_a_sequence_out(tmp_path, monkeypatch):
  from data_pipelines import paths  # pylint: disable=g-import-not-at-top
  from data_pipelines.training import pipeline  # pylint: disable=g-import-not-at-top
  make("got10k_train", tmp_path)
  bucket = _Bucket(tmp_path)
  monkeypatch.setattr(paths, "epath", bucket)
  bucket.fail.add("gs://fake/train/GOT-10k_Train_000002/cover.label")
  with pytest.raises(DatasetError, match=r"^gs://fake: cannot read the SYNTHETIC root \(gs://fake/train/"
                     r"GOT-10k_Train_000002/cover.label: 403 denied\); check this machine's access to it "
                     r"\(gcloud storage ls gs://fake\) and run again$"):
    build_train_dataset("SYNTHETIC", "gs://fake")  # no cache_dir=None: nothing is cached either
  bucket.fail.clear()
  got = build_train_dataset("SYNTHETIC", "gs://fake", cache_dir=tmp_path / "cache")
  assert len(got) == NUM_SEQUENCES and not got.skipped
  # A missing file is still a bad sequence; a frame behind a failed request an unreadable image (redrawn).
  os.remove(tmp_path / "train" / "GOT-10k_Train_000001" / "absence.label")
  skipped = build_train_dataset("SYNTHETIC", "gs://fake", cache_dir=tmp_path / "cache2").skipped
  assert "gs://fake/train/GOT-10k_Train_000001/absence.label: missing annotation file" in skipped[
      "GOT-10k_Train_000001"]
  frame = got.sequence(1).frames[2]
  bucket.fail.add(frame)
  with pytest.raises(pipeline.BadSample, match="403 denied"):
    pipeline.read_image(frame)
