"""`build_tfds.py --beam` (`beam_packing.py`): the Beam build of a synthetic root holds the single-process
build's records, record by record, and its sequence table, frames and crops, with its unreadable frames
counted; a bundle the runner retries leaves no duplicate; the DirectRunner's worker processes and a gs://
--data-dir (the storage emulator) give the same set; without Apache Beam, --beam is one error line."""

import io
import json
import os
import subprocess
import sys
import urllib.parse
import urllib.request

from etils import epath
import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_pipelines.training import packed
from data_pipelines.training import precropped
from data_pipelines.training import processing
from data_pipelines.training import synthetic_train
from tests.conftest import ROOT, assert_same_packed_set, packed_builder

NUM_FRAMES, SIZE = 24, (160, 120)
SMOKE = "configs/fartrack.py:variant=smoke"
BUCKET = "fartrack-test"
_NO_BEAM = "apache_beam is not installed (pip install -r requirements-beam.txt)"


def _beam():
  return pytest.importorskip("apache_beam", reason=_NO_BEAM)


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
  """{name: root}: a 3-sequence GOT-10k-layout root with a frame that cannot be decoded and one that is
  missing, and a COCO root (objects sharing an image's record)."""
  synthetic = str(tmp_path_factory.mktemp("synthetic"))
  made = synthetic_train.make_synthetic_train_dataset("got10k_train", synthetic, num_sequences=3,
                                                      num_frames=NUM_FRAMES, size=SIZE)
  with open(made[0].frames[3], "wb") as f:
    f.write(b"not an image")  # stored as it is in frames, unreadable (stored empty) in crops
  os.remove(made[1].frames[5])  # unreadable in both formats
  coco = str(tmp_path_factory.mktemp("coco"))
  synthetic_train.make_synthetic_train_dataset("coco", coco, num_sequences=2, size=SIZE)
  return {"SYNTHETIC": synthetic, "COCO17": coco}


def _crops():
  import importlib  # pylint: disable=g-import-not-at-top
  return processing.FrameProcessing.from_config(importlib.import_module("configs.fartrack").get_config(
      "variant=smoke"))


def _build(fmt, name, root, data_dir, beam_options=None):
  if fmt == "crops":
    return precropped.pack_precropped_dataset(name, root, data_dir, _crops(), beam_options=beam_options)
  return packed.pack_train_dataset(name, root, data_dir, beam_options=beam_options)


def _table(path):
  with np.load(io.BytesIO((path / packed.SEQUENCES_FILE).read_bytes())) as npz:
    return {k: npz[k] for k in npz.files}


@pytest.fixture(scope="module")
def single_process(roots, tmp_path_factory):
  """The single-process builds (frames of both roots, crops of the synthetic one) in one data_dir."""
  data_dir = str(tmp_path_factory.mktemp("single"))
  for fmt, name in (("frames", "SYNTHETIC"), ("frames", "COCO17"), ("crops", "SYNTHETIC")):
    _build(fmt, name, roots[name], data_dir)
  return data_dir


@pytest.mark.parametrize("fmt,name,unreadable", [
    ("frames", "SYNTHETIC", 1), pytest.param("frames", "COCO17", 0, marks=pytest.mark.slow),
    pytest.param("crops", "SYNTHETIC", 2, marks=pytest.mark.slow)])
def test_beam_build_equals_the_single_process_build_record_by_record(roots, single_process, tmp_path, fmt, name,
                                                                     unreadable):
  _beam()
  from data_pipelines.training import beam_packing  # pylint: disable=g-import-not-at-top
  data_dir = str(tmp_path / "beam")
  _build(fmt, name, roots[name], data_dir, beam_packing.pipeline_options("runner=DirectRunner"))
  assert_same_packed_set(fmt, name, single_process, data_dir)
  builder, version = packed_builder(fmt)
  # The frames that could not be read are counted in the build's table (the same count as the single
  # process's, compared above) and are the ones the root has.
  assert int(_table(packed.packed_path(name, data_dir, builder, version))["unreadable_frames"]) == unreadable
  # Nothing left under a temporary name (shards, the workers' results).
  leftovers = [p.name for p in packed.packed_path(name, data_dir, builder, version).iterdir()
               if "incomplete" in p.name]
  assert not leftovers, leftovers


@pytest.mark.slow
def test_a_bundle_the_runner_retries_leaves_no_duplicate_record(roots, single_process, tmp_path, monkeypatch):
  _beam()
  from data_pipelines.training import beam_packing  # pylint: disable=g-import-not-at-top
  read_file = packed._read_file  # pylint: disable=protected-access
  doomed = sorted(os.listdir(os.path.join(roots["SYNTHETIC"], "train")))[2]
  attempts = []

  def dies_the_first_time(path):
    if doomed in path and path.endswith("00000010.jpg"):
      attempts.append(path)
      if len(attempts) == 1:
        raise RuntimeError("worker lost in the middle of a sequence")
    return read_file(path)

  monkeypatch.setattr(packed, "_read_file", dies_the_first_time)
  data_dir = str(tmp_path / "beam")
  # The bundle-based DirectRunner retries a failed bundle (up to 4 times), as Dataflow does; the portable
  # one stops the pipeline instead. In this process, so the failure above reaches it.
  _build("frames", "SYNTHETIC", roots["SYNTHETIC"], data_dir,
         beam_packing.pipeline_options("runner=BundleBasedDirectRunner"))
  assert len(attempts) == 2, attempts  # the sequence was made again
  assert_same_packed_set("frames", "SYNTHETIC", single_process, data_dir)  # and its records are there once
  leftovers = [p.name for p in packed.packed_path("SYNTHETIC", data_dir).iterdir() if "incomplete" in p.name]
  assert not leftovers, leftovers


@pytest.mark.parametrize("lengths,num_shards", [([24, 24, 24], 64), ([5] * 40, 8), ([100, 1, 1, 1, 100, 3], 4),
                                                 ([1] * 7, 1), ([2500, 30, 2400], 2)])
def test_shards_are_runs_of_whole_sequences_in_order_none_empty(lengths, num_shards):
  _beam()
  from data_pipelines.training import beam_packing  # pylint: disable=g-import-not-at-top
  first_record = np.concatenate([[0], np.cumsum(lengths)[:-1]])
  num_records = int(sum(lengths))
  shards = beam_packing.plan_shards(first_record, range(len(lengths)), num_records, num_shards)
  assert [i for shard in shards for i in shard] == list(range(len(lengths)))  # every sequence once, in order
  assert all(shards) and len(shards) <= num_shards
  records = [sum(lengths[i] for i in shard) for shard in shards]
  # About equal: no shard holds more than its share plus one sequence.
  assert max(records) <= num_records / num_shards + max(lengths), records
  if num_shards >= len(lengths):
    assert shards == [[i] for i in range(len(lengths))]


def test_image_sets_shard_only_the_sequences_that_write_records():
  # COCO: objects of one image share its record; only the first object of each image writes it.
  _beam()
  from data_pipelines.training import beam_packing  # pylint: disable=g-import-not-at-top
  first_record = np.array([0, 0, 1, 1, 1, 2, 3, 3])
  owners = [0, 2, 5, 6]
  assert beam_packing.plan_shards(first_record, owners, 4, 2) == [[0, 2], [5, 6]]


def test_a_shard_with_other_records_than_planned_fails_the_build_and_leaves_no_set(roots, tmp_path, monkeypatch):
  # The root changed between the plan and a worker's reading (a frame list shorter than indexed): the build
  # stops naming the shard; nothing reads as a set.
  _beam()
  from data_pipelines.training import beam_packing  # pylint: disable=g-import-not-at-top
  frame_records = packed.frame_records

  def one_frame_short(seq, index, first_record, num_records):
    records = list(frame_records(seq, index, first_record, num_records))
    return records[:-1] if index == 1 else records

  monkeypatch.setattr(packed, "frame_records", one_frame_short)
  data_dir = tmp_path / "beam"
  with pytest.raises(Exception, match=r"shard 1 made 23 records, the build planned 24: the root changed"):
    _build("frames", "SYNTHETIC", roots["SYNTHETIC"], str(data_dir),
           beam_packing.pipeline_options("runner=DirectRunner"))
  assert not packed.packed_path("SYNTHETIC", str(data_dir)).exists()


def test_the_shard_writer_copies_into_any_epath_place_through_a_local_file(tmp_path):
  _beam()
  from data_pipelines.training import beam_packing  # pylint: disable=g-import-not-at-top
  from tensorflow_datasets.core import file_adapters  # pylint: disable=g-import-not-at-top
  writer = beam_packing.BucketExampleWriter(file_adapters.FileFormat.ARRAY_RECORD)
  examples = [(k, f"record {k}".encode()) for k in range(5)]
  target = tmp_path / "shard.array_record"
  for _ in range(2):  # a retried attempt writes the same shard again
    writer.write(os.fspath(target), examples)
  from array_record.python import array_record_data_source  # pylint: disable=g-import-not-at-top
  source = array_record_data_source.ArrayRecordDataSource([os.fspath(target)])
  assert [source[i] for i in range(len(source))] == [e for _, e in examples]


def test_a_build_folder_is_finished_with_dataset_info_last(tmp_path, monkeypatch):
  # On a bucket the finished build folder is moved file by file (a folder rename there copies objects in
  # name order, dataset_info.json first): a move cut short must leave no dataset_info.json.
  source, target = tmp_path / "incomplete.ABCDEF_1.0.0", tmp_path / "1.0.0"
  source.mkdir()
  names = ["dataset_info.json", "features.json", "sequences.npz",
           "tracking_frames-train.array_record-00000-of-00002", "tracking_frames-train.array_record-00001-of-00002",
           "incomplete.0123456789abcdef0123456789abcdef.tracking_frames-train.array_record-00000-of-00002"]
  for name in names:
    (source / name).write_text(name)
  moved = []
  path_class = type(epath.Path(source))
  replace = path_class.replace

  def recording_replace(self, destination):
    moved.append(self.name)
    return replace(self, destination)

  monkeypatch.setattr(path_class, "replace", recording_replace)
  packed._move_in_order(epath.Path(source), epath.Path(target))  # pylint: disable=protected-access
  assert moved[-2:] == ["sequences.npz", "dataset_info.json"], moved
  assert sorted(moved) == sorted(names[:-1])  # the dead attempt's temporary shard is not moved
  assert sorted(os.listdir(target)) == sorted(names[:-1])


def _script(*args, env=None, cwd=ROOT, prefix=()):
  return subprocess.run([sys.executable, *prefix, os.path.join(ROOT, "scripts", "build_tfds.py"), *args],
                        cwd=cwd, capture_output=True, text=True, timeout=600, env=env)


def test_beam_without_apache_beam_is_one_error_line(roots, tmp_path):
  hide = ("-c", "import runpy, sys; sys.modules['apache_beam'] = None; sys.argv = sys.argv[1:]; "
                "runpy.run_path(sys.argv[0], run_name='__main__')")
  out = _script("--beam", "--dataset", "SYNTHETIC", "--root", roots["SYNTHETIC"], "--data-dir",
                str(tmp_path / "tfds"), prefix=hide)
  assert out.returncode == 1, out.stderr[-2000:]
  assert "Traceback" not in out.stderr, out.stderr[-2000:]
  errors = [line for line in out.stderr.splitlines() if "error" in line.lower()]
  assert errors == ["error: --beam needs Apache Beam, which is not installed: pip install -r "
                    "requirements-beam.txt"], out.stderr[-2000:]
  assert not (tmp_path / "tfds").exists()


def test_a_remote_runner_with_a_local_data_dir_is_one_error_line(roots, tmp_path):
  _beam()
  out = _script("--beam", "--dataset", "SYNTHETIC", "--root", roots["SYNTHETIC"], "--data-dir",
                str(tmp_path / "tfds"), "--beam_pipeline_options", "runner=DataflowRunner,project=p,region=r")
  assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
  assert out.stderr.strip().splitlines()[-1] == (
      f"error: --data-dir {tmp_path / 'tfds'} is a local folder, which the workers of --beam_pipeline_options "
      "'runner=DataflowRunner,project=p,region=r' cannot write: give a bucket (--data-dir gs://...)")
  assert not (tmp_path / "tfds").exists()


def _objects(server, prefix):
  """{name: bytes} of the objects under `prefix`, read from the server's JSON API directly (not through the
  clients under test)."""
  base = f"http://127.0.0.1:{server.port}/storage/v1/b/{BUCKET}/o"
  with urllib.request.urlopen(f"{base}?{urllib.parse.urlencode({'prefix': prefix})}", timeout=30) as response:
    names = [item["name"] for item in json.load(response).get("items", [])]
  out = {}
  for name in names:
    with urllib.request.urlopen(f"{base}/{urllib.parse.quote(name, safe='')}?alt=media", timeout=30) as r:
      out[name] = r.read()
  return out


@pytest.mark.slow  # worker processes and a storage server
def test_beam_builds_into_a_bucket_the_same_sets(roots, single_process, tmp_path):
  _beam()
  from tests import gcs_emulator  # pylint: disable=g-import-not-at-top
  server = gcs_emulator.GcsEmulator(str(tmp_path / "gcs"), BUCKET)
  try:
    cwd = tmp_path / "cwd"  # the script runs here: nothing may appear in it
    cwd.mkdir()
    env = dict(os.environ, **server.env)
    # Crops in the DirectRunner's worker processes (fresh interpreters: what a remote worker starts from),
    # frames in this one.
    runs = {"crops": "runner=DirectRunner,direct_running_mode=multi_processing,direct_num_workers=2",
            "frames": "runner=DirectRunner"}
    for fmt, options in runs.items():
      args = ("--beam", "--dataset", "SYNTHETIC", "--root", roots["SYNTHETIC"], "--data-dir",
              f"gs://{BUCKET}/tfds", "--format", fmt, "--config", SMOKE, "--beam_pipeline_options", options)
      out = _script(*args, env=env, cwd=str(cwd))
      assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
      assert "SYNTHETIC: 3 sequences, 72 frames" in out.stdout, out.stdout[-3000:]
    counts = server.requests()
    assert counts["gfile"] > 0, counts  # the workers' shards and the set went through epath to the bucket
    objects = _objects(server, "tfds/")
    files = {n: data for n, data in objects.items() if not n.endswith("/")}  # not the folder markers
    assert not [n for n in files if "incomplete" in n], "the temporary build folder and shard names are gone"
    local = tmp_path / "downloaded"
    for name, data in files.items():
      path = local / name
      path.parent.mkdir(parents=True, exist_ok=True)
      path.write_bytes(data)
    for fmt in runs:
      builder, version = packed_builder(fmt)
      assert any(n.startswith(f"tfds/{builder}/synthetic/{version}/") and ".array_record-" in n for n in files)
      assert_same_packed_set(fmt, "SYNTHETIC", single_process, str(local / "tfds"))
    again = _script(*args, env=env, cwd=str(cwd))  # a second run of the last command
    assert again.returncode == 0 and "already packed" in again.stdout, again.stdout[-3000:] + again.stderr[-3000:]
    assert os.listdir(cwd) == [], os.listdir(cwd)
    assert not os.path.exists(os.path.join(ROOT, "gs:")), "a bucket path went through os.path"
  finally:
    server.close()
