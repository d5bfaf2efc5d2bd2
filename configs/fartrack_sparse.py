r"""FARTrack stage 3, inter-frame autoregressive sparsification: sequence-level training with pruning.

  python scripts/train.py --config configs/fartrack_sparse.py:variant=tiny --workdir /tmp/fartrack_sparse \
      --config.model.pretrain_pth=/tmp/fartrack_distill/<distilled checkpoint> --config.run.data_roots.got10k=...

Starts from the distilled checkpoint (`model.pretrain_pth`; the original YAML's path is machine-specific,
so it is empty here and must be given) and trains on 32-frame sequences from LaSOT, GOT-10k (vottrain)
and TrackingNet (the model carries an embedding for `model.prenum`=3 previous boxes, but its forward
feeds the four fixed command tokens, as the original's does). Each step ranks the
template tokens by the centre search token's attention and prunes 25% of every template but the last
(masked LayerNorm in the blocks); tracking keeps four masks (25/50/75/90% pruned). Loss: SIoU only (the
original's actor zeroes the cross-entropy weight). 20 epochs of 1,000 sequences, AdamW at 4e-6, weight
decay 0.05, gradients clipped at 100; 4 GPUs x 8 sequences in the original (`train.batch_size` is per
process). The released tracker is the epoch-15 checkpoint (the original's TEST.EPOCH).

This is the released tracker. Published results (variant=nano/pico: the first 10/6 layers of the
distilled model, trained and run at that depth):

  Variant             GOT-10k AO   LaSOT AUC
  Tiny (15 layers)       70.6         63.2
  Nano (10 layers)       69.9         61.3
  Pico  (6 layers)       62.8         58.6

variant=smoke is a tiny model on synthetic data that runs in seconds (tests, quick start). Other
arguments: `dtype=bfloat16`, `seed=N`. Shared values: `configs/common.py`; the original's names:
`docs/configs.md`.
"""

from configs import common
from fartrack_jax import config_lib


def get_config(arg=None):
  options = config_lib.parse_arg(arg)
  config = common.base("fartrack_sparse", options.variant)
  m, d, t, r = config.model, config.data, config.train, config.run

  m.prenum = 3
  m.masked_norm = True
  m.word_max_norm = 1.0

  # Sequences: `search.number` frames at gaps of up to `max_interval`, within `max_gap` of the template.
  d.max_gap = 300
  d.max_interval = 5
  d.interval_prob = 0.0
  # Ours: side of the square canvas each clip frame is placed on (top-left; downscaled to fit, never
  # upscaled). The original crops full frames on the host; we crop the search regions on device, so a
  # clip's frames need one static shape. 640 keeps the search crops (4x the target's size, to 224 px) at
  # about 1x resolution or more for typical targets.
  d.clip_canvas = 640
  d.search.center_jitter = 3.0
  d.search.scale_jitter = 0.25
  d.search.number = 32
  d.train.datasets_name = ("LASOT", "GOT10K_vottrain", "TRACKINGNET")
  d.train.datasets_ratio = (1, 1, 1)
  d.train.sample_per_epoch = 1000
  d.val.datasets_name = ("GOT10K_official_val",)

  t.lr = 4e-6
  t.backbone_multiplier = 0.1
  t.weight_decay = 0.05
  t.epoch = 20
  t.lr_drop_epoch = 999  # never drops within the 20 epochs
  # Per process: 4 GPUs x 8 in the original. Its trainer backpropagates each sequence of the batch
  # separately before one optimizer step, so the sequence loss is summed, not averaged, over the batch.
  t.batch_size = 8
  t.global_batch_size = 4 * t.batch_size
  # The sparse actor overwrites the cross-entropy weight with 0 every step: the loss is SIoU only.
  t.ce_weight = 0.0

  r.num_workers = 12  # TRAIN.NUM_WORKER
  r.val_every_steps = 10 * common.steps_per_epoch(config)  # VAL_EPOCH_INTERVAL 10

  if options.variant == "smoke":
    common.smoke(config)
    d.search.number = 4
    d.clip_canvas = 96
  return common.finish(config, options)
