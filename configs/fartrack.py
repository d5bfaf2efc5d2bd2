r"""FARTrack stage 1, frame-level pretraining: the autoregressive tracker trained on image pairs.

  python scripts/train.py --config configs/fartrack.py:variant=tiny --workdir /tmp/fartrack \
      --config.run.data_roots.got10k=/data/got10k --config.run.data_roots.lasot=/data/lasot \
      --config.run.data_roots.coco=/data/coco --config.run.data_roots.trackingnet=/data/trackingnet

Trains ViT-Tiny (MAE init, `model.pretrain_file`) plus 3 extension blocks on LaSOT, GOT-10k (vottrain),
COCO17 and TrackingNet: 5 templates (112px) and one search crop (224px) per sample, the four box
coordinates predicted as tokens over 300 x 2 bins, with cross-entropy and SIoU losses. 500 epochs of
76,800 samples, AdamW at 4e-4 (backbone x0.1), lr x0.1 after epoch 400. The original ran it on 4 GPUs
with 32 samples each (`train.batch_size` is per process).

Its checkpoint initialises `configs/fartrack_distill.py` (`model.pretrain_pth`); it is not the released
tracker, and the paper reports no numbers for it. What the full three-stage pipeline reaches
(`configs/fartrack_sparse.py`), as published:

  Variant             GOT-10k AO   LaSOT AUC
  Tiny (15 layers)       70.6         63.2
  Nano (10 layers)       69.9         61.3
  Pico  (6 layers)       62.8         58.6

The paper trains this stage at full depth (variant=tiny); variant=nano/pico build only the first 10/6
layers. variant=smoke is a tiny model on synthetic data that runs in seconds (tests, quick start).
Other arguments: `dtype=bfloat16`, `seed=N`, e.g. `configs/fartrack.py:variant=smoke,seed=1`.
Shared values: `configs/common.py`; the original's names for every field: `docs/configs.md`.
"""

from configs import common
from fartrack_jax import config_lib


def get_config(arg=None):
  options = config_lib.parse_arg(arg)
  config = common.base("fartrack", options.variant)
  d, t, r = config.data, config.train, config.run

  common.frame_pairs(config)
  # Frame pairs sampled up to 300 frames apart (the YAML raises MAX_SAMPLE_INTERVAL from 200).
  d.max_gap = 300
  t.lr = 4e-4
  t.backbone_multiplier = 0.1

  r.num_workers = 12  # TRAIN.NUM_WORKER
  r.val_every_steps = 50 * common.steps_per_epoch(config)  # VAL_EPOCH_INTERVAL 50

  if options.variant == "smoke":
    common.smoke(config)
  return common.finish(config, options)
