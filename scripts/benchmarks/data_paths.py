"""Does stage 1 learn as well from pre-cropped windows as from whole frames? Both data paths, same seeds.

    rows = compare_data_paths("/tmp/data_paths", steps=300, seeds=(0, 1))

Generates synthetic GOT-10k-layout training videos and, with another seed, held-out videos; cuts the
training videos into a pre-cropped set (`data_pipelines.training.precropped`); then for each seed trains
stage 1 as `configs/compare_data_paths.py` sets it (the smoke variant made learnable) once per data path,
the same init and the same example draws (the example index seeds them), and validates every run on the
held-out videos through the exact path (the same batches for every run). A row per run: the held-out loss
and IoU (`trainer.train`'s val metrics) and the last training metrics.
"""

from __future__ import annotations

import os

from configs import compare_data_paths as comparison_config
from data_pipelines.training import build
from data_pipelines.training import pipeline
from data_pipelines.training import precropped
from data_pipelines.training import processing
from data_pipelines.training import synthetic_train
from fartrack_jax import config_lib
from fartrack_jax.training import curves
from fartrack_jax.training import trainer

DATA_PATHS = ("frames", "precropped")
TRAIN_VIDEOS, HELDOUT_VIDEOS, FRAMES = 64, 8, 60


def run_config(steps: int, seed: int, data_path: str, tfds_data_dir: str, train_root: str):
  """`configs/compare_data_paths.py` for one run: `data_path` reading `train_root` (or the pre-cropped set
  under `tfds_data_dir`)."""
  config = comparison_config.get_config(f"steps={steps},seed={seed}")
  config.run.data_roots.synthetic = train_root
  config.run.data_path = data_path
  config.run.tfds_data_dir = tfds_data_dir if data_path == "precropped" else ""
  return config_lib.validate_config(config)


def compare_data_paths(workdir: str, steps: int = 300, seeds=(0, 1), oversample: float = 1.0,
                       data_paths=DATA_PATHS, log=print) -> list[dict]:
  """Trains and validates every (seed, data path) in `workdir` (resumes or reuses what is there); the
  pre-cropped set is cut with `oversample` (`precropped.window_specs`)."""
  workdir = os.path.abspath(workdir)
  roots = {}
  for split, seed in (("train", 0), ("heldout", 1)):
    roots[split] = os.path.join(workdir, "data", split)
    if not os.path.isdir(os.path.join(roots[split], "train")):
      synthetic_train.make_synthetic_train_dataset(
          "got10k_train", roots[split], num_sequences=TRAIN_VIDEOS if split == "train" else HELDOUT_VIDEOS,
          num_frames=FRAMES, seed=seed)
  tfds_dir = os.path.join(workdir, "data", f"tfds_oversample{oversample:g}")
  base = run_config(steps, 0, "frames", tfds_dir, roots["train"])
  if "precropped" in data_paths:
    precropped.pack_precropped_dataset("SYNTHETIC", roots["train"], tfds_dir,
                                       processing.FrameProcessing.from_config(base), oversample=oversample)
  heldout = build.train_datasets_from_config(base, {"synthetic": roots["heldout"]})

  rows = []
  for seed in seeds:
    for data_path in data_paths:
      config = run_config(steps, seed, data_path, tfds_dir, roots["train"])

      def data_fn(config, workdir, split, per_process_batch, seed, num_examples=None):
        if split == "train":
          default_data = trainer.default_data
          return default_data(config, workdir, split, per_process_batch, seed, num_examples)
        # Held out, exact path, the same batches for every run.
        examples = build.frame_examples_from_config(config, heldout, 1000)
        return pipeline.frame_dataset(examples, per_process_batch, num_examples=num_examples)

      run = f"seed{seed}_{data_path}" + (f"_oversample{oversample:g}" if data_path == "precropped" and
                                         oversample != 1 else "")
      result = trainer.train(config, os.path.join(workdir, run), data_fn=data_fn)
      # A run found finished trains and validates nothing: its last logged validation stands for it.
      val_metrics = result.val_metrics or curves.last_logged(os.path.join(workdir, run), "val/")
      train_metrics = result.last_metrics or curves.last_logged(os.path.join(workdir, run), "train/")
      row = {"data_path": data_path, "oversample": oversample if data_path == "precropped" else None,
             "seed": seed, "steps": result.step,
             "heldout_iou": float(val_metrics["iou"]), "heldout_loss": float(val_metrics["loss"]),
             "train_loss": float(train_metrics.get("loss", float("nan"))),
             "train_iou": float(train_metrics.get("iou", float("nan")))}
      log(f"seed {seed} {data_path}: {row['steps']} steps, held-out IoU {row['heldout_iou']:.3f}, "
          f"loss {row['heldout_loss']:.3f}")
      rows.append(row)
  return rows
