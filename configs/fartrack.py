r"""FARTrack stage 1, frame-level pretraining: the autoregressive tracker trained on image pairs.

  python scripts/train.py --config configs/fartrack.py:variant=tiny --workdir /tmp/fartrack

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
"""

from fartrack_jax import config_lib


def get_config(arg=None):
  options = config_lib.parse_arg(arg)
  config = config_lib.base_config("fartrack", options.variant)
  config_lib.apply_options(config, options)
  return config_lib.validate_config(config)
