"""Benchmark readers: every layout read back from a synthetic benchmark written by the generator, the
paths the original's loaders build, the sequence tables, and the errors a broken root raises."""

import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from data_pipelines import synthetic
from data_pipelines.evaluation import readers
from data_pipelines.annotation_files import read_boxes
from data_pipelines.evaluation.readers import DATASETS
from data_pipelines.evaluation.readers import DatasetError
from data_pipelines.evaluation.readers import load_dataset
from tests.conftest import ROOT

NUM_SEQUENCES, NUM_FRAMES, SIZE = 2, 8, (64, 48)
LAYOUT = {"got10k_val": "got10k", "got10k_test": "got10k", "lasot": "lasot", "lasot_ext": "lasot_ext",
          "trackingnet": "trackingnet", "nfs": "nfs", "uav123": "uav123", "otb": "otb"}
FIRST_BOX_ONLY = ("got10k_test", "trackingnet")
# Frame 0 of the first sequence, relative to the root, as the original's loaders build it.
FIRST_FRAME = {
    "got10k_val": "val/GOT-10k_Val_000001/00000001.jpg",
    "got10k_test": "test/GOT-10k_Test_000001/00000001.jpg",
    "lasot": "airplane/airplane-1/img/00000001.jpg",
    "lasot_ext": "atv/atv-1/img/00000001.jpg",
    "trackingnet": "TEST/frames/{name}/0.jpg",
    "nfs": "sequences/Gymnastics/00001.jpg",
    "uav123": "data_seq/UAV123/bike1/000001.jpg",
    "otb": "Basketball/img/0001.jpg",
}
FIRST_CLASS = {"lasot": "airplane", "lasot_ext": "atv", "nfs": "person", "uav123": "vehicle", "otb": "person"}


def make(layout, root, **kwargs):
  kwargs = dict(dict(num_sequences=NUM_SEQUENCES, num_frames=NUM_FRAMES, size=SIZE), **kwargs)
  return synthetic.make_synthetic_dataset(layout, str(root), **kwargs)


def names_of(dataset, made):
  if dataset == "got10k_val":
    return [n for n in made if n.startswith("GOT-10k_Val")]
  if dataset == "got10k_test":
    return [n for n in made if n.startswith("GOT-10k_Test")]
  return made


def annotation_path(dataset, root, name):
  """Where the first sequence's box file sits in each layout."""
  if dataset.startswith("got10k"):
    return os.path.join(root, dataset.split("_")[1], name, "groundtruth.txt")
  if dataset == "trackingnet":
    return os.path.join(root, "TEST", "anno", f"{name}.txt")
  entry = {e.name: e for e in readers.table_entries(dataset)}[name]
  return os.path.join(root, entry.annotation)


@pytest.fixture(scope="module")
def synthetic_roots(tmp_path_factory):
  """{layout: (root, names)}, written once and only read by the tests that use it."""
  base = tmp_path_factory.mktemp("benchmarks")
  return {layout: (str(base / layout), make(layout, base / layout)) for layout in synthetic.LAYOUTS}


@pytest.fixture
def fresh_root(tmp_path):
  """A writable synthetic root for one dataset, for the tests that break it."""
  def build(dataset):
    root = tmp_path / LAYOUT[dataset]
    return str(root), names_of(dataset, make(LAYOUT[dataset], root))
  return build


@pytest.mark.parametrize("dataset", DATASETS)
def test_reads_back_what_the_generator_wrote(dataset, synthetic_roots):
  root, made = synthetic_roots[LAYOUT[dataset]]
  names = names_of(dataset, made)
  seqs = load_dataset(dataset, root)
  assert [s.name for s in seqs] == names and len(names) == NUM_SEQUENCES
  hidden = np.isin(np.arange(NUM_FRAMES), synthetic._hidden_stretch(NUM_FRAMES))
  assert hidden.any() and not hidden[0]
  for seq in seqs:
    assert seq.dataset == dataset
    assert len(seq.frames) == NUM_FRAMES and all(os.path.isabs(f) and os.path.exists(f) for f in seq.frames)
    assert seq.ground_truth.shape == (NUM_FRAMES, 4) and seq.ground_truth.dtype == np.float64
    truth = read_boxes(os.path.join(root, synthetic.FULL_GT_DIR, f"{seq.name}.txt"))
    assert truth.shape == (NUM_FRAMES, 4)
    if dataset in FIRST_BOX_ONLY:
      np.testing.assert_array_equal(seq.ground_truth[0], truth[0])
      assert np.isnan(seq.ground_truth[1:]).all()
    else:
      np.testing.assert_array_equal(seq.ground_truth, truth)
    np.testing.assert_array_equal(seq.init_box, truth[0])
    if dataset in ("lasot", "lasot_ext", "got10k_val"):
      np.testing.assert_array_equal(seq.target_visible, ~hidden)
    else:
      assert seq.target_visible is None
  assert os.path.relpath(seqs[0].frames[0], root) == FIRST_FRAME[dataset].format(name=names[0])
  assert seqs[0].object_class == FIRST_CLASS.get(dataset)


@pytest.mark.parametrize("layout", synthetic.LAYOUTS)
def test_generated_boxes_stay_in_the_frame_and_move(layout, synthetic_roots):
  root, _ = synthetic_roots[layout]
  dataset = "got10k_val" if layout == "got10k" else layout
  seq = load_dataset(dataset, root)[0]
  truth = read_boxes(os.path.join(root, synthetic.FULL_GT_DIR, f"{seq.name}.txt"))
  width, height = SIZE
  assert (truth[:, 0] >= 0).all() and (truth[:, 1] >= 0).all()
  assert (truth[:, 0] + truth[:, 2] <= width).all() and (truth[:, 1] + truth[:, 3] <= height).all()
  # 15..30 % of the frame, times the +-10 % scale change, rounded to pixels.
  assert (truth[:, 2] >= 0.15 * 0.9 * width - 1).all() and (truth[:, 2] <= 0.3 * 1.1 * width + 1).all()
  assert (truth[:, 3] >= 0.15 * 0.9 * height - 1).all() and (truth[:, 3] <= 0.3 * 1.1 * height + 1).all()
  assert np.abs(np.diff(truth[:, :2], axis=0)).sum() > 0, "the target never moves"
  assert cv2.imread(seq.frames[0]).shape == (height, width, 3)


def test_generator_is_deterministic_in_the_seed(tmp_path):
  make("otb", tmp_path / "a", seed=3)
  make("otb", tmp_path / "b", seed=3)
  make("otb", tmp_path / "c", seed=4)
  boxes = {k: read_boxes(str(tmp_path / k / synthetic.FULL_GT_DIR / "Basketball.txt")) for k in "abc"}
  np.testing.assert_array_equal(boxes["a"], boxes["b"])
  assert not np.array_equal(boxes["a"], boxes["c"])
  leftovers = [f for _, _, files in os.walk(tmp_path) for f in files if f.startswith(".tmp_")]
  assert not leftovers


def test_sequences_argument_selects_in_the_given_order(synthetic_roots):
  root, names = synthetic_roots["lasot"]
  seqs = load_dataset("lasot", root, sequences=names[::-1])
  assert [s.name for s in seqs] == names[::-1]
  assert [s.name for s in load_dataset("lasot", root, sequences=[names[1]])] == [names[1]]


@pytest.mark.parametrize("dataset", DATASETS)
def test_unknown_sequence_name_lists_valid_ones(dataset, synthetic_roots):
  root, made = synthetic_roots[LAYOUT[dataset]]
  with pytest.raises(ValueError, match="no-such-sequence") as error:
    load_dataset(dataset, root, sequences=["no-such-sequence"])
  assert names_of(dataset, made)[0] in str(error.value)


def test_unknown_benchmark_name():
  with pytest.raises(ValueError, match="lasot_ext"):
    load_dataset("vot2020", "/")


@pytest.mark.parametrize("dataset", DATASETS)
def test_missing_root_raises(dataset, tmp_path):
  root = str(tmp_path / "nowhere")
  with pytest.raises(DatasetError, match="nowhere"):
    load_dataset(dataset, root)


@pytest.mark.parametrize("dataset", DATASETS)
def test_missing_frame_names_the_file(dataset, fresh_root):
  root, names = fresh_root(dataset)
  frame = load_dataset(dataset, root)[1].frames[3]
  os.remove(frame)
  with pytest.raises(DatasetError) as error:
    load_dataset(dataset, root)
  assert frame in str(error.value) and "missing frame" in str(error.value)
  # Scoring reads only annotations; the sequence folder listing still gives the test splits' length.
  assert len(load_dataset(dataset, root, sequences=[names[0]], check_frames=False)) == 1


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("bad_line", ["12,abc,5,6", "1,2,3", "1,2,3,4,5", "1,,2,3"])
def test_malformed_annotation_line_names_file_and_line(dataset, bad_line, fresh_root):
  root, names = fresh_root(dataset)
  path = annotation_path(dataset, root, names[1])
  with open(path) as f:
    lines = f.read().splitlines()
  number = 1 if dataset in FIRST_BOX_ONLY else 3
  lines[number - 1] = bad_line
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")
  with pytest.raises(DatasetError) as error:
    load_dataset(dataset, root)
  assert f"{path}:{number}:" in str(error.value) and bad_line in str(error.value)


@pytest.mark.parametrize("dataset", [d for d in DATASETS if d not in FIRST_BOX_ONLY])
def test_frame_and_annotation_counts_must_match(dataset, fresh_root):
  root, names = fresh_root(dataset)
  path = annotation_path(dataset, root, names[0])
  with open(path) as f:
    lines = f.read().splitlines()
  with open(path, "w") as f:
    f.write("\n".join(lines[:-1]) + "\n")
  with pytest.raises(DatasetError, match="7 boxes") as error:
    load_dataset(dataset, root)
  assert path in str(error.value)


@pytest.mark.parametrize("dataset,label_file", [("lasot", "full_occlusion.txt"), ("lasot", "out_of_view.txt"),
                                                ("got10k_val", "cover.label")])
def test_label_count_must_match(dataset, label_file, fresh_root):
  root, names = fresh_root(dataset)
  path = os.path.join(os.path.dirname(annotation_path(dataset, root, names[0])), label_file)
  with open(path, "w") as f:
    f.write("0,0,0\n" if dataset == "lasot" else "0\n0\n0\n")
  with pytest.raises(DatasetError, match="3 labels for 8 frames") as error:
    load_dataset(dataset, root)
  assert path in str(error.value)


def test_got10k_val_visibility_is_cover_then_absence(fresh_root):
  root, names = fresh_root("got10k_val")
  seq_dir = os.path.join(root, "val", names[0])
  with open(os.path.join(seq_dir, "cover.label"), "w") as f:
    f.write("".join(f"{v}\n" for v in (8, 8, 3, 0, 1, 8, 0, 8)))
  with open(os.path.join(seq_dir, "absence.label"), "w") as f:
    f.write("".join(f"{v}\n" for v in (0, 1, 0, 0, 0, 0, 0, 0)))  # disagrees: cover wins, as the toolkit
  seq = load_dataset("got10k_val", root, sequences=[names[0]])[0]
  np.testing.assert_array_equal(seq.target_visible, [1, 1, 1, 0, 1, 1, 0, 1])
  os.remove(os.path.join(seq_dir, "cover.label"))
  seq = load_dataset("got10k_val", root, sequences=[names[0]])[0]
  np.testing.assert_array_equal(seq.target_visible, [1, 0, 1, 1, 1, 1, 1, 1])
  os.remove(os.path.join(seq_dir, "absence.label"))
  assert load_dataset("got10k_val", root, sequences=[names[0]])[0].target_visible is None


@pytest.mark.parametrize("dataset", ["lasot", "lasot_ext", "nfs", "uav123", "otb"])
def test_partial_root_without_the_synthetic_list_names_the_first_missing_sequence(dataset, fresh_root):
  root, names = fresh_root(dataset)
  os.remove(os.path.join(root, readers.SYNTHETIC_LIST))
  first_missing = [e.name for e in readers.table_entries(dataset)][len(names)]
  with pytest.raises(DatasetError, match="sequences=") as error:
    load_dataset(dataset, root)
  assert repr(first_missing) in str(error.value)
  if dataset.startswith("lasot"):  # LaSOT's length is its annotation's, so a subset reads without the list
    assert [s.name for s in load_dataset(dataset, root, sequences=names)] == names
  else:  # the table's frame range is the real video's, longer than the synthetic one
    with pytest.raises(DatasetError, match="8 boxes for"):
      load_dataset(dataset, root, sequences=names[:1])


def test_comma_tab_space_nan_and_comment_lines_all_parse(fresh_root):
  root, names = fresh_root("uav123")
  path = annotation_path("uav123", root, names[0])
  truth = read_boxes(path)
  separators = [",", "\t", " ", ", ", " \t ", ",", "\t", "  "]
  lines = ["# x y w h"] + [sep.join(f"{v:g}" for v in box) for sep, box in zip(separators, truth)]
  lines[5] = "NaN,NaN,NaN,NaN"  # UAV123 marks frames without the target like this
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n\n")
  seq = load_dataset("uav123", root, sequences=[names[0]])[0]
  expected = truth.copy()
  expected[4] = np.nan
  np.testing.assert_array_equal(seq.ground_truth, expected)


def test_init_box_needs_a_usable_first_box():
  good = readers.Sequence("seq-1", "otb", ("a.jpg",), np.array([[1.0, 2.0, 3.0, 4.0]]), None)
  np.testing.assert_array_equal(good.init_box, [1, 2, 3, 4])
  for box in ([np.nan] * 4, [1.0, 2.0, 0.0, 4.0], [1.0, 2.0, 3.0, -1.0]):
    seq = readers.Sequence("seq-1", "otb", ("a.jpg",), np.array([box]), None)
    with pytest.raises(ValueError, match="seq-1"):
      _ = seq.init_box


def test_tables_hold_the_originals_quirks():
  sizes = {d: len(readers.table_entries(d)) for d in ("lasot", "lasot_ext", "nfs", "uav123", "otb")}
  assert sizes == {"lasot": 280, "lasot_ext": 150, "nfs": 100, "uav123": 123, "otb": 100}
  lasot = {e.name: e for e in readers.table_entries("lasot")}
  assert lasot["rubicCube-1"].frame_dir == "rubicCube/rubicCube-1/img"
  otb = {e.name: e for e in readers.table_entries("otb")}
  assert (otb["Tiger1"].init_omit, otb["Board"].zero_pad) == (5, 5)
  assert (otb["BlurCar1"].first_frame, otb["BlurCar1"].last_frame) == (247, 988)
  assert otb["Jogging_2"].frame_dir == "Jogging/img" and otb["Jogging_2"].annotation == \
      "Jogging/groundtruth_rect.2.txt"
  uav = {e.name: e for e in readers.table_entries("uav123")}
  assert uav["uav_uav1_3"].frame_dir == "data_seq/UAV123/uav1"
  assert (uav["uav_uav1_3"].first_frame, uav["uav_uav1_3"].annotation) == (2473, "anno/UAV123/uav1_3.txt")
  assert uav["uav_group1_1"].last_frame == uav["uav_group1_2"].first_frame == 1333


def test_otb_init_omit_drops_frames_and_rows(tmp_path):
  # Tiger1 is the 91st OTB entry (89th with its own folder); it drops its first 5 frames.
  made = make("otb", tmp_path, num_sequences=89, size=(16, 16))
  assert made[-1] == "Tiger1"
  seq = load_dataset("otb", str(tmp_path), sequences=["Tiger1"])[0]
  assert len(seq.frames) == NUM_FRAMES - 5 and seq.frames[0].endswith("Tiger1/img/0006.jpg")
  full = read_boxes(annotation_path("otb", str(tmp_path), "Tiger1"))
  np.testing.assert_array_equal(seq.ground_truth, full[5:])
  np.testing.assert_array_equal(seq.ground_truth,
                                read_boxes(str(tmp_path / synthetic.FULL_GT_DIR / "Tiger1.txt")))


def test_script_writes_a_readable_benchmark(tmp_path):
  root = tmp_path / "nfs"
  out = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "make_synthetic_dataset.py"),
                        "--layout", "nfs", "--root", str(root), "--num-sequences", "2", "--num-frames", "5",
                        "--size", "40x30", "--seed", "1"], capture_output=True, text=True, check=False)
  assert out.returncode == 0, out.stderr
  assert "wrote 2 nfs sequences" in out.stdout
  seqs = load_dataset("nfs", str(root))
  assert [len(s.frames) for s in seqs] == [5, 5]
  assert cv2.imread(seqs[0].frames[0]).shape == (30, 40, 3)
  shutil.rmtree(root)
