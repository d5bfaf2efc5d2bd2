r"""The quick start: the whole three-stage recipe on generated videos, in minutes on a CPU.

  python scripts/quickstart.py --workdir /tmp/fartrack_quickstart [--stage1-steps N]

`scripts/quickstart.py` runs it with `fartrack_jax.recipe.run_recipe`: 64 + 1 synthetic training videos in
the GOT-10k layout, stage 1 for 16,000 steps, distillation and the sparse stage for 100 steps each, then
tracking 8 held-out videos with the stage-3 model. It should reach a GOT-10k AO of about 57 % on the held-out
videos, against about 10 % for repeating the first box (`docs/performance.md` has the measured figure and
time). Arguments: `stage1_steps=N`, `distill_steps=N`, `sparse_steps=N`, e.g.
`configs/quickstart.py:stage1_steps=2000`.

Each stage is its smoke variant (`configs/<stage>.py:variant=smoke`, 2 layers of 48 channels learning from
scratch) made to learn within minutes (`learnable`), trained on the GOT-10k training root (the recipe sets
`run.data_roots.got10k`, `run.index_cache_dir` and each stage's `model.pretrain_pth`) for its steps of a
warm-up + cosine schedule.
"""

import ml_collections

from configs import fartrack
from configs import fartrack_distill
from configs import fartrack_sparse
from fartrack_jax import config_lib

STAGE_CONFIGS = {"fartrack": fartrack, "fartrack_distill": fartrack_distill, "fartrack_sparse": fartrack_sparse}
# Frame pairs per step in stages 1 and 2; clips per step in stage 3 (each clip is tracked frame by frame).
BATCH = {"fartrack": 16, "fartrack_distill": 16, "fartrack_sparse": 8}
# Learning rate of each stage. Stage 3 re-learns what the sparse model changes (masked norms, the max-norm
# word embedding), so it gets far more than the original's 4e-6.
LR = {"fartrack": 2e-3, "fartrack_distill": 1e-4, "fartrack_sparse": 1e-4}
WARMUP_FRACTION = 0.05


def get_config(arg=None):
  options = config_lib.parse_arg(arg, stage1_steps=16000, distill_steps=100, sparse_steps=100)
  config = ml_collections.ConfigDict()
  # Training videos (the last is what the trainers validate on) and held-out videos for tracking: those are
  # `data_pipelines.synthetic`'s GOT-10k val split, rendered from the data seed + `val_seed_offset`.
  config.train_videos, config.train_frames = 64, 60
  config.val_videos, config.val_frames, config.val_seed_offset = 8, 40, 1000
  config.stage1 = stage_config("fartrack", options.stage1_steps)
  config.distill = stage_config("fartrack_distill", options.distill_steps)
  config.sparse = stage_config("fartrack_sparse", options.sparse_steps)
  return config


def learnable(config: ml_collections.ConfigDict, batch: int) -> ml_collections.ConfigDict:
  """What makes a smoke config learn to track within a few thousand CPU steps: 8-pixel patches (an 8x8 grid
  of search tokens instead of 4x4: the box is read from finer features), 32 coordinate bins per unit, the
  full learning rate for the backbone and no drop-path (a random init has no pretrained backbone to
  protect), and batches of `batch`."""
  config.model.patch_size = 8
  config.model.bins = 32
  config.train.backbone_multiplier = 1.0
  config.train.drop_path_rate = 0.0
  config.train.batch_size = config.train.global_batch_size = batch
  return config


def stage_config(stage: str, steps: int) -> ml_collections.ConfigDict:
  """The quick start's `stage` (`fartrack`, `fartrack_distill`, `fartrack_sparse`): its smoke variant made
  learnable, trained for `steps` steps of a warm-up + cosine schedule on GOT-10k-layout videos (all but the
  last; the trainer validates on the last)."""
  config = learnable(STAGE_CONFIGS[stage].get_config("variant=smoke"), BATCH[stage])
  config.data.train.datasets_name, config.data.val.datasets_name = ("GOT10K_vottrain",), ("GOT10K_votval",)
  config.data.train.sample_per_epoch = steps * config.train.global_batch_size
  config.train.epoch = 1
  config.train.lr_drop_epoch = 1
  config.train.lr = LR[stage]
  config.train.scheduler.type = "cosine"
  config.train.scheduler.warmup_steps = int(steps * WARMUP_FRACTION)
  r = config.run
  r.max_steps = steps
  r.log_every_steps = max(1, steps // 50)
  r.checkpoint_every_steps = max(1, steps // 2)
  r.val_every_steps = max(1, steps // 10)
  r.val_batches = 4
  r.read_threads = 1  # the frames are 160x120: reading is Python work, threads only contend
  return config_lib.validate_config(config)
