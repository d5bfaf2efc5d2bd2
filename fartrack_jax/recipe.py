"""The whole FARTrack recipe on generated data, in minutes on a CPU: what the quick start runs.

  1. synthetic training videos in the GOT-10k training layout (`data_pipelines/training/synthetic_train.py`);
  2. stage 1, frame-level pretraining (`configs/fartrack.py:variant=smoke`), a few hundred steps;
  3. stage 2, self-distillation from stage 1's checkpoint (`configs/fartrack_distill.py:variant=smoke`);
  4. export of the shallower variant (the smoke model has 2 layers; its "Pico" is the first layer);
  5. stage 3, sparse sequence training from the distilled model (`configs/fartrack_sparse.py:variant=smoke`);
  6. tracking a synthetic GOT-10k val set with the stage-3 model and scoring it with the GOT-10k protocol.

Every stage is the same `trainer.train` the real configs run (TensorBoard events, orbax checkpoints and a
resumable data pipeline in `<workdir>/<stage>`); a second call with the same workdir resumes or skips what is
done. The smoke model is tiny (2 layers, 48 channels, 64-pixel search crops), so the scores show the machinery
working, not FARTrack's accuracy.
"""

from __future__ import annotations

import os

from fartrack_jax import config_lib


def _config(stage: str, workdir: str, data_root: str, steps: int, pretrained: str = ""):
  import importlib  # pylint: disable=g-import-not-at-top
  config = importlib.import_module(f"configs.{stage}").get_config("variant=smoke")
  config.run.data_roots.synthetic = data_root
  config.run.index_cache_dir = os.path.join(workdir, "index_cache")
  config.data.train.sample_per_epoch = max(config.data.train.sample_per_epoch,
                                           steps * config.train.global_batch_size)
  config.train.epoch = 1
  config.train.lr_drop_epoch = 1  # one epoch: no drop
  config.run.max_steps = steps
  config.run.log_every_steps = max(1, steps // 10)
  config.run.checkpoint_every_steps = max(1, steps // 2)
  config.run.val_every_steps = steps
  config.run.val_batches = 4
  if stage == "fartrack":
    config.train.lr = 1e-3
  if pretrained:
    config.model.pretrain_pth = pretrained
    config.model.allow_random_init = False
  return config_lib.validate_config(config)


def run_recipe(workdir: str, stage1_steps: int = 300, distill_steps: int = 40, sparse_steps: int = 10,
               seed: int = 0, log=print) -> dict:
  """Runs the six steps above in `workdir`; returns {"stage": metrics..., "scores": {...}}."""
  from data_pipelines.training import synthetic_train  # pylint: disable=g-import-not-at-top
  from fartrack_jax import demo  # pylint: disable=g-import-not-at-top
  from fartrack_jax.training import checkpointing, export, trainer  # pylint: disable=g-import-not-at-top

  workdir = os.path.abspath(workdir)
  data_root = os.path.join(workdir, "data", "got10k_train")
  if not os.path.isdir(os.path.join(data_root, "train")):
    synthetic_train.make_synthetic_train_dataset("got10k_train", data_root, num_sequences=8, num_frames=40)
  log(f"[recipe 1/6] synthetic training videos in the GOT-10k layout: {data_root}")

  out = {}
  stage1_dir = os.path.join(workdir, "stage1")
  result = trainer.train(_config("fartrack", workdir, data_root, stage1_steps), stage1_dir)
  out["stage1"] = result.val_metrics
  log(f"[recipe 2/6] stage 1 (frame-level): {result.step} steps, val loss {result.val_metrics['loss']:.3f}, "
      f"val IoU {result.val_metrics['iou']:.3f}; TensorBoard: tensorboard --logdir {stage1_dir}")

  distill_dir = os.path.join(workdir, "stage2_distill")
  result = trainer.train(_config("fartrack_distill", workdir, data_root, distill_steps, stage1_dir), distill_dir)
  out["distill"] = result.val_metrics
  log(f"[recipe 3/6] stage 2 (self-distillation from stage 1): {result.step} steps, val loss "
      f"{result.val_metrics['loss']:.3f}, inter-layer KL {result.val_metrics['kl']:.4f}")

  distill_config = _config("fartrack_distill", workdir, data_root, distill_steps)
  shallow_dir = os.path.join(workdir, "export_depth1")
  if not os.path.isdir(shallow_dir):
    export.export_variant(distill_dir, distill_config, 1, shallow_dir)
  log(f"[recipe 4/6] exported the first layer of the distilled model (the smoke model's Pico): {shallow_dir}")

  sparse_dir = os.path.join(workdir, "stage3_sparse")
  sparse_config = _config("fartrack_sparse", workdir, data_root, sparse_steps, distill_dir)
  result = trainer.train(sparse_config, sparse_dir)
  out["sparse"] = result.val_metrics
  log(f"[recipe 5/6] stage 3 (sparse clips of {sparse_config.data.search.number} frames): {result.step} steps, "
      f"val loss {result.val_metrics['loss']:.3f}, explore IoU {result.val_metrics['explore_iou']:.3f}")

  params, _, _ = checkpointing.load_train_params(sparse_dir)
  log("[recipe 6/6] tracking and scoring with the stage-3 model:")
  out["scores"] = demo.evaluate_on_synthetic(
      sparse_config, params, os.path.join(workdir, "evaluation"), seed, labels=("      ", "      "),
      note="the smoke model after a short run: the machinery, not FARTrack's accuracy")
  return out
