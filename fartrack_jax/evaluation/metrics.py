r"""Tracking benchmark metrics, in numpy: which toolkit each number follows, and where they differ.

Boxes are `[N, 4]` float arrays of `x, y, w, h` (top-left corner, width, height, in pixels), one row per
frame. Every reported score is in percent.

OPE benchmarks (LaSOT, LaSOT_ext, TrackingNet, NFS, UAV123, OTB): AUC, P, NP
-----------------------------------------------------------------------------
These follow pytracking's `lib/test/analysis/extract_results.py` and `plot_results.py` as the original
FARTrack repository ships them (`tracking/analysis_results.py` calls `print_results` with the defaults:
`exclude_invalid_frames=False`, `plot_bin_gap=0.05`), because that is the code that produced the paper's
numbers. Per sequence (`calc_seq_err_robust`):

* A prediction with a NaN or a negative width/height is an error (pytracking raises "Invalid results").
  A prediction of zero width or height in frame i >= 1 is replaced by the (possibly already replaced)
  prediction of frame i-1, unless the ground truth of frame i is NaN.
* The prediction of frame 0 is replaced by the ground truth: frame 0 counts, as a hit.
* IoU and centres use the OTB/pytracking pixel convention: right edge `x + w - 1`, centre
  `x + (w - 1) / 2`. The IoU equals the continuous one up to rounding.
* A frame is *valid* when its ground-truth width and height are both > 0 (a NaN box is not valid) and,
  where the benchmark gives visibility (LaSOT, LaSOT_ext: neither full occlusion nor out of view), the
  target is visible. On an invalid frame the IoU is -1 (a miss at every threshold); the centre error is
  +inf (a miss), except on UAV123, where it is -1 (a hit, as in the UAV123/OTB MATLAB toolkit); the
  normalised centre error is -1 (a hit!) on every benchmark except LaSOT, where frames with the target
  absent get +inf (a miss) for both centre errors. pytracking keys that LaSOT rule on its dataset string
  `'lasot'`; its LaSOT_ext loader says `'lasot_extension_subset'`, so on LaSOT_ext absent frames count as
  NP *hits*. We reproduce that (see "Discrepancies").
* Every frame, valid or not, is in the denominator: curve value = (#frames above / within threshold) / N.
* Success curve: fraction of frames with IoU **>** t for t in `0, 0.05, ..., 1` (21 values); precision:
  centre error **<=** t px for t in `0, 1, ..., 50`; normalised precision: normalised centre error
  **<=** t for t in `0, 0.01, ..., 0.5`, where both centres are first divided by the ground truth's
  (w, h), per axis.

Over the benchmark: the curves are averaged over sequences (each sequence weighs the same), times 100.
AUC = mean of the 21-point success curve; P = precision curve at 20 px (index 20, inclusive);
NP = normalised precision curve at 0.20 (index 20, inclusive). Because the success threshold is strict and
the last threshold is 1.0, **a perfect tracker scores AUC = 100 * 20/21 = 95.24, not 100** (P and NP
reach 100). The same holds in the OTB and LaSOT MATLAB toolkits and in got10k-toolkit's ExperimentOTB;
it is the published convention.

GOT-10k (val, and test when full ground truth is available): AO, SR50, SR75
---------------------------------------------------------------------------
These follow the official got10k-toolkit (`got10k/experiments/got10k.py::ExperimentGOT10k.report` and
`got10k/utils/metrics.py::rect_iou`, as of its latest commit); the test server's code is not public, and
its AO / SR0.50 / SR0.75 are documented with the same definitions:

* IoU is the continuous one, `inter / (union + eps)` clipped to [0, 1], with both boxes first clipped to
  the image (`bound` = the `resolution` of `meta_info.ini`) when the image size is known.
* Frame 0 is dropped; of the rest, only frames with `cover > 0` (target visible; `absence == 1` frames
  have cover 0) count.
* **AO = mean IoU over all counted frames of all sequences concatenated** (frame-weighted), SR_t = fraction
  of those frames with IoU **>** t. The toolkit does *not* average per-sequence means: it concatenates
  every sequence's IoUs (and every repetition's, when several `<seq>_00k.txt` files exist) and takes one
  mean. `got10k_scores(..., average="sequences")` gives the sequence-weighted variant for comparison.
* SR75 is not in the toolkit's `_evaluate` (only SR at 0.5); the leaderboard's SR0.75 is the same rule
  with t = 0.75, which is what we compute.
* A result file whose shape differs from the ground truth fails the toolkit's assert; we raise too.

Discrepancies between the original's pytracking analysis and the official toolkits
-----------------------------------------------------------------------------------
* GOT-10k val: pytracking has no AO; its `got10k` sequences carry no visibility, so its AUC/OP50/OP75
  keep frame 0 (as a hit) and absent frames, average per sequence, and use 21 thresholds. We use the
  toolkit rules above for AO/SR instead.
* LaSOT: the official MATLAB toolkit (HengLan/LaSOT_Evaluation_Toolkit, `calc_seq_err_robust.m` /
  `eval_tracker.m`) removes absent frames but still divides by the full length, i.e. absent frames are
  misses in all three curves -- the same as pytracking. It differs in two corner cases: (1) it treats a
  ground-truth box with x == 0 or y == 0 (all four numbers must be > 0) as invalid, pytracking only
  checks w, h > 0; (2) on a visible frame with an invalid box it counts the centre errors as hits (-1),
  pytracking counts the pixel centre error as a miss (+inf). Its plot code also drops sequences whose
  curve is all zero, which cannot happen once frame 0 is a hit.
* LaSOT_ext: the official toolkit counts absent frames as NP misses; pytracking (and so the paper)
  counts them as NP hits. We follow pytracking; NP on LaSOT_ext is therefore optimistic by up to the
  fraction of absent frames.
* LaSOT (and the OTB-family toolkits): a prediction with NaN or w, h <= 0 is replaced by the previous
  frame's; pytracking raises on NaN / negative sizes and replaces only zero sizes. We raise like pytracking.
* TrackingNet: scored by its server (code not public), with success AUC, precision at 20 px and normalised
  precision at 0.2 as published; locally (synthetic full ground truth only) pytracking's rules apply.
* OTB / NFS / UAV123: pytracking's `calc_seq_err_robust` is a port of OTB's `calcSeqErrRobust.m`; the
  MATLAB version counts the centre error of an invalid ground-truth box as a hit on every benchmark,
  pytracking only on UAV123 (`'uav'`), and the MATLAB version again requires x, y > 0.
* Result length: pytracking truncates longer results (all datasets) and zero-pads shorter ones (all but
  LaSOT, where it raises); the LaSOT toolkit truncates. We raise on any mismatch: a short or long result
  file is a bug in the run that wrote it, and padding with zero boxes silently scores it.
* Numerics: pytracking stores the per-sequence curves as float32; we keep float64 (differences ~1e-5 %).
"""

from __future__ import annotations

import dataclasses
from typing import Literal, Mapping, Sequence as SequenceType

import numpy as np

# 0, 0.05, ..., 1.0, as OTB/LaSOT's `0:0.05:1` and got10k-toolkit's ExperimentOTB. pytracking's
# `torch.arange(0, 1.05, 0.05, dtype=float64)` is 1 ulp above at 0.65 and 0.75 (0.7500000000000001), which
# only matters for an IoU within that ulp.
SUCCESS_THRESHOLDS = np.linspace(0.0, 1.0, 21)
PRECISION_THRESHOLDS = np.arange(51, dtype=np.float64)
NORM_PRECISION_THRESHOLDS = np.arange(51, dtype=np.float64) / 100.0
# Index of 20 px in PRECISION_THRESHOLDS and of 0.20 in NORM_PRECISION_THRESHOLDS (pytracking `[:, 20]`).
PRECISION_INDEX = 20
# got10k-toolkit's success curve for GOT-10k (`np.linspace(0, 1, 101)`).
GOT10K_THRESHOLDS = np.linspace(0.0, 1.0, 101)

GOT10K_DATASETS = ("got10k_val", "got10k_test")
OPE_DATASETS = ("lasot", "lasot_ext", "trackingnet", "nfs", "uav123", "otb")


@dataclasses.dataclass(frozen=True)
class OpeProtocol:
  """How pytracking's `calc_seq_err_robust` treats invalid / absent frames for one dataset string."""
  pytracking_dataset: str
  # Centre error of an invalid frame: -1 (counted within every threshold) if True, +inf if False.
  invalid_centre_error_is_hit: bool
  # Both centre errors of a frame with the target not visible forced to +inf (pytracking's 'lasot').
  absent_centre_errors_are_misses: bool


OPE_PROTOCOLS = {
    "lasot": OpeProtocol("lasot", False, True),
    "lasot_ext": OpeProtocol("lasot_extension_subset", False, False),
    "trackingnet": OpeProtocol("trackingnet", False, False),
    "nfs": OpeProtocol("nfs", False, False),
    "uav123": OpeProtocol("uav", True, False),
    "otb": OpeProtocol("otb", False, False),
}


class ResultError(ValueError):
  """A tracker's result for one sequence is missing, malformed or of the wrong length."""


def metric_kind(dataset: str) -> Literal["got10k", "ope"]:
  if dataset in GOT10K_DATASETS:
    return "got10k"
  if dataset in OPE_DATASETS:
    return "ope"
  raise ValueError(f"Unknown dataset {dataset!r}; expected one of {GOT10K_DATASETS + OPE_DATASETS}.")


def score_names(dataset: str) -> tuple[str, ...]:
  return ("AO", "SR50", "SR75") if metric_kind(dataset) == "got10k" else ("AUC", "P", "NP")


# ----------------------------------------------------------------------------------------------------------
# Per-frame measures.


def iou(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
  """pytracking's `calc_iou_overlap`: IoU of `[N, 4]` xywh boxes with the `x + w - 1` right edge. `[N]`.

  NaN where both boxes have zero area (callers mask those frames)."""
  pred = np.asarray(pred, np.float64)
  gt = np.asarray(gt, np.float64)
  top_left = np.maximum(pred[:, :2], gt[:, :2])
  bottom_right = np.minimum(pred[:, :2] + pred[:, 2:] - 1.0, gt[:, :2] + gt[:, 2:] - 1.0)
  intersection = np.clip(bottom_right - top_left + 1.0, 0.0, None).prod(axis=1)
  union = pred[:, 2:].prod(axis=1) + gt[:, 2:].prod(axis=1) - intersection
  with np.errstate(divide="ignore", invalid="ignore"):
    return intersection / union


def centre_error(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
  """pytracking's `calc_err_center`: distance in pixels between centres `x + (w - 1) / 2`. `[N]`."""
  pred = np.asarray(pred, np.float64)
  gt = np.asarray(gt, np.float64)
  pred_centre = pred[:, :2] + 0.5 * (pred[:, 2:] - 1.0)
  gt_centre = gt[:, :2] + 0.5 * (gt[:, 2:] - 1.0)
  return np.sqrt(((pred_centre - gt_centre) ** 2).sum(axis=1))


def normalised_centre_error(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
  """pytracking's `calc_err_center(normalized=True)`: both centres divided per axis by the ground-truth
  (w, h) before the distance, so a shift of dx along x alone gives |dx| / w_gt. `[N]`."""
  pred = np.asarray(pred, np.float64)
  gt = np.asarray(gt, np.float64)
  with np.errstate(divide="ignore", invalid="ignore"):
    pred_centre = (pred[:, :2] + 0.5 * (pred[:, 2:] - 1.0)) / gt[:, 2:]
    gt_centre = (gt[:, :2] + 0.5 * (gt[:, 2:] - 1.0)) / gt[:, 2:]
    return np.sqrt(((pred_centre - gt_centre) ** 2).sum(axis=1))


def got10k_iou(pred: np.ndarray, gt: np.ndarray, image_size: tuple[float, float] | None = None) -> np.ndarray:
  """got10k-toolkit's `rect_iou`: continuous IoU `inter / (union + eps)` clipped to [0, 1]; with
  `image_size` = (width, height) both boxes are first clipped to the image, as the toolkit does with the
  sequence's `resolution`. `[N]`."""
  pred = np.array(pred, np.float64)
  gt = np.array(gt, np.float64)
  if image_size is not None:
    pred, gt = _clip_to_image(pred, image_size), _clip_to_image(gt, image_size)
  left = np.maximum(pred[:, 0], gt[:, 0])
  top = np.maximum(pred[:, 1], gt[:, 1])
  right = np.minimum(pred[:, 0] + pred[:, 2], gt[:, 0] + gt[:, 2])
  bottom = np.minimum(pred[:, 1] + pred[:, 3], gt[:, 1] + gt[:, 3])
  intersection = np.maximum(right - left, 0.0) * np.maximum(bottom - top, 0.0)
  union = pred[:, 2] * pred[:, 3] + gt[:, 2] * gt[:, 3] - intersection
  return np.clip(intersection / (union + np.finfo(float).eps), 0.0, 1.0)


def _clip_to_image(boxes: np.ndarray, image_size: tuple[float, float]) -> np.ndarray:
  # The toolkit clips x first and then w against the clipped x (so a box hanging off the left edge keeps
  # its width rather than losing the part outside); reproduced as is.
  width, height = image_size
  boxes = boxes.copy()
  boxes[:, 0] = np.clip(boxes[:, 0], 0, width)
  boxes[:, 1] = np.clip(boxes[:, 1], 0, height)
  boxes[:, 2] = np.clip(boxes[:, 2], 0, width - boxes[:, 0])
  boxes[:, 3] = np.clip(boxes[:, 3], 0, height - boxes[:, 1])
  return boxes


# ----------------------------------------------------------------------------------------------------------
# OPE (pytracking) per sequence and over a benchmark.


@dataclasses.dataclass(frozen=True)
class SequenceErrors:
  """Per-frame measures after pytracking's invalid-frame handling. All `[N]`."""
  overlap: np.ndarray
  centre_error: np.ndarray
  normalised_centre_error: np.ndarray
  valid: np.ndarray


def _check_prediction(pred: np.ndarray, gt: np.ndarray, name: str) -> np.ndarray:
  pred = np.asarray(pred, np.float64)
  if pred.ndim != 2 or pred.shape[1] != 4:
    raise ResultError(f"{name}: predictions must be [N, 4] x,y,w,h, got shape {pred.shape}.")
  if pred.shape[0] != gt.shape[0]:
    raise ResultError(f"{name}: {pred.shape[0]} predicted boxes for {gt.shape[0]} ground-truth frames.")
  if np.isnan(pred).any() or (pred[:, 2:] < 0).any():
    bad = np.flatnonzero(np.isnan(pred).any(axis=1) | (pred[:, 2:] < 0).any(axis=1))
    raise ResultError(f"{name}: NaN or negative width/height in predicted frames {bad[:10].tolist()}"
                      f"{' ...' if bad.size > 10 else ''} (pytracking rejects these as invalid results).")
  return pred


def ope_sequence_errors(pred: np.ndarray, gt: np.ndarray, target_visible: np.ndarray | None, dataset: str,
                        name: str = "sequence") -> SequenceErrors:
  """pytracking's `calc_seq_err_robust` for one sequence of `dataset` (one of OPE_DATASETS)."""
  protocol = OPE_PROTOCOLS[dataset]
  gt = np.asarray(gt, np.float64)
  pred = _check_prediction(pred, gt, name).copy()
  gt_is_nan = np.isnan(gt).any(axis=1)
  # Sequential on purpose: a run of empty boxes all take the last non-empty one.
  for i in range(1, pred.shape[0]):
    if (pred[i, 2:] == 0.0).any() and not gt_is_nan[i]:
      pred[i] = pred[i - 1]
  pred[0] = gt[0]

  with np.errstate(invalid="ignore"):
    valid = (gt[:, 2] > 0.0) & (gt[:, 3] > 0.0)
  visible = None
  if target_visible is not None:
    visible = np.asarray(target_visible, bool)
    if visible.shape != valid.shape:
      raise ValueError(f"{name}: {visible.shape[0]} visibility flags for {valid.shape[0]} frames.")
    valid &= visible

  overlap = iou(pred, gt)
  err = centre_error(pred, gt)
  err_norm = normalised_centre_error(pred, gt)
  overlap[~valid] = -1.0
  err[~valid] = -1.0 if protocol.invalid_centre_error_is_hit else np.inf
  err_norm[~valid] = -1.0
  if protocol.absent_centre_errors_are_misses and visible is not None:
    err[~visible] = np.inf
    err_norm[~visible] = np.inf
  if np.isnan(overlap).any():
    raise ValueError(f"{name}: NaN IoU on a valid frame.")
  return SequenceErrors(overlap, err, err_norm, valid)


@dataclasses.dataclass(frozen=True)
class OpeCurves:
  """Success `[21]`, precision `[51]` and normalised-precision `[51]` curves as fractions in [0, 1]."""
  success: np.ndarray
  precision: np.ndarray
  norm_precision: np.ndarray

  def scores(self) -> dict[str, float]:
    """{"AUC", "P", "NP"} in percent (pytracking's `get_auc_curve` / `get_prec_curve`)."""
    return {"AUC": float(self.success.mean() * 100.0),
            "P": float(self.precision[PRECISION_INDEX] * 100.0),
            "NP": float(self.norm_precision[PRECISION_INDEX] * 100.0)}


def ope_sequence_curves(errors: SequenceErrors, exclude_invalid_frames: bool = False) -> OpeCurves:
  """pytracking's per-sequence rows of `ave_success_rate_plot_*`: counts over the thresholds divided by
  the sequence length (or by the number of valid frames with `exclude_invalid_frames`, pytracking's
  non-default option)."""
  length = int(errors.valid.sum()) if exclude_invalid_frames else errors.valid.shape[0]
  if length <= 0:
    raise ValueError("Sequence length zero (no valid frames).")
  success = (errors.overlap[:, None] > SUCCESS_THRESHOLDS[None, :]).sum(axis=0) / length
  precision = (errors.centre_error[:, None] <= PRECISION_THRESHOLDS[None, :]).sum(axis=0) / length
  norm_precision = ((errors.normalised_centre_error[:, None] <= NORM_PRECISION_THRESHOLDS[None, :]).sum(axis=0)
                    / length)
  return OpeCurves(success, precision, norm_precision)


def average_curves(curves: SequenceType[OpeCurves]) -> OpeCurves:
  """Benchmark curves: the mean over sequences, each sequence weighing the same."""
  if not curves:
    raise ValueError("No sequences to average.")
  return OpeCurves(np.mean([c.success for c in curves], axis=0),
                   np.mean([c.precision for c in curves], axis=0),
                   np.mean([c.norm_precision for c in curves], axis=0))


# ----------------------------------------------------------------------------------------------------------
# GOT-10k (got10k-toolkit) per sequence and over a benchmark.


def got10k_sequence_ious(pred: np.ndarray | SequenceType[np.ndarray], gt: np.ndarray,
                         covered: np.ndarray | None = None, image_size: tuple[float, float] | None = None,
                         name: str = "sequence") -> np.ndarray:
  """IoUs of the frames the toolkit counts: frame 0 dropped, then only frames with `covered` (cover > 0).

  `pred` may be one `[N, 4]` array or a list of repetitions (`<seq>_001.txt`, `<seq>_002.txt`, ...), whose
  counted IoUs are concatenated as the toolkit does. Frames whose ground truth is NaN (a test split
  without full annotation) are not counted either. Returns `[M]` (`[R*M]` for R repetitions)."""
  gt = np.asarray(gt, np.float64)
  repetitions = [pred] if isinstance(pred, np.ndarray) else list(pred)
  if not repetitions:
    raise ResultError(f"{name}: no predictions.")
  counted = ~np.isnan(gt[1:]).any(axis=1)
  if covered is not None:
    covered = np.asarray(covered, bool)
    if covered.shape[0] != gt.shape[0]:
      raise ValueError(f"{name}: {covered.shape[0]} cover flags for {gt.shape[0]} frames.")
    counted &= covered[1:]
  ious = []
  for boxes in repetitions:
    boxes = _check_prediction(boxes, gt, name)
    ious.append(got10k_iou(boxes[1:][counted], gt[1:][counted], image_size))
  return np.concatenate(ious)


@dataclasses.dataclass(frozen=True)
class Got10kResult:
  """AO / SR as fractions and the 101-point success curve `[101]`."""
  ao: float
  sr50: float
  sr75: float
  success: np.ndarray

  def scores(self) -> dict[str, float]:
    """{"AO", "SR50", "SR75"} in percent."""
    return {"AO": self.ao * 100.0, "SR50": self.sr50 * 100.0, "SR75": self.sr75 * 100.0}


def got10k_scores(sequence_ious: SequenceType[np.ndarray],
                  average: Literal["frames", "sequences"] = "frames") -> Got10kResult:
  """AO, SR50, SR75 over a benchmark from each sequence's counted IoUs (`got10k_sequence_ious`).

  average="frames" is the toolkit: one mean over all sequences' frames concatenated. average="sequences"
  averages per-sequence means instead (not what the toolkit or server computes; for comparison only)."""
  sequence_ious = [np.asarray(s, np.float64) for s in sequence_ious]
  if not sequence_ious:
    raise ValueError("No sequences to score.")

  def summary(ious: np.ndarray) -> tuple[float, float, float, np.ndarray]:
    if ious.size == 0:
      raise ValueError("No counted frames (all frames after the first are absent).")
    return (float(ious.mean()), float((ious > 0.5).mean()), float((ious > 0.75).mean()),
            (ious[:, None] > GOT10K_THRESHOLDS[None, :]).mean(axis=0))

  if average == "frames":
    return Got10kResult(*summary(np.concatenate(sequence_ious)))
  if average == "sequences":
    per_sequence = [summary(s) for s in sequence_ious]
    return Got10kResult(*(float(np.mean([p[k] for p in per_sequence])) for k in range(3)),
                        np.mean([p[3] for p in per_sequence], axis=0))
  raise ValueError(f"average must be 'frames' or 'sequences', got {average!r}.")


# ----------------------------------------------------------------------------------------------------------
# A whole benchmark from in-memory predictions.


def evaluate(dataset: str, predictions: Mapping[str, np.ndarray | SequenceType[np.ndarray]], sequences,
             image_sizes: Mapping[str, tuple[float, float]] | None = None) -> dict[str, float]:
  """Scores of one tracker on `dataset`: {"AO", "SR50", "SR75"} for GOT-10k, else {"AUC", "P", "NP"}.

  predictions: {sequence name: [N, 4] boxes} (for GOT-10k also a list of repetitions).
  sequences: objects with `.name`, `.ground_truth` `[N, 4]` and `.target_visible` `[N]` bool or None
    (`data_pipelines.evaluation.readers.Sequence`); for GOT-10k `target_visible` is the cover > 0 flag.
  image_sizes: {sequence name: (width, height)} for GOT-10k's clipping to the image, where known."""
  return evaluate_detailed(dataset, predictions, sequences, image_sizes).scores()


def evaluate_detailed(dataset: str, predictions: Mapping[str, np.ndarray | SequenceType[np.ndarray]], sequences,
                      image_sizes: Mapping[str, tuple[float, float]] | None = None) -> OpeCurves | Got10kResult:
  """As `evaluate`, returning the curves too (for plots)."""
  kind = metric_kind(dataset)
  missing = [s.name for s in sequences if s.name not in predictions]
  if missing:
    raise ResultError(f"No predictions for {len(missing)} of {len(sequences)} {dataset} sequences, e.g. "
                      f"{missing[:5]}.")
  if kind == "got10k":
    image_sizes = image_sizes or {}
    return got10k_scores([
        got10k_sequence_ious(predictions[s.name], s.ground_truth, s.target_visible,
                             image_sizes.get(s.name), name=s.name) for s in sequences])
  curves = []
  for s in sequences:
    pred = predictions[s.name]
    if not isinstance(pred, np.ndarray):
      raise ResultError(f"{s.name}: OPE benchmarks take one [N, 4] array per sequence.")
    curves.append(ope_sequence_curves(ope_sequence_errors(pred, s.ground_truth, s.target_visible, dataset,
                                                          name=s.name)))
  return average_curves(curves)
