r"""FARTrack stage 2, task-specific self-distillation: coordinate logits after every layer from 4 on.

  python scripts/train.py --config configs/fartrack_distill.py:variant=tiny --workdir /tmp/fartrack_distill \
      --config.model.pretrain_pth=/tmp/fartrack/<stage-1 checkpoint>

Starts from the stage-1 checkpoint (`model.pretrain_pth`; the original YAML's path is machine-specific,
so it is empty here and must be given) and trains on the same data and augmentations as stage 1. Every
layer in `model.logit_layers` (4..depth-1) also predicts the box tokens and gets the cross-entropy and
SIoU losses; a KL term pulls each layer's coordinate distribution towards the next (deeper) one's. 500
epochs, AdamW at 4e-5 with no backbone multiplier, lr x0.1 after epoch 400; 4 GPUs x 32 samples in the
original (`train.batch_size` is per process).

One full-depth distillation (variant=tiny) yields every shallower model: Nano and Pico are its first 10
and 6 layers (`scripts/convert_torch.py` keeps those layers of a Tiny checkpoint). variant=nano/pico here
instead distil a model built at that depth, with `model.logit_layers` = range(4, depth). After the sparse
stage (`configs/fartrack_sparse.py`), the published results are:

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
  config = config_lib.base_config("fartrack_distill", options.variant)
  config_lib.apply_options(config, options)
  return config_lib.validate_config(config)
