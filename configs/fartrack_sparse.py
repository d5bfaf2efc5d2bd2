r"""FARTrack stage 3, inter-frame autoregressive sparsification: sequence-level training with pruning.

  python scripts/train.py --config configs/fartrack_sparse.py:variant=tiny --workdir /tmp/fartrack_sparse \
      --config.model.pretrain_pth=/tmp/fartrack_distill/<distilled checkpoint>

Starts from the distilled checkpoint (`model.pretrain_pth`; the original YAML's path is machine-specific,
so it is empty here and must be given) and trains on 32-frame sequences from LaSOT, GOT-10k (vottrain)
and TrackingNet (the model carries an embedding for `model.prenum`=3 previous boxes, but its forward
feeds the four fixed command tokens, as the original's does). Each step ranks the
template tokens by the centre search token's attention and prunes 25% of every template but the last
(masked LayerNorm in the blocks); tracking keeps four masks (25/50/75/90% pruned). Loss: SIoU only (the
original's actor zeroes the cross-entropy weight). 20 epochs of 1,000 sequences, AdamW at 4e-6, weight
decay 0.05, gradients clipped at 100; 4 GPUs x 8 sequences in the original (`train.batch_size` is per
process). The released tracker is the epoch-15 checkpoint (`test.epoch`).

This is the released tracker. Published results (variant=nano/pico: the first 10/6 layers of the
distilled model, trained and run at that depth):

  Variant             GOT-10k AO   LaSOT AUC
  Tiny (15 layers)       70.6         63.2
  Nano (10 layers)       69.9         61.3
  Pico  (6 layers)       62.8         58.6

variant=smoke is a tiny model on synthetic data that runs in seconds (tests, quick start). Other
arguments: `dtype=bfloat16`, `seed=N`.
"""

from fartrack_jax import config_lib


def get_config(arg=None):
  options = config_lib.parse_arg(arg)
  config = config_lib.base_config("fartrack_sparse", options.variant)
  config_lib.apply_options(config, options)
  return config_lib.validate_config(config)
