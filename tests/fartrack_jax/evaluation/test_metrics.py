"""Benchmark metrics and result-folder analysis against hand-computed numbers.

Every expected value is worked out in the test from the boxes it builds (counts of frames over thresholds),
never by calling the code under test. Tolerance 1e-9 (percent): float64 sums of a handful of terms, and
got10k-toolkit's `eps` in the IoU denominator (2e-16 relative).
"""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fartrack_jax.evaluation import analysis
from fartrack_jax.evaluation import metrics
from tests.conftest import ROOT

TOL = 1e-9
BOX = [0.0, 0.0, 10.0, 10.0]
# The same box shifted right by half its width: intersection 5 x 10 = 50, union 100 + 100 - 50 = 150.
HALF_SHIFTED = [5.0, 0.0, 10.0, 10.0]
IOU_HALF_SHIFTED = 50.0 / 150.0


@dataclasses.dataclass(frozen=True)
class Seq:
  name: str
  ground_truth: np.ndarray
  target_visible: np.ndarray | None = None


def boxes(*rows):
  return np.array(rows, dtype=np.float64)


# ----------------------------------------------------------------------------------------------------------
# Per-frame measures.


def test_iou_of_box_shifted_by_half_its_width_is_one_third():
  assert metrics.iou(boxes(HALF_SHIFTED), boxes(BOX))[0] == pytest.approx(1.0 / 3.0, abs=1e-15)
  assert metrics.got10k_iou(boxes(HALF_SHIFTED), boxes(BOX))[0] == pytest.approx(1.0 / 3.0, abs=1e-15)


def test_iou_of_disjoint_and_identical_boxes():
  pred = boxes([20, 20, 10, 10], BOX)
  np.testing.assert_array_equal(metrics.iou(pred, boxes(BOX, BOX)), [0.0, 1.0])


def test_centre_errors_of_a_shift():
  # Shift (3, 4) px: 5 px; normalised by the ground truth's (w, h) = (30, 8) per axis: sqrt(0.1^2 + 0.5^2).
  gt = boxes([10, 10, 30, 8])
  pred = boxes([13, 14, 30, 8])
  assert metrics.centre_error(pred, gt)[0] == pytest.approx(5.0, abs=1e-12)
  assert metrics.normalised_centre_error(pred, gt)[0] == pytest.approx(np.sqrt(0.01 + 0.25), abs=1e-12)


def test_got10k_iou_clips_boxes_to_the_image_like_the_toolkit():
  # In a 10 px wide image the half-shifted box [5, 15) is clipped to [5, 10): intersection 50, union 100.
  pred, gt = boxes(HALF_SHIFTED), boxes(BOX)
  assert metrics.got10k_iou(pred, gt, image_size=(10, 100))[0] == pytest.approx(0.5, abs=1e-12)
  assert metrics.got10k_iou(pred, gt, image_size=None)[0] == pytest.approx(1.0 / 3.0, abs=1e-12)


# ----------------------------------------------------------------------------------------------------------
# OPE (pytracking) scores.


def ope(dataset, sequences, predictions):
  return metrics.evaluate(dataset, predictions, sequences)


def test_perfect_tracker_ope_scores():
  # IoU 1 is > every threshold but the last (1.0): 20 of 21 -> AUC = 100 * 20 / 21 in pytracking, OTB and
  # LaSOT alike. Centre errors 0 -> P = NP = 100.
  gt = boxes(BOX, [2, 3, 10, 12], [4, 4, 8, 8])
  scores = ope("otb", [Seq("a", gt)], {"a": gt.copy()})
  assert scores["AUC"] == pytest.approx(100.0 * 20 / 21, abs=TOL)
  assert scores["P"] == pytest.approx(100.0, abs=TOL)
  assert scores["NP"] == pytest.approx(100.0, abs=TOL)


def test_half_width_shift_gives_hand_computed_auc_precision_and_norm_precision():
  # Frame 0 is replaced by the ground truth (IoU 1: above 20 thresholds); frames 1..3 have IoU 1/3,
  # above the 7 thresholds 0, 0.05, ..., 0.30. Centre error 5 px (within 20) -> P = 100; normalised
  # 5 / 10 = 0.5 > 0.2 -> NP counts frame 0 only.
  gt = boxes(BOX, BOX, BOX, BOX)
  pred = boxes([90, 90, 3, 3], HALF_SHIFTED, HALF_SHIFTED, HALF_SHIFTED)
  scores = ope("nfs", [Seq("a", gt)], {"a": pred})
  assert scores["AUC"] == pytest.approx(100.0 * (1 * 20 + 3 * 7) / (4 * 21), abs=TOL)
  assert scores["P"] == pytest.approx(100.0, abs=TOL)
  assert scores["NP"] == pytest.approx(100.0 * 1 / 4, abs=TOL)


def test_ope_averages_curves_over_sequences_not_frames():
  # Sequence a (2 frames, all hits) and b (4 frames, frame 0 a hit then three IoU-0 misses): success at a
  # low threshold is (1 + 1/4) / 2 per sequence, whereas frame weighting would give 3 / 6.
  gt_a, gt_b = boxes(BOX, BOX), boxes(BOX, BOX, BOX, BOX)
  far = [50, 50, 10, 10]
  scores = ope("otb", [Seq("a", gt_a), Seq("b", gt_b)], {"a": gt_a.copy(), "b": boxes(BOX, far, far, far)})
  assert scores["AUC"] == pytest.approx(100.0 * (20 / 21 + 20 / (4 * 21)) / 2, abs=TOL)
  assert scores["P"] == pytest.approx(100.0 * (1 + 1 / 4) / 2, abs=TOL)


def test_precision_counts_an_error_of_exactly_20_px():
  # pytracking counts `err <= threshold`: 20 px is within P@20, 21 px is not. Frame 0 is a hit.
  gt = boxes(BOX, BOX, BOX)
  pred = boxes(BOX, [20, 0, 10, 10], [21, 0, 10, 10])
  errors = metrics.ope_sequence_errors(pred, gt, None, "otb")
  np.testing.assert_array_equal(errors.centre_error, [0.0, 20.0, 21.0])
  curves = metrics.ope_sequence_curves(errors)
  assert curves.precision[20] == pytest.approx(2 / 3, abs=1e-15)
  assert curves.precision[19] == pytest.approx(1 / 3, abs=1e-15)
  assert curves.precision[21] == pytest.approx(3 / 3, abs=1e-15)
  assert ope("otb", [Seq("a", gt)], {"a": pred})["P"] == pytest.approx(100.0 * 2 / 3, abs=TOL)


def test_norm_precision_hand_case():
  # Frame 1: 200 x 200 target, 30 px shift: a P@20 miss but 30 / 200 = 0.15 <= 0.2, an NP hit.
  # Frame 2: 100 x 50 target, (15, 15) px shift: 21.2 px (P miss), sqrt(0.15^2 + 0.3^2) = 0.335 (NP miss).
  gt = boxes(BOX, [0, 0, 200, 200], [0, 0, 100, 50])
  pred = boxes(BOX, [30, 0, 200, 200], [15, 15, 100, 50])
  scores = ope("trackingnet", [Seq("a", gt)], {"a": pred})
  assert scores["NP"] == pytest.approx(100.0 * 2 / 3, abs=TOL)
  assert scores["P"] == pytest.approx(100.0 * 1 / 3, abs=TOL)


def test_first_frame_counts_as_ground_truth_in_ope():
  gt = boxes(BOX, BOX)
  scores = ope("otb", [Seq("a", gt)], {"a": boxes([500, 500, 1, 1], BOX)})
  assert scores["AUC"] == pytest.approx(100.0 * 20 / 21, abs=TOL)
  assert scores["P"] == pytest.approx(100.0, abs=TOL)


def test_zero_size_prediction_takes_the_previous_frames_box():
  # pytracking replaces a w == 0 or h == 0 prediction by the previous one (here the perfect frame 1).
  gt = boxes(BOX, BOX, BOX)
  scores = ope("otb", [Seq("a", gt)], {"a": boxes(BOX, BOX, [70, 70, 0, 5])})
  assert scores["AUC"] == pytest.approx(100.0 * 20 / 21, abs=TOL)


def _perfect_with_frame_2_invalid(dataset):
  gt = boxes(BOX, BOX, BOX, BOX)
  pred = gt.copy()
  visible = None
  if dataset in ("lasot", "lasot_ext"):
    visible = np.array([True, True, False, True])
  elif dataset == "uav123":
    gt[2] = np.nan
  else:
    gt[2, 2:] = 0.0
  return ope(dataset, [Seq("a", gt, visible)], {"a": pred})


@pytest.mark.parametrize("dataset, precision_hits, norm_precision_hits", [
    ("lasot", 3, 3),      # absent -> both centre errors +inf (LaSOT toolkit: absent frames are misses)
    ("lasot_ext", 3, 4),  # pytracking keys the NP rule on 'lasot' only: absent is an NP hit on LaSOT_ext
    ("uav123", 4, 4),     # NaN ground truth -> centre error -1, a hit (UAV123 toolkit)
    ("otb", 3, 4),        # invalid box -> centre error +inf, normalised -1
])
def test_invalid_and_absent_frames_stay_in_the_denominator(dataset, precision_hits, norm_precision_hits):
  # 4 frames, perfect prediction, frame 2 absent / without a box: its IoU is -1, a miss at every
  # threshold, and the curves still divide by 4.
  scores = _perfect_with_frame_2_invalid(dataset)
  assert scores["AUC"] == pytest.approx(100.0 * 3 * 20 / (4 * 21), abs=TOL)
  assert scores["P"] == pytest.approx(100.0 * precision_hits / 4, abs=TOL)
  assert scores["NP"] == pytest.approx(100.0 * norm_precision_hits / 4, abs=TOL)


def test_exclude_invalid_frames_divides_by_valid_frames():
  gt = boxes(BOX, BOX, BOX, BOX)
  errors = metrics.ope_sequence_errors(gt.copy(), gt, np.array([True, True, False, True]), "lasot")
  curves = metrics.ope_sequence_curves(errors, exclude_invalid_frames=True)
  assert curves.success.mean() == pytest.approx(20 / 21, abs=1e-15)


def test_nan_or_negative_prediction_is_an_error_naming_the_sequence():
  gt = boxes(BOX, BOX)
  with pytest.raises(metrics.ResultError, match="seq-7"):
    ope("otb", [Seq("seq-7", gt)], {"seq-7": boxes(BOX, [np.nan, 0, 1, 1])})
  with pytest.raises(metrics.ResultError, match="seq-7"):
    ope("otb", [Seq("seq-7", gt)], {"seq-7": boxes(BOX, [0, 0, -1, 1])})


def test_wrong_number_of_boxes_is_an_error_naming_the_sequence():
  gt = boxes(BOX, BOX, BOX)
  with pytest.raises(metrics.ResultError, match=r"seq-3: 2 predicted boxes for 3"):
    ope("lasot", [Seq("seq-3", gt)], {"seq-3": boxes(BOX, BOX)})


# ----------------------------------------------------------------------------------------------------------
# GOT-10k (got10k-toolkit) scores.


def test_perfect_tracker_got10k_scores():
  gt = boxes(BOX, [2, 3, 10, 12], [4, 4, 8, 8])
  scores = metrics.evaluate("got10k_val", {"a": gt.copy()}, [Seq("a", gt)])
  assert scores == pytest.approx({"AO": 100.0, "SR50": 100.0, "SR75": 100.0}, abs=TOL)


def test_got10k_drops_frame_0_and_uncovered_frames_and_weighs_frames():
  # a: frames 1..3 at IoU 1/3 (frame 0 is a miss but not counted). b: frame 1 perfect, frame 2 not
  # covered (its miss is not counted). Counted IoUs: 1/3, 1/3, 1/3, 1 -> AO = (3 * 1/3 + 1) / 4 = 50;
  # only the 1 is above 0.5 and 0.75. Per-sequence averaging would give (1/3 + 1) / 2 instead.
  far = [50, 50, 10, 10]
  seq_a = Seq("a", boxes(BOX, BOX, BOX, BOX), np.array([True, True, True, True]))
  seq_b = Seq("b", boxes(BOX, BOX, BOX), np.array([True, True, False]))
  preds = {"a": boxes(far, HALF_SHIFTED, HALF_SHIFTED, HALF_SHIFTED), "b": boxes(far, BOX, far)}
  scores = metrics.evaluate("got10k_val", preds, [seq_a, seq_b])
  expected_ao = (3 * IOU_HALF_SHIFTED + 1.0) / 4
  assert scores["AO"] == pytest.approx(100.0 * expected_ao, abs=TOL)
  assert scores["SR50"] == pytest.approx(100.0 * 1 / 4, abs=TOL)
  assert scores["SR75"] == pytest.approx(100.0 * 1 / 4, abs=TOL)

  ious = [metrics.got10k_sequence_ious(preds[s.name], s.ground_truth, s.target_visible) for s in (seq_a, seq_b)]
  by_sequence = metrics.got10k_scores(ious, average="sequences").scores()
  assert by_sequence["AO"] == pytest.approx(100.0 * (IOU_HALF_SHIFTED + 1.0) / 2, abs=TOL)
  assert by_sequence["SR50"] == pytest.approx(100.0 * (0 + 1) / 2, abs=TOL)


def test_got10k_success_threshold_is_strict():
  # IoU exactly 0.5 is not a success at 0.5 (toolkit: `ious > 0.5`). [0,0,10,10] vs [0,0,10,20]: 100/200.
  gt = boxes(BOX, BOX)
  scores = metrics.evaluate("got10k_val", {"a": boxes(BOX, [0, 0, 10, 20])}, [Seq("a", gt)])
  assert scores["SR50"] == pytest.approx(0.0, abs=TOL)
  assert scores["AO"] == pytest.approx(50.0, abs=1e-9)


def test_got10k_repetitions_are_concatenated():
  gt = boxes(BOX, BOX, BOX)
  runs = [boxes(BOX, BOX, BOX), boxes(BOX, HALF_SHIFTED, HALF_SHIFTED)]
  scores = metrics.evaluate("got10k_val", {"a": runs}, [Seq("a", gt)])
  assert scores["AO"] == pytest.approx(100.0 * (2 * 1.0 + 2 * IOU_HALF_SHIFTED) / 4, abs=TOL)


def test_missing_sequence_prediction_is_an_error_naming_it():
  with pytest.raises(metrics.ResultError, match="'b'"):
    metrics.evaluate("otb", {"a": boxes(BOX)}, [Seq("a", boxes(BOX)), Seq("b", boxes(BOX))])


# ----------------------------------------------------------------------------------------------------------
# Result folders, analyze(), the script.

LASOT_NAMES = ("airplane-1", "airplane-9")


def write(path, text):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    f.write(text)


def box_lines(rows, sep=","):
  return "".join(sep.join(f"{v:g}" for v in row) + "\n" for row in rows)


def make_lasot_root(root, num_frames=4):
  """LaSOT annotations only (no frames): every frame BOX, frame 2 of airplane-9 fully occluded."""
  write(os.path.join(root, "_synthetic_sequences.txt"), "".join(f"{n} {num_frames}\n" for n in LASOT_NAMES))
  for name in LASOT_NAMES:
    seq_dir = os.path.join(root, "airplane", name)
    write(os.path.join(seq_dir, "groundtruth.txt"), box_lines([BOX] * num_frames))
    occluded = [0] * num_frames
    if name == "airplane-9":
      occluded[2] = 1
    write(os.path.join(seq_dir, "full_occlusion.txt"), ",".join(map(str, occluded)) + "\n")
    write(os.path.join(seq_dir, "out_of_view.txt"), ",".join(["0"] * num_frames) + "\n")
  return root


def make_results(results_dir, rows_by_seq, sep=","):
  for name, rows in rows_by_seq.items():
    write(os.path.join(results_dir, f"{name}.txt"), box_lines(rows, sep))
  return results_dir


def two_lasot_trackers(tmp_path):
  root = make_lasot_root(str(tmp_path / "lasot"))
  perfect = make_results(str(tmp_path / "res" / "perfect"), {n: [BOX] * 4 for n in LASOT_NAMES}, sep="\t")
  shifted = make_results(str(tmp_path / "res" / "shifted"),
                         {n: [BOX] + [HALF_SHIFTED] * 3 for n in LASOT_NAMES}, sep=" ")
  return root, perfect, shifted


def expected_lasot_scores():
  # airplane-1: 4 valid frames; airplane-9: frame 2 absent (IoU -1, both centre errors +inf).
  perfect = {"AUC": 100.0 * (4 * 20 / (4 * 21) + 3 * 20 / (4 * 21)) / 2,
             "P": 100.0 * (4 / 4 + 3 / 4) / 2, "NP": 100.0 * (4 / 4 + 3 / 4) / 2}
  # Frame 0 a hit (20 thresholds); each valid shifted frame IoU 1/3 (7 thresholds), 5 px (P hit),
  # normalised 0.5 (NP miss).
  shifted = {"AUC": 100.0 * ((20 + 3 * 7) / (4 * 21) + (20 + 2 * 7) / (4 * 21)) / 2,
             "P": 100.0 * (4 / 4 + 3 / 4) / 2, "NP": 100.0 * (1 / 4 + 1 / 4) / 2}
  return {"perfect": perfect, "shifted": shifted}


def test_analyze_two_result_dirs_writes_the_json_structure(tmp_path):
  root, perfect, shifted = two_lasot_trackers(tmp_path)
  json_path = str(tmp_path / "out" / "scores.json")
  scores = analysis.analyze("lasot", root, [perfect, shifted], json_path=json_path)
  with open(json_path) as f:
    written = json.load(f)
  assert list(written) == ["perfect", "shifted"]
  for tracker, expected in expected_lasot_scores().items():
    assert set(written[tracker]) == {"AUC", "P", "NP"}
    assert written[tracker] == pytest.approx(expected, abs=TOL)
  assert scores == written
  assert not [f for f in os.listdir(tmp_path / "out") if f != "scores.json"]  # no temporary left


def test_analyze_names_override_folder_names(tmp_path):
  root, perfect, shifted = two_lasot_trackers(tmp_path)
  scores = analysis.analyze("lasot", root, [perfect, shifted], names=["A", "B"])
  assert list(scores) == ["A", "B"]


def test_analyze_writes_non_empty_png_plots(tmp_path):
  root, perfect, shifted = two_lasot_trackers(tmp_path)
  plots = tmp_path / "plots"
  analysis.analyze("lasot", root, [perfect, shifted], plots_dir=str(plots))
  for name in ("success_plot.png", "precision_plot.png", "norm_precision_plot.png"):
    data = (plots / name).read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000, name


def test_missing_result_file_is_an_error_naming_the_file(tmp_path):
  root, perfect, _ = two_lasot_trackers(tmp_path)
  os.remove(os.path.join(perfect, "airplane-9.txt"))
  with pytest.raises(metrics.ResultError, match=r"airplane-9.*" + os.path.join(perfect, "airplane-9.txt")):
    analysis.analyze("lasot", root, [perfect])


def test_result_file_with_wrong_line_count_is_an_error_naming_the_file(tmp_path):
  root, perfect, _ = two_lasot_trackers(tmp_path)
  make_results(perfect, {"airplane-1": [BOX] * 5})
  with pytest.raises(metrics.ResultError, match=r"airplane-1: result file .*airplane-1.txt has 5 boxes.* 4 frames"):
    analysis.analyze("lasot", root, [perfect])


def make_got10k_root(root, split="val", with_full_gt=False):
  """GOT-10k annotations (plus empty frame files in the test split): sequence v1 of 4 frames with frame 2
  not covered, v2 of 3 frames."""
  names = {"v1": 4, "v2": 3}
  write(os.path.join(root, split, "list.txt"), "".join(f"{n}\n" for n in names))
  for name, n in names.items():
    seq_dir = os.path.join(root, split, name)
    if split == "val":
      write(os.path.join(seq_dir, "groundtruth.txt"), box_lines([BOX] * n))
      cover = [8] * n
      if name == "v1":
        cover[2] = 0
      write(os.path.join(seq_dir, "cover.label"), "".join(f"{c}\n" for c in cover))
      write(os.path.join(seq_dir, "absence.label"), "".join(f"{int(c == 0)}\n" for c in cover))
    else:
      write(os.path.join(seq_dir, "groundtruth.txt"), box_lines([BOX]))
      for i in range(1, n + 1):  # the test split's length is its frame count (files left empty)
        write(os.path.join(seq_dir, f"{i:08d}.jpg"), "")
    if with_full_gt:
      write(os.path.join(root, "_synthetic_full_gt", f"{name}.txt"), box_lines([BOX] * n))
  return root


def test_analyze_got10k_reads_both_result_layouts(tmp_path):
  root = make_got10k_root(str(tmp_path / "got"))
  res = str(tmp_path / "res" / "mixed")
  far = [50, 50, 10, 10]
  # Flat layout for v1: frame 1 at IoU 1/3, frame 2 uncovered (ignored), frame 3 perfect.
  make_results(res, {"v1": [far, HALF_SHIFTED, far, BOX]})
  # Official layout for v2: frames 1, 2 at IoU 1/3.
  write(os.path.join(res, "v2", "v2_001.txt"), box_lines([far, HALF_SHIFTED, HALF_SHIFTED]))
  json_path = str(tmp_path / "got.json")
  scores = analysis.analyze("got10k_val", root, [res], json_path=json_path)
  with open(json_path) as f:
    assert json.load(f) == scores
  expected = {"AO": 100.0 * (3 * IOU_HALF_SHIFTED + 1.0) / 4, "SR50": 100.0 * 1 / 4, "SR75": 100.0 * 1 / 4}
  assert scores == {"mixed": pytest.approx(expected, abs=TOL)}


def test_got10k_test_without_full_ground_truth_points_to_the_server(tmp_path):
  root = make_got10k_root(str(tmp_path / "got"), split="test")
  res = make_results(str(tmp_path / "res" / "t"), {"v1": [BOX] * 4, "v2": [BOX] * 3})
  with pytest.raises(FileNotFoundError, match="evaluation server"):
    analysis.analyze("got10k_test", root, [res])


def test_got10k_test_with_synthetic_full_ground_truth_is_scored(tmp_path):
  root = make_got10k_root(str(tmp_path / "got"), split="test", with_full_gt=True)
  res = make_results(str(tmp_path / "res" / "t"), {"v1": [BOX] * 4, "v2": [BOX] + [HALF_SHIFTED] * 2})
  scores = analysis.analyze("got10k_test", root, [res])["t"]
  # No cover labels in the test split: frames 1..3 of v1 (IoU 1) and 1..2 of v2 (IoU 1/3).
  assert scores["AO"] == pytest.approx(100.0 * (3 + 2 * IOU_HALF_SHIFTED) / 5, abs=TOL)
  assert scores["SR50"] == pytest.approx(100.0 * 3 / 5, abs=TOL)


def test_analyze_script_prints_table_and_writes_json(tmp_path):
  root, perfect, shifted = two_lasot_trackers(tmp_path)
  json_path = str(tmp_path / "script.json")
  out = subprocess.run(
      [sys.executable, os.path.join(ROOT, "scripts", "analyze.py"), "--dataset", "lasot", "--data-root", root,
       "--results-dir", perfect, "--results-dir", shifted, "--names", "P1,S1", "--json", json_path],
      capture_output=True, text=True, check=True, timeout=120)
  assert "P1" in out.stdout and "S1" in out.stdout and "AUC" in out.stdout
  with open(json_path) as f:
    written = json.load(f)
  expected = expected_lasot_scores()
  assert written == {"P1": pytest.approx(expected["perfect"], abs=TOL),
                     "S1": pytest.approx(expected["shifted"], abs=TOL)}


def test_got10k_does_not_count_frames_without_ground_truth():
  # A NaN row (no box) is not counted, whatever the prediction: counted IoUs are frames 1 and 3.
  gt = boxes(BOX, BOX, [np.nan] * 4, BOX)
  preds = {"a": boxes(BOX, BOX, [50, 50, 10, 10], HALF_SHIFTED)}
  scores = metrics.evaluate("got10k_test", preds, [Seq("a", gt)])
  assert scores["AO"] == pytest.approx(100.0 * (1.0 + IOU_HALF_SHIFTED) / 2, abs=TOL)


@pytest.mark.parametrize("layout", ["got10k", "lasot", "trackingnet", "uav123", "otb"])
def test_load_annotations_matches_the_reader_without_reading_frames(tmp_path, layout):
  from data_pipelines import synthetic  # pylint: disable=g-import-not-at-top
  from data_pipelines.evaluation import readers  # pylint: disable=g-import-not-at-top
  root = str(tmp_path / layout)
  synthetic.make_synthetic_dataset(layout, root, num_sequences=2, num_frames=6, size=(32, 24))
  full_gt = os.path.join(root, analysis.SYNTHETIC_FULL_GT_DIR)
  for dataset in (("got10k_val", "got10k_test") if layout == "got10k" else (layout,)):
    expected = readers.load_dataset(dataset, root)
    got = analysis.load_annotations(dataset, root)
    assert [s.name for s in got] == [s.name for s in expected]
    for ours, theirs in zip(got, expected):
      if dataset in ("got10k_test", "trackingnet"):
        np.testing.assert_array_equal(ours.ground_truth,
                                      np.loadtxt(os.path.join(full_gt, f"{ours.name}.txt"), delimiter=","))
      else:
        np.testing.assert_array_equal(ours.ground_truth, theirs.ground_truth)
      if theirs.target_visible is None:
        assert ours.target_visible is None
      else:
        np.testing.assert_array_equal(ours.target_visible, theirs.target_visible)
