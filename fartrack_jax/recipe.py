"""The whole FARTrack recipe on generated data, in minutes on a CPU: what the quick start runs.

  1. synthetic videos (`data_pipelines/training/synthetic_train.py`, `data_pipelines/synthetic.py`): training
     videos in the GOT-10k training layout, and a GOT-10k val split of other videos for tracking;
  2. stage 1, frame-level pretraining (`config.stage1`);
  3. stage 2, self-distillation from stage 1's checkpoint (`config.distill`);
  4. the shallower depth variant (the smoke model has 2 layers; its "Pico" is the first layer);
  5. stage 3, sparse clip training from the distilled model (`config.sparse`);
  6. tracking the held-out val videos with the stage-3 model, scoring it and the first-box baseline with the
     GOT-10k protocol, the learning curves of the three stages and a video of one tracked sequence.

`config` is the quick start's (`configs/quickstart.py`: the video counts and one training config per stage);
this module adds the paths under the workdir. Every stage is the same `trainer.train` the real configs run
(TensorBoard events, orbax checkpoints and a resumable data pipeline in `<workdir>/<stage>`); a second call
with the same workdir resumes or skips what is done (a finished stage reports the validation its events
hold). The model is tiny (2 layers, 48 channels, 64-pixel search crops of 8x8 patches) and learns from
scratch, so the scores show the recipe learning to track these videos, not FARTrack's accuracy.

To train the quick start's stage 1 alone (e.g. to compare input pipelines):

  config = configs.quickstart.get_config()
  stage1 = recipe.with_paths(config.stage1, workdir, recipe.make_datasets(config, workdir)[0])
  trainer.train(stage1, os.path.join(workdir, "stage1"))
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np

from data_pipelines import synthetic
from data_pipelines.evaluation import readers
from data_pipelines.training import synthetic_train
from fartrack_jax import checkpoints
from fartrack_jax import config_lib
from fartrack_jax.evaluation import analysis
from fartrack_jax.tracking import evaluate
from fartrack_jax.tracking import video
from fartrack_jax.training import curves
from fartrack_jax.training import depth_variants
from fartrack_jax.training import trainer


def with_paths(stage_config, workdir: str, data_root: str, pretrained: str = ""):
  """A copy of a quick-start stage config (`configs/quickstart.py`) reading the synthetic GOT-10k training
  root `data_root`, with its index cache under `workdir`, initialised from the run directory `pretrained`
  (the previous stage's) when given."""
  config = stage_config.copy_and_resolve_references()
  config.run.data_roots.got10k = data_root
  config.run.index_cache_dir = os.path.join(workdir, "index_cache")
  if pretrained:
    config.model.pretrain_pth = pretrained
    config.model.allow_random_init = False
  return config_lib.validate_config(config)


def _say(message: str) -> None:
  print(message, flush=True)  # progress must show when stdout is a file or a pipe too


def progress_printer(stage: str, log=_say):
  """`trainer.train`'s `on_log` for the recipe: a line after each validation (a tenth of the stage) with the
  step, the last train and val loss and IoU, the speed and the time left."""
  last = {}
  started = None  # (time, step) of the first call: the rate leaves out compilation and any resumed steps

  def on_log(step: int, total: int, scalars: dict) -> None:
    nonlocal started
    now = time.monotonic()
    if started is None:
      started = (now, step)
    last.update(scalars)
    if not any(k.startswith("val/") for k in scalars):
      return
    t0, step0 = started
    rate = (step - step0) / (now - t0) if step > step0 and now > t0 else 0.0
    eta = f", {(total - step) / rate / 60:.1f} min left" if rate and step < total else ""
    log(f"      {stage}: step {step}/{total}: train loss {last.get('train/loss', float('nan')):.3f} "
        f"IoU {last.get('train/iou', float('nan')):.3f}, val loss {last['val/loss']:.3f} "
        f"IoU {last['val/iou']:.3f} ({rate:.0f} steps/s{eta})")

  return on_log


def first_box_results(sequences, results_dir: str) -> str:
  """The baseline a tracker has to beat: result files that repeat each sequence's first box."""
  for seq in sequences:
    boxes = np.repeat(np.asarray(seq.init_box, np.float64)[None], len(seq.frames), axis=0)
    evaluate.write_results(results_dir, seq.name, boxes, np.zeros(len(seq.frames)))
  return results_dir


def make_datasets(config, workdir: str, seed: int = 0) -> tuple[str, str]:
  """The recipe's synthetic data under `<workdir>/data` (kept for the next run): a GOT-10k training root of
  `config.train_videos` + 1 videos (the last, GOT10K_votval, is what the trainers validate on) and a GOT-10k
  root whose `val/` holds `config.val_videos` videos from the same generator with seed +
  `config.val_seed_offset`, so none of them is a training video (the two generators draw from the same
  random streams for the same seed). Returns `(train_root, val_root)`."""
  data_root = os.path.join(workdir, "data", "got10k_train")
  if not os.path.isdir(os.path.join(data_root, "train")):
    synthetic_train.make_synthetic_train_dataset("got10k_train", data_root, num_sequences=config.train_videos + 1,
                                                 num_frames=config.train_frames, seed=seed)
  val_root = os.path.join(workdir, "data", "got10k")
  if not os.path.isdir(os.path.join(val_root, "val")):
    synthetic.make_synthetic_dataset("got10k", val_root, num_sequences=config.val_videos,
                                     num_frames=config.val_frames, seed=seed + config.val_seed_offset)
  return data_root, val_root


def track_and_score(config, params, val_root: str, results_root: str, log=_say):
  """Tracks the GOT-10k val split under `val_root` with `params` (results in `<results_root>/fartrack_jax`),
  writes the first-box baseline beside it (`first_box`) and scores both (also `<results_root>/scores.json`).
  Returns `({"fartrack_jax": {"AO", "SR50", "SR75"}, "first_box": {...}}, sequences, results_dir)`."""
  sequences = readers.load_dataset("got10k_val", val_root)
  results_dir = os.path.join(results_root, "fartrack_jax")
  evaluate.evaluate(config, params, sequences, results_dir, batch=len(sequences), log=lambda m: log("      " + m))
  baseline_dir = first_box_results(sequences, os.path.join(results_root, "first_box"))
  scores = analysis.analyze("got10k_val", val_root, [results_dir, baseline_dir], names=["fartrack_jax", "first_box"],
                            json_path=os.path.join(results_root, "scores.json"))
  return scores, sequences, results_dir


def train_stage(config, workdir: str, name: str, log=_say) -> trainer.TrainResult:
  """`trainer.train` with the recipe's progress lines. A stage already at its last step trains nothing and
  validates nothing; its result then carries the validation its TensorBoard events logged last, so a second
  run reports what the first one reached."""
  result = trainer.train(config, workdir, on_log=progress_printer(name, log))
  if result.val_metrics:
    return result
  val_metrics = curves.last_logged(workdir, "val/")
  if not val_metrics:
    raise RuntimeError(f"{workdir} is at step {result.step} but its TensorBoard events hold no validation; "
                       f"delete {workdir} to train the stage again")
  return dataclasses.replace(result, val_metrics=val_metrics)


def run_recipe(config, workdir: str, seed: int = 0, log=_say) -> dict:
  """Runs the six steps above in `workdir` with the quick start's `config` (`configs/quickstart.py`); returns
  the scores of the trained tracker and of the first-box baseline, where the data and results are, each
  stage's last validation metrics and the minutes taken. Also writes `learning_curves.png` and `tracked.mp4`
  (one val sequence with the trained tracker's boxes). `seed` seeds the generated videos."""
  start = time.monotonic()
  minutes = lambda: (time.monotonic() - start) / 60
  workdir = os.path.abspath(workdir)
  data_root, val_root = make_datasets(config, workdir, seed)
  log(f"[recipe 1/6] synthetic videos in the GOT-10k layout: {config.train_videos} + 1 for training "
      f"({data_root}), {config.val_videos} held out for tracking ({val_root}/val) ({minutes():.1f} min)")

  out = {}
  stage1_dir = os.path.join(workdir, "stage1")
  result = train_stage(with_paths(config.stage1, workdir, data_root), stage1_dir, "stage 1", log)
  out["stage1"] = result.val_metrics
  log(f"[recipe 2/6] stage 1 (frame-level): {result.step} steps, val loss {result.val_metrics['loss']:.3f}, "
      f"val IoU {result.val_metrics['iou']:.3f}; TensorBoard: tensorboard --logdir {stage1_dir} "
      f"({minutes():.1f} min)")

  distill_dir = os.path.join(workdir, "stage2_distill")
  distill_config = with_paths(config.distill, workdir, data_root, stage1_dir)
  result = train_stage(distill_config, distill_dir, "stage 2", log)
  out["distill"] = result.val_metrics
  log(f"[recipe 3/6] stage 2 (self-distillation from stage 1): {result.step} steps, val loss "
      f"{result.val_metrics['loss']:.3f}, val IoU {result.val_metrics['iou']:.3f}, inter-layer KL "
      f"{result.val_metrics['kl']:.4f} ({minutes():.1f} min)")

  shallow_dir = os.path.join(workdir, "export_depth1")
  if not os.path.isdir(shallow_dir):
    depth_variants.save_variant(distill_dir, distill_config, 1, shallow_dir)
  log(f"[recipe 4/6] exported the first layer of the distilled model (the smoke model's Pico): {shallow_dir}")

  sparse_dir = os.path.join(workdir, "stage3_sparse")
  sparse_config = with_paths(config.sparse, workdir, data_root, distill_dir)
  result = train_stage(sparse_config, sparse_dir, "stage 3", log)
  out["sparse"] = result.val_metrics
  log(f"[recipe 5/6] stage 3 (sparse clips of {sparse_config.data.search.number} frames): {result.step} steps, "
      f"val loss {result.val_metrics['loss']:.3f}, val IoU {result.val_metrics['iou']:.3f} "
      f"({minutes():.1f} min)")

  params, _, _ = checkpoints.load_train_params(sparse_dir)
  log(f"[recipe 6/6] tracking the {config.val_videos} held-out val videos with the stage-3 model")
  scores, sequences, results_dir = track_and_score(sparse_config, params, val_root,
                                                   os.path.join(workdir, "results", "got10k_val"), log)
  log("      scores (GOT-10k toolkit semantics; first_box repeats the first frame's box):")
  for line in analysis.format_table(scores).splitlines():
    log("      " + line)

  curves_path = curves.plot_learning_curves(
      [("stage 1 (frame-level)", stage1_dir), ("stage 2 (distillation)", distill_dir),
       ("stage 3 (sparse clips)", sparse_dir)], os.path.join(workdir, "learning_curves.png"),
      title=f"quick start: train/val IoU and loss per stage (held-out tracking AO "
            f"{scores['fartrack_jax']['AO']:.1f} %)")
  shown = sequences[0]
  video_path = os.path.join(workdir, "tracked.mp4")
  shown_boxes = analysis.load_result(evaluate.result_paths(results_dir, shown.name)[0], len(shown.frames),
                                    shown.name)
  video.draw_video(list(shown.frames), shown_boxes, video_path, fps=10)
  log(f"      learning curves: {curves_path}; {shown.name} tracked: {video_path}")
  out.update(scores=scores["fartrack_jax"], baseline=scores["first_box"], data_root=val_root,
             results_dir=results_dir, curves=curves_path, video=video_path, minutes=minutes())
  return out
