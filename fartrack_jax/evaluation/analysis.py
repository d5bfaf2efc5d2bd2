"""Scores trackers' result folders on a benchmark: a table, a JSON file and success / precision plots.

A result folder is what the evaluator writes (pytracking's layout): `<results_dir>/<seq>.txt`, one
`x,y,w,h` line per frame (commas, tabs or spaces). For GOT-10k the official toolkit's layout
`<results_dir>/<seq>/<seq>_001.txt` (and `_002`, `_003` ... for repeated runs, scored together as the
toolkit does) is read too. Only the annotation files under the data root are read, never the frames.
Which toolkit each number follows is in `metrics`'s docstring.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
from typing import Sequence as SequenceType

import numpy as np

from data_pipelines import annotation_files
from data_pipelines.evaluation import readers
from fartrack_jax import storage
from fartrack_jax.evaluation import metrics

# Our synthetic benchmark generator writes the full ground truth of the splits whose annotations are
# withheld (GOT-10k test, TrackingNet test) here, one `<seq>.txt` per sequence.
SYNTHETIC_FULL_GT_DIR = "_synthetic_full_gt"

_SERVER = {
    "got10k_test": "the GOT-10k evaluation server (http://got-10k.aitestunion.com/, upload a zip of "
                   "<seq>/<seq>_001.txt files)",
    "trackingnet": "the TrackingNet evaluation server (https://eval.ai/web/challenges/challenge-page/1805, "
                   "upload a zip of <seq>.txt files)",
}


# ----------------------------------------------------------------------------------------------------------
# Annotations.
#
def load_annotations(dataset: str, data_root: str, sequences: SequenceType[str] | None = None) -> list:
  """The benchmark's sequences with ground truth and visibility, from the annotation files alone
  (`readers.load_dataset(check_frames=False)`: no frame needs to exist).

  For the splits with withheld annotations (got10k_test, trackingnet) the ground truth comes from
  `<data_root>/_synthetic_full_gt/<seq>.txt` when that folder exists; otherwise this raises, pointing to
  the evaluation server."""
  metrics.metric_kind(dataset)
  root = os.path.abspath(os.path.expanduser(data_root))
  if not os.path.isdir(root):
    raise FileNotFoundError(f"{dataset} data root {root} does not exist.")
  if dataset in _SERVER and not os.path.isdir(os.path.join(root, SYNTHETIC_FULL_GT_DIR)):
    raise FileNotFoundError(
        f"{dataset} has no public ground truth beyond the first frame, so it cannot be scored locally: "
        f"submit the results to {_SERVER[dataset]}. (Synthetic benchmarks made by our generator carry "
        f"their full ground truth in {os.path.join(root, SYNTHETIC_FULL_GT_DIR)}/<seq>.txt; not there.)")
  seqs = readers.load_dataset(dataset, root, sequences, check_frames=False)
  if dataset in _SERVER:
    seqs = [dataclasses.replace(s, ground_truth=_synthetic_ground_truth(root, s)) for s in seqs]
  return seqs


def _synthetic_ground_truth(root: str, seq) -> np.ndarray:
  path = os.path.join(root, SYNTHETIC_FULL_GT_DIR, f"{seq.name}.txt")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{seq.name}: no synthetic full ground truth {path}.")
  gt = annotation_files.read_boxes(path)
  if not np.allclose(gt[0], seq.ground_truth[0]):
    raise ValueError(f"{path}: first box {gt[0].tolist()} differs from the annotation's "
                     f"{seq.ground_truth[0].tolist()}.")
  return gt


def got10k_image_sizes(dataset: str, data_root: str,
                       names: SequenceType[str]) -> dict[str, tuple[float, float]]:
  """{sequence name: (width, height)} from each GOT-10k sequence folder's `meta_info.ini`
  (`resolution: (1280, 720)`), for the toolkit's clipping of boxes to the image; sequences without one
  are left out (their boxes are not clipped)."""
  split_dir = os.path.join(os.path.abspath(os.path.expanduser(data_root)), dataset.split("_")[1])
  sizes = {}
  for name in names:
    path = os.path.join(split_dir, name, "meta_info.ini")
    if not os.path.isfile(path):
      continue
    with open(path, encoding="utf-8", errors="replace") as f:
      match = re.search(r"^\s*resolution\s*:\s*\(\s*(\d+(?:\.\d*)?)\s*,\s*(\d+(?:\.\d*)?)\s*\)", f.read(),
                        re.MULTILINE)
    if match:
      sizes[name] = (float(match.group(1)), float(match.group(2)))
  return sizes


# ----------------------------------------------------------------------------------------------------------
# Results.


def result_files(results_dir: str, seq_name: str, dataset: str) -> list[str]:
  """The result file(s) of one sequence: `<dir>/<seq>.txt`, or for GOT-10k `<dir>/<seq>/<seq>_NNN.txt`
  (`results_dir` may be a bucket). Raises `metrics.ResultError` naming the paths looked for."""
  folder = storage.as_path(results_dir)
  flat = folder / f"{seq_name}.txt"
  if flat.is_file():
    return [os.fspath(flat)]
  if metrics.metric_kind(dataset) == "got10k":
    pattern = f"{seq_name}_[0-9]*.txt"
    repeats = folder / seq_name
    official = sorted(os.fspath(p) for p in (repeats.glob(pattern) if repeats.is_dir() else ())
                      if re.fullmatch(r"\d+", _repetition_id(p.name, seq_name)))
    if official:
      return official
    raise metrics.ResultError(f"{seq_name}: result file not found: {flat} (nor {repeats / pattern}).")
  raise metrics.ResultError(f"{seq_name}: result file not found: {flat}.")


def _repetition_id(file_name: str, seq_name: str) -> str:
  return file_name[len(seq_name) + 1:-len(".txt")]


def load_result(path: str, num_frames: int, seq_name: str) -> np.ndarray:
  """One result file as `[N, 4]`, checked against the sequence's frame count; errors name the file."""
  try:
    boxes = annotation_files.read_boxes(path, storage.as_path(path).read_text())
  except (ValueError, UnicodeDecodeError) as e:
    raise metrics.ResultError(f"{seq_name}: unreadable result file: {e}") from None
  if boxes.shape[0] != num_frames:
    raise metrics.ResultError(f"{seq_name}: result file {path} has {boxes.shape[0]} boxes, the sequence has "
                              f"{num_frames} frames (one x,y,w,h line per frame expected).")
  return boxes


def load_results(results_dir: str, seqs, dataset: str) -> dict[str, np.ndarray | list[np.ndarray]]:
  """{sequence name: [N, 4]} (GOT-10k: a list of repetitions) for every sequence of `seqs`."""
  if not storage.as_path(results_dir).is_dir():
    raise metrics.ResultError(f"Results folder {results_dir} does not exist.")
  out = {}
  for seq in seqs:
    n = seq.ground_truth.shape[0]
    runs = [load_result(p, n, seq.name) for p in result_files(results_dir, seq.name, dataset)]
    out[seq.name] = runs if metrics.metric_kind(dataset) == "got10k" else runs[0]
  return out


# ----------------------------------------------------------------------------------------------------------
# Analysis.


def tracker_names(results_dirs: SequenceType[str], names: SequenceType[str] | None = None) -> list[str]:
  """Display names: `names` if given, else each folder's basename; they must be distinct."""
  if names:
    if len(names) != len(results_dirs):
      raise ValueError(f"{len(names)} names for {len(results_dirs)} results folders.")
    out = list(names)
  else:
    out = [storage.as_path(d).name for d in results_dirs]
  if len(set(out)) != len(out):
    raise ValueError(f"Tracker names {out} are not distinct; pass --names.")
  return out


def analyze(dataset: str, data_root: str, results_dirs: SequenceType[str],
            names: SequenceType[str] | None = None, json_path: str | None = None,
            plots_dir: str | None = None,
            sequences: SequenceType[str] | None = None) -> dict[str, dict[str, float]]:
  """Scores each results folder on `dataset`: {tracker name: {"AO","SR50","SR75"}} for GOT-10k, else
  {tracker name: {"AUC","P","NP"}}, in percent.

  json_path: also written there (atomically). plots_dir: success / precision plots as PNGs.
  sequences: restrict to these sequence names."""
  if not results_dirs:
    raise ValueError("No results folders given.")
  display_names = tracker_names(results_dirs, names)
  seqs = load_annotations(dataset, data_root, sequences)
  image_sizes = (got10k_image_sizes(dataset, data_root, [s.name for s in seqs])
                 if metrics.metric_kind(dataset) == "got10k" else None)
  details = {}
  for name, results_dir in zip(display_names, results_dirs):
    predictions = load_results(results_dir, seqs, dataset)
    details[name] = metrics.evaluate_detailed(dataset, predictions, seqs, image_sizes)
  scores = {name: d.scores() for name, d in details.items()}
  if json_path:
    write_json_atomic(json_path, scores)
  if plots_dir:
    plot_curves(dataset, details, plots_dir)
  return scores


def format_table(scores: dict[str, dict[str, float]], title: str = "") -> str:
  """Trackers as rows, scores as columns, two decimals."""
  if not scores:
    return title
  columns = list(next(iter(scores.values())))
  width = max(len("Tracker"), *(len(n) for n in scores))
  lines = [title] if title else []
  lines.append("Tracker".ljust(width) + "".join(f"{c:>9}" for c in columns))
  for name, row in scores.items():
    lines.append(name.ljust(width) + "".join(f"{row[c]:9.2f}" for c in columns))
  return "\n".join(lines)


def write_json_atomic(path: str, data) -> None:
  storage.write_text_atomic(path, json.dumps(data, indent=2) + "\n")


# ----------------------------------------------------------------------------------------------------------
# Plots.


def plot_curves(dataset: str, details: dict, plots_dir: str) -> list[str]:
  """Success plot (and for OPE benchmarks precision and normalised-precision plots) of every tracker, the
  score in the legend as pytracking's `plot_draw_save` puts it (`name [score]`, best first). Returns the
  PNG paths."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  plots = storage.as_path(plots_dir)
  plots.mkdir(parents=True, exist_ok=True)
  if metrics.metric_kind(dataset) == "got10k":
    specs = [("success", metrics.GOT10K_THRESHOLDS, lambda d: d.success, lambda d: d.ao * 100.0,
              "Overlap threshold", "Success rate [%]", (0.0, 1.0), f"Success plot on {dataset} (AO)")]
  else:
    specs = [
        ("success", metrics.SUCCESS_THRESHOLDS, lambda d: d.success, lambda d: d.scores()["AUC"],
         "Overlap threshold", "Overlap precision [%]", (0.0, 1.0), f"Success plot on {dataset} (AUC)"),
        ("precision", metrics.PRECISION_THRESHOLDS, lambda d: d.precision, lambda d: d.scores()["P"],
         "Location error threshold [pixels]", "Distance precision [%]", (0.0, 50.0),
         f"Precision plot on {dataset} (P@20px)"),
        ("norm_precision", metrics.NORM_PRECISION_THRESHOLDS, lambda d: d.norm_precision,
         lambda d: d.scores()["NP"], "Normalised location error threshold", "Distance precision [%]",
         (0.0, 0.5), f"Normalised precision plot on {dataset} (NP@0.2)"),
    ]
  paths = []
  for plot_type, thresholds, curve, score, xlabel, ylabel, xlim, title in specs:
    fig, ax = plt.subplots(figsize=(7, 6))
    order = sorted(details, key=lambda n: score(details[n]), reverse=True)
    for name in order:
      ax.plot(thresholds, np.asarray(curve(details[name])) * 100.0, linewidth=2,
              label=f"{name} [{score(details[name]):.1f}]")
    ax.set(xlabel=xlabel, ylabel=ylabel, xlim=xlim, ylim=(0.0, 100.0), title=title)
    ax.grid(True, linestyle="-.")
    ax.legend(loc="lower left" if plot_type == "success" else "lower right", edgecolor="black",
              fancybox=False, framealpha=1.0)
    fig.tight_layout()
    path = plots / f"{plot_type}_plot.png"
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=150, format="png")
    plt.close(fig)
    storage.write_bytes_atomic(path, buffer.getvalue())
    paths.append(os.fspath(path))
  return paths
