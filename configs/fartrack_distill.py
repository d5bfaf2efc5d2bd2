r"""FARTrack stage 2, task-specific self-distillation: coordinate logits after every layer from 4 on.

  python scripts/train.py --config configs/fartrack_distill.py:variant=tiny --workdir /tmp/fartrack_distill \
      --config.model.pretrain_pth=/tmp/fartrack/<stage-1 checkpoint> --config.run.data_roots.got10k=...

Starts from the stage-1 checkpoint (`model.pretrain_pth`; the original YAML's path is machine-specific,
so it is empty here and must be given) and trains on the same data and augmentations as stage 1. Every
layer in `model.logit_layers` (4..depth-1) also predicts the box tokens and gets the cross-entropy and
SIoU losses; a KL term pulls each layer's coordinate distribution towards the next (deeper) one's. 500
epochs, AdamW at 4e-5 with no backbone multiplier, lr x0.1 after epoch 400; 4 GPUs x 32 samples in the
original (`train.batch_size` is per process).

One full-depth distillation (variant=tiny) yields every shallower model: Nano and Pico are its first 10
and 6 layers (`scripts/convert_torch.py` keeps those layers of a Tiny checkpoint). variant=nano/pico here
instead distil a model built at that depth, with `model.logit_layers` = range(4, depth). After the sparse
stage (`configs/fartrack_sparse.py`), the published results are those of its docstring (GOT-10k AO
70.6 / 69.9 / 62.8 for Tiny / Nano / Pico).

variant=smoke is a tiny model on synthetic data that runs in seconds (tests, quick start). Other
arguments: `dtype=bfloat16`, `seed=N`. Shared values: `configs/common.py`; the original's names:
`docs/configs.md`.
"""

from configs import common
from fartrack_jax import config_lib


def get_config(arg=None):
  options = config_lib.parse_arg(arg)
  config = common.base("fartrack_distill", options.variant)
  m, d, t, r = config.model, config.data, config.train, config.run

  # The original distill backbone emits after blocks 4..11 and extension blocks 0..1, plus the final layer.
  m.logit_layers = tuple(range(4, m.depth))

  common.frame_pairs(config)  # stage 1's data and schedule
  d.max_gap = 200  # the default MAX_SAMPLE_INTERVAL
  t.lr = 4e-5
  t.backbone_multiplier = 1.0

  r.num_workers = 10  # TRAIN.NUM_WORKER
  r.val_every_steps = 20 * common.steps_per_epoch(config)  # VAL_EPOCH_INTERVAL 20

  if options.variant == "smoke":
    common.smoke(config)
    m.logit_layers = (0,)
  return common.finish(config, options)
