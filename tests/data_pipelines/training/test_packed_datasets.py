"""tfds array_record round trip: synthetic training roots packed by `packed.TrackingFrames` read back
through `tfds.data_source` with the native reader's sequences, boxes and flags, the image files' own
bytes, the same grain examples, and no TensorFlow at read time; the build script and its errors."""

import os
import pickle
import re
import subprocess
import sys

from absl import flags
import cv2
import grain
import numpy as np
import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.core import shuffle as tfds_shuffle
from tensorflow_datasets.proto import tf_example_pb2

from data_pipelines.training import packed
from data_pipelines.training import pipeline
from data_pipelines.training import synthetic_train
from data_pipelines.training.datasets import build_train_dataset
from data_pipelines.training.datasets import DatasetError
from tests.conftest import ROOT
from tests import pipeline_fakes

# 24 frames: the sampler draws only from videos of at least 20 frames.
NUM_FRAMES, SIZE = 24, (48, 32)
# training name -> (synthetic layout, number of sequences (COCO: images of OBJECTS_PER_IMAGE objects))
PACKED = {"GOT10K_train_full": ("got10k_train", 2), "LASOT": ("lasot_train", 2), "COCO17": ("coco", 1)}


def _make_root(layout, root, num_sequences):
  return synthetic_train.make_synthetic_train_dataset(layout, str(root), num_sequences=num_sequences,
                                                      num_frames=NUM_FRAMES, size=SIZE)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  """{name: (root, the generator's sequences)} and the tfds data_dir they are all packed into."""
  data_dir = tmp_path_factory.mktemp("tfds")
  roots = {}
  for name, (layout, num_sequences) in PACKED.items():
    root = tmp_path_factory.mktemp(layout)
    roots[name] = (str(root), _make_root(layout, root, num_sequences))
    packed.pack_train_dataset(name, str(root), str(data_dir))
  return roots, str(data_dir)


def _rgb(path):
  return cv2.cvtColor(cv2.imread(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _file_bytes(path):
  with open(path, "rb") as f:
    return f.read()


@pytest.mark.parametrize("name", list(PACKED))
def test_sequences_read_back_as_generated_with_the_files_own_bytes(built, name):
  roots, data_dir = built
  root, want = roots[name]
  got = packed.PackedTrainDataset(name, data_dir)
  assert len(got) == len(want) and got.is_video == (name != "COCO17") and got.skipped == {}
  assert got.num_frames == sum(len(s.frames) for s in want)
  for seq, expected in zip(got, want):
    assert (seq.dataset, seq.name, seq.is_video, seq.object_class) == (name, expected.name, expected.is_video,
                                                                       expected.object_class)
    assert seq.boxes.dtype == np.float32 and len(seq.frames) == len(expected.frames)
    np.testing.assert_array_equal(seq.boxes, expected.boxes)  # integer boxes: exact
    np.testing.assert_array_equal(seq.valid, expected.valid)
    np.testing.assert_array_equal(seq.visible, expected.visible)
    for frame, path in zip(seq.frames, expected.frames):
      assert frame.read_bytes() == _file_bytes(path)  # stored as on disk, not re-encoded
      np.testing.assert_array_equal(pipeline.read_image(frame), _rgb(path))
  # The generator's hidden stretches are there (so the flags are not trivially all true).
  if name != "COCO17":
    assert all(s.visible.any() and not s.visible.all() for s in got)


@pytest.mark.parametrize("name", list(PACKED))
def test_packed_sequences_equal_the_native_readers(built, name):
  roots, data_dir = built
  native = build_train_dataset(name, roots[name][0])
  got = packed.open_packed_datasets([name], data_dir)[0]
  assert got.names == native.names and len(got) == len(native)
  for a, b in zip(got, native):
    assert (a.name, a.is_video, a.object_class) == (b.name, b.is_video, b.object_class)
    for field in ("boxes", "valid", "visible"):
      np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)


def test_records_are_frames_in_sequence_then_frame_order(built):
  roots, data_dir = built
  want = roots["LASOT"][1]
  records = tfds.data_source("tracking_frames/lasot", split="train", data_dir=data_dir, download=False)
  assert len(records) == NUM_FRAMES * len(want)
  for i, seq in enumerate(want):
    for k in range(NUM_FRAMES):
      record = records[i * NUM_FRAMES + k]  # frame k of sequence i
      assert (int(record["sequence"]), int(record["frame"])) == (i, k)
      np.testing.assert_array_equal(record["box"], seq.boxes[k])
      assert (bool(record["visible"]), bool(record["valid"])) == (seq.visible[k], seq.valid[k])
      assert record["image"] == _file_bytes(seq.frames[k])


def test_objects_of_one_image_share_its_record(built):
  roots, data_dir = built
  want = roots["COCO17"][1]
  assert len(want) == synthetic_train.OBJECTS_PER_IMAGE and len({s.frames for s in want}) == 1
  records = tfds.data_source("tracking_frames/coco17", split="train", data_dir=data_dir, download=False)
  assert len(records) == 1  # one image, stored once
  np.testing.assert_array_equal(records[0]["box"], want[0].boxes[0])  # the first object's
  got = packed.PackedTrainDataset("COCO17", data_dir)
  for seq, expected in zip(got, want):  # every object still has its own box
    np.testing.assert_array_equal(seq.boxes, expected.boxes)
    assert seq.frames[0].read_bytes() == _file_bytes(want[0].frames[0])


def test_record_keys_keep_the_order_and_spread_over_tfds_buckets():
  num_records = 10 ** 7
  records = [0, 1, 2, num_records // 2, num_records - 2, num_records - 1]
  keys = [packed.record_key(r, num_records) for r in records]
  assert keys == sorted(keys) and len(set(keys)) == len(keys) and max(keys) < 2 ** 128
  buckets = [tfds_shuffle.get_bucket_number(k, tfds_shuffle.BUCKETS_NUMBER) for k in keys]
  # Spread: the first and last records in the first and last of tfds' buckets, the middle one halfway.
  assert buckets[0] == 0 and buckets[-1] == tfds_shuffle.BUCKETS_NUMBER - 1
  assert buckets[3] == tfds_shuffle.BUCKETS_NUMBER // 2


@pytest.mark.slow
def test_order_survives_tfds_on_disk_buckets(built, tmp_path, monkeypatch):
  monkeypatch.setattr(tfds_shuffle, "MAX_MEM_BUFFER_SIZE", 0)  # what a dataset over 1 GB goes through
  monkeypatch.setattr(tfds_shuffle, "BUCKETS_NUMBER", 10)  # fewer bucket files (tfds makes 1000): faster
  roots, _ = built
  root, want = roots["GOT10K_train_full"]
  packed.pack_train_dataset("GOT10K_train_full", root, str(tmp_path))
  got = packed.PackedTrainDataset("GOT10K_train_full", str(tmp_path))
  for seq, expected in zip(got, want):
    assert [f.read_bytes() for f in seq.frames] == [_file_bytes(p) for p in expected.frames]


def _process(templates, template_boxes, search, search_box, rng):
  """Keeps the whole decoded frames, their boxes and a draw of the example's generator."""
  return {"templates": np.stack(templates), "template_boxes": np.stack(template_boxes), "search": search,
          "search_box": np.asarray(search_box), "draw": np.float64(rng.random()), "valid": True}


def _frame_examples(datasets_, seed):
  return pipeline.FrameExamples(datasets_, [1.0] * len(datasets_), num_templates=2, max_gap=8, process=_process,
                                seed=seed)


def _assert_same_examples(a, b):
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_frame_examples_over_packed_equal_those_over_native(built):
  roots, data_dir = built
  native = [build_train_dataset(name, roots[name][0]) for name in PACKED]
  packed_datasets = packed.open_packed_datasets(list(PACKED), data_dir)
  native_examples, packed_examples = _frame_examples(native, 7), _frame_examples(packed_datasets, 7)
  searches = set()
  for index in range(12):
    a, b = native_examples(index), packed_examples(index)
    _assert_same_examples(a, b)
    searches.add(a["search"].tobytes())
  assert len(searches) > 3  # different frames were drawn


def test_on_a_bucket_an_examples_frames_are_read_in_one_call_and_give_the_same_examples(built, monkeypatch):
  # One call of the set's reader per example (array_record requests the records in parallel, without the
  # GIL), not a Python thread per frame; a local disk reads frame by frame. Same examples either way.
  _, data_dir = built
  packed_datasets = packed.open_packed_datasets(list(PACKED), data_dir)
  local = pipeline_fakes.RecordReads(monkeypatch)
  expected = [_frame_examples(packed_datasets, 7)(i) for i in range(8)]
  assert local.together == [] and local.single >= 8 * 2

  monkeypatch.setattr(pipeline, "_on_remote_storage", lambda frame: True)  # as for a data_dir on gs://
  remote = pipeline_fakes.RecordReads(monkeypatch)
  got = [_frame_examples(packed_datasets, 7)(i) for i in range(8)]
  # One read per example: a call for the frames together, or a single record for a one-frame example (a COCO
  # image drawn as template and search).
  assert len(remote.together) + remote.single == 8, (remote.together, remote.single)
  assert len(remote.together) >= 4 and all(len(indices) >= 2 for indices in remote.together), remote.together
  for a, b in zip(expected, got):
    _assert_same_examples(a, b)


def test_records_read_together_are_still_checked_against_the_table(built):
  _, data_dir = built
  frame = packed.PackedTrainDataset("LASOT", data_dir).sequence(0).frames[2]
  other = frame.source.records([frame.record + 1])[0]
  with pytest.raises(DatasetError, match=r"record \d+ holds sequence \d+ frame 3, .* frame 2"):
    frame.with_record(other).read_bytes()


@pytest.mark.slow
def test_packed_dataset_pickles_into_grain_workers(built, monkeypatch):
  roots, data_dir = built
  dataset = packed.PackedTrainDataset("LASOT", data_dir)
  frame = dataset.sequence(1).frames[3]
  frame.read_bytes()  # opens the records in this process: they must not travel in the pickle
  assert len(pickle.dumps(frame)) < 400
  copy = pickle.loads(pickle.dumps(dataset))
  assert copy.sequence(1).frames[3].read_bytes() == _file_bytes(roots["LASOT"][1][1].frames[3])
  # Worker processes import this module by name: put the repository root on their path.
  monkeypatch.setenv("PYTHONPATH", ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; outside an absl app use defaults
    flags.FLAGS.mark_as_parsed()
  examples = _frame_examples([dataset], 3)
  serial = [examples(i) for i in range(4)]
  stream = grain.MapDataset.range(4).map(examples).to_iter_dataset().mp_prefetch(
      grain.MultiprocessingOptions(num_workers=1))
  for a, b in zip(serial, stream, strict=True):
    _assert_same_examples(a, b)


def test_reading_imports_no_tensorflow(built):
  _, data_dir = built
  script = (
      "import sys\n"
      "from data_pipelines.training import packed, pipeline\n"
      f"dataset = packed.open_packed_datasets(['LASOT'], {data_dir!r})[0]\n"
      "image = pipeline.read_image(dataset.sequence(1).frames[5])\n"
      "assert image.shape == (32, 48, 3), image.shape\n"
      "assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'\n"
      "print('read without tensorflow')\n")
  out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "read without tensorflow" in out.stdout


def test_missing_or_unbuilt_data_dir_is_a_clear_error(built, tmp_path):
  _, data_dir = built
  missing = str(tmp_path / "nowhere")
  with pytest.raises(DatasetError, match=r"nowhere: no packed LASOT dataset.*build_tfds.py --dataset LASOT"):
    packed.PackedTrainDataset("LASOT", missing)
  with pytest.raises(DatasetError, match="no packed TRACKINGNET dataset"):
    packed.open_packed_datasets(["LASOT", "TRACKINGNET"], data_dir)
  with pytest.raises(ValueError, match="unknown training dataset 'lasot'"):
    packed.PackedTrainDataset("lasot", data_dir)


@pytest.mark.parametrize("name", list(PACKED))
def test_records_parse_as_tfds_parses_them(built, name):
  """`ExampleParser` (records parsed straight from their protos) gives what tfds' own parsing gives, types
  included, for every record of every packed set, one by one and several at once."""
  _, data_dir = built
  pipeline_fakes.assert_records_parse_as_tfds_parses_them(
      packed.PackedTrainDataset(name, data_dir).sequence(0).frames[0].source)


def test_example_parser_refuses_what_it_does_not_parse_exactly(built):
  _, data_dir = built
  features = tfds.data_source(f"{packed.BUILDER_NAME}/{packed.config_name('LASOT')}:{packed.DATASET_VERSION}",
                              split=packed.SPLIT, data_dir=data_dir, download=False).dataset_info.features
  parse = packed.ExampleParser(features.get_serialized_info())
  for unsupported in (tfds.features.FeaturesDict({"image": tfds.features.Image(shape=(4, 4, 3))}),
                      tfds.features.FeaturesDict({"boxes": tfds.features.Tensor(shape=(None, 4), dtype=np.float32)}),
                      tfds.features.FeaturesDict({"nested": {"x": tfds.features.Scalar(dtype=np.int64)}})):
    assert not packed.ExampleParser.supports(unsupported)
  example = tf_example_pb2.Example.FromString(packed.PackedTrainDataset("LASOT", data_dir).sequence(0).frames[0]
                                               .source._open().data_source[0])  # pylint: disable=protected-access
  assert parse(example.SerializeToString())["box"].shape == (4,)
  del example.features.feature["box"].float_list.value[3]
  with pytest.raises(ValueError, match=r"feature 'box': 3 values, the set's features say shape \(4,\)"):
    parse(example.SerializeToString())
  del example.features.feature["box"]
  with pytest.raises(ValueError, match=r"feature 'box': 0 values"):
    parse(example.SerializeToString())


def test_a_record_that_does_not_parse_is_an_error_naming_the_set_and_record(built):
  _, data_dir = built
  source = packed.PackedTrainDataset("LASOT", data_dir).sequence(0).frames[0].source
  source.record(0)
  source._records.data_source = {3: b"\xff not a proto"}  # pylint: disable=protected-access
  with pytest.raises(DatasetError, match=r"lasot.*: record 3 does not parse as this set's examples"):
    source.record(3)


def test_a_record_out_of_the_tables_order_is_an_error(built):
  _, data_dir = built
  frame = packed.PackedTrainDataset("LASOT", data_dir).sequence(1).frames[2]
  wrong = packed.PackedFrame(frame.source, frame.record, frame.sequence, frame.frame + 1, frame.label)
  with pytest.raises(DatasetError, match=f"record {frame.record} holds sequence 1 frame 2"):
    wrong.read_bytes()


class _Frame:
  def __init__(self, data=None, error=None):
    self.name, self.data, self.error = "SEQ frame 4", data, error

  def read_bytes(self):
    if self.error:
      raise self.error
    return self.data


def test_read_image_takes_paths_and_frame_references(tmp_path):
  path = tmp_path / "f.png"
  image = np.arange(6 * 5 * 3, dtype=np.uint8).reshape(6, 5, 3)  # PNG: lossless, so the exact pixels
  cv2.imwrite(str(path), image)
  rgb = image[..., ::-1]
  np.testing.assert_array_equal(pipeline.read_image(str(path)), rgb)
  np.testing.assert_array_equal(pipeline.read_image(path), rgb)  # os.PathLike
  np.testing.assert_array_equal(pipeline.read_image(_Frame(path.read_bytes())), rgb)
  for bad in (_Frame(b"not an image"), _Frame(b""), _Frame(error=OSError("gone"))):
    with pytest.raises(pipeline.BadSample, match="SEQ frame 4") as e:
      pipeline.read_image(bad)
    assert e.value.reason == "unreadable_image"
  with pytest.raises(pipeline.BadSample, match="missing.jpg"):
    pipeline.read_image(str(tmp_path / "missing.jpg"))


def test_frames_missing_when_packing_are_stored_empty_and_read_as_unreadable(tmp_path):
  want = _make_root("got10k_train", tmp_path / "root", 1)
  os.remove(want[0].frames[3])
  packed.pack_train_dataset("SYNTHETIC", str(tmp_path / "root"), str(tmp_path / "tfds"))
  got = packed.PackedTrainDataset("SYNTHETIC", str(tmp_path / "tfds"))
  assert got.unreadable_frames == 1
  with pytest.raises(pipeline.BadSample, match="GOT-10k_Train_000001 frame 3") as e:
    pipeline.read_image(got.sequence(0).frames[3])
  assert e.value.reason == "unreadable_image"
  np.testing.assert_array_equal(pipeline.read_image(got.sequence(0).frames[4]), _rgb(want[0].frames[4]))


def test_an_interrupted_build_leaves_nothing_that_reads_as_a_dataset(built, tmp_path, monkeypatch):
  roots, _ = built
  root, want = roots["LASOT"]
  data_dir = str(tmp_path)
  read_file = packed._read_file  # pylint: disable=protected-access
  calls = []

  def crash_midway(path):
    calls.append(path)
    if len(calls) > NUM_FRAMES:
      raise KeyboardInterrupt("killed")
    return read_file(path)

  monkeypatch.setattr(packed, "_read_file", crash_midway)
  with pytest.raises(KeyboardInterrupt):
    packed.pack_train_dataset("LASOT", root, data_dir)
  config_dir = tmp_path / "tracking_frames" / "lasot"
  assert not os.path.exists(packed.packed_path("LASOT", data_dir))
  assert not config_dir.exists() or os.listdir(config_dir) == []  # the temporary folder is gone too
  with pytest.raises(DatasetError, match="no packed LASOT dataset"):
    packed.PackedTrainDataset("LASOT", data_dir)
  monkeypatch.setattr(packed, "_read_file", read_file)
  packed.pack_train_dataset("LASOT", root, data_dir)  # a second try builds it
  got = packed.PackedTrainDataset("LASOT", data_dir)
  assert len(got) == len(want)
  assert got.sequence(1).frames[-1].read_bytes() == _file_bytes(want[1].frames[-1])


def test_a_bad_root_fails_with_the_readers_error_before_writing(built, tmp_path):
  roots, _ = built
  with pytest.raises(DatasetError, match="missing LASOT root folder"):
    packed.pack_train_dataset("LASOT", str(tmp_path / "absent"), str(tmp_path / "tfds"))
  got10k_root = roots["GOT10K_train_full"][0]
  with pytest.raises(DatasetError, match=re.escape(got10k_root)):  # a GOT-10k root is not a LaSOT one
    packed.pack_train_dataset("LASOT", got10k_root, str(tmp_path / "tfds"))
  assert not (tmp_path / "tfds").exists()
  os.makedirs(packed.packed_path("LASOT", str(tmp_path / "tfds")))  # e.g. a copy that stopped halfway
  with pytest.raises(DatasetError, match="exists without sequences.npz"):
    packed.pack_train_dataset("LASOT", roots["LASOT"][0], str(tmp_path / "tfds"))


def _script(*args):
  return subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "build_tfds.py"), *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=300)


def test_script_help_and_build(built, tmp_path):
  roots, _ = built
  out = _script("--help")
  assert out.returncode == 0, out.stderr[-2000:]
  for flag in ("--dataset", "--root", "--data_dir", "--cache_dir"):
    assert flag in out.stdout
  root, want = roots["GOT10K_train_full"]
  data_dir = str(tmp_path / "tfds")
  out = _script("--dataset", "SYNTHETIC", "--root", root, "--data-dir", data_dir, "--cache-dir",
                str(tmp_path / "cache"))
  assert out.returncode == 0, out.stderr[-2000:]
  assert "SYNTHETIC: 2 sequences, 48 frames" in out.stdout
  got = packed.PackedTrainDataset("SYNTHETIC", data_dir)
  assert got.names == [s.name for s in want]
  np.testing.assert_array_equal(got.sequence(1).boxes, want[1].boxes)
  assert os.listdir(tmp_path / "cache")  # the reader's index cache was used
  out = _script("--dataset", "LASOT", "--root", str(tmp_path / "absent"), "--data-dir", data_dir)
  assert out.returncode != 0 and "missing LASOT root folder" in out.stderr


def test_a_frame_behind_a_failed_bucket_request_fails_the_build_instead_of_being_stored_empty(monkeypatch):
  from data_pipelines import paths  # pylint: disable=g-import-not-at-top
  errors = {"gs://b/denied.jpg": PermissionError("403 denied"), "gs://b/gone.jpg": FileNotFoundError("404")}

  def read_bytes(path):
    raise errors[path]

  monkeypatch.setattr(paths, "read_bytes", read_bytes)
  # A missing object is a missing frame (stored empty, counted); a denied request says nothing about the frame.
  assert packed._read_file("gs://b/gone.jpg") == (b"", "gs://b/gone.jpg: 404")  # pylint: disable=protected-access
  with pytest.raises(DatasetError, match=r"^gs://b/denied.jpg: cannot read the frame from its bucket \(403 "
                     r"denied\); check this machine's access to it and run the command again$"):
    packed._read_file("gs://b/denied.jpg")  # pylint: disable=protected-access
