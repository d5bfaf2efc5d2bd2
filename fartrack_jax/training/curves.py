"""Learning curves of training runs, read back from the TensorBoard events the trainer's clu writer logs.

    scalars = read_scalars("/runs/stage1")       # {"train/iou": ([steps], [values]), "val/loss": ...}
    plot_learning_curves([("stage 1", "/runs/stage1"), ("stage 3", "/runs/stage3")], "curves.png")

The trainer writes `train/<metric>` every `run.log_every_steps` (the mean over that window) and `val/<metric>`
every `run.val_every_steps` (the mean over `run.val_batches` validation batches); every stage logs `iou`
and `loss`, so the curves show both for each stage side by side.
"""

from __future__ import annotations

import glob
import os

import numpy as np

CURVE_METRICS = ("iou", "loss")


def read_scalars(workdir: str, prefixes: tuple[str, ...] = ("train/", "val/")) -> dict[str, tuple]:
  """`{tag: (steps [N] int, values [N] float)}` of the scalars whose tag starts with one of `prefixes`, from
  every events file in `workdir` (a resumed run appends a new file; a later write of a step wins).
  FileNotFoundError when `workdir` has no events file."""
  from tensorboard.backend.event_processing import event_file_loader  # pylint: disable=g-import-not-at-top
  from tensorboard.util import tensor_util  # pylint: disable=g-import-not-at-top
  files = sorted(glob.glob(os.path.join(workdir, "events.out.tfevents.*")))
  if not files:
    raise FileNotFoundError(f"no TensorBoard events file in {workdir}")
  by_tag: dict[str, dict[int, float]] = {}
  for path in files:
    for event in event_file_loader.EventFileLoader(path).Load():
      for value in event.summary.value:
        if not value.tag.startswith(prefixes):
          continue
        if value.HasField("tensor"):
          number = float(tensor_util.make_ndarray(value.tensor))
        else:
          number = float(value.simple_value)
        by_tag.setdefault(value.tag, {})[int(event.step)] = number
  return {tag: (np.array(sorted(points), np.int64), np.array([points[s] for s in sorted(points)], np.float64))
          for tag, points in by_tag.items()}


def last_logged(workdir: str, prefix: str = "val/") -> dict[str, float]:
  """`{name: value}` of the scalars `prefix` + name that the last step logging any of them logged (e.g. a
  finished run's last validation: `trainer.train` validates nothing when resumed at its last step); {} when
  `workdir` logged none."""
  scalars = read_scalars(workdir, prefixes=(prefix,))
  if not scalars:
    return {}
  last_step = max(int(steps[-1]) for steps, _ in scalars.values())
  return {tag[len(prefix):]: float(values[-1]) for tag, (steps, values) in scalars.items()
          if int(steps[-1]) == last_step}


def plot_learning_curves(runs, output_path: str, metrics: tuple[str, ...] = CURVE_METRICS,
                         title: str = "", dpi: int = 80) -> str:
  """One column per run (`runs`: `(label, workdir)` pairs), one row per metric, train and val against the
  step, written as a PNG to `output_path` (atomically). Returns the path."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  runs = list(runs)
  figure, axes = plt.subplots(len(metrics), len(runs), figsize=(3.4 * len(runs), 2.4 * len(metrics)),
                              squeeze=False, sharex="col")
  for column, (label, workdir) in enumerate(runs):
    scalars = read_scalars(workdir)
    for row, metric in enumerate(metrics):
      ax = axes[row][column]
      for split, style in (("train", "-"), ("val", "o-")):
        if f"{split}/{metric}" in scalars:
          steps, values = scalars[f"{split}/{metric}"]
          ax.plot(steps, values, style, markersize=3, linewidth=1.2, label=split)
      if row == 0:
        ax.set_title(label, fontsize=10)
      if row == len(metrics) - 1:
        ax.set_xlabel("step")
      if column == 0:
        ax.set_ylabel(metric)
      ax.grid(alpha=0.3)
      ax.tick_params(labelsize=8)
  axes[0][0].legend(fontsize=8)
  if title:
    figure.suptitle(title, fontsize=10)
  figure.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
  tmp = f"{output_path}.tmp-{os.getpid()}.png"
  figure.savefig(tmp, dpi=dpi)
  plt.close(figure)
  os.replace(tmp, output_path)
  return output_path
