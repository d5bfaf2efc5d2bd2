r"""Does stage 1 learn as well from pre-cropped windows as from whole frames? The comparison's training run.

  python scripts/compare_data_paths.py [--workdir /tmp/data_paths] [--steps 300] [--seeds 0,1]

`scripts/benchmarks/data_paths.py` trains this config once per data path (`run.data_path`: "frames", "precropped")
and seed on synthetic GOT-10k-layout videos, the same init and example draws for both paths, and validates
every run on held-out videos through the exact path. The two paths should end within the seeds' spread of
each other in held-out IoU (`docs/performance.md` has the measured rows).

Stage 1 at the smoke variant's crops, jitter and label rules (the original's rules at smoke sizes), made
learnable on a CPU within a few thousand steps as the quick start's (`configs/quickstart.py`'s `learnable`),
at learning rate 1e-3 with the original's step schedule. Arguments: `steps=N` (default 300), `seed=N`. The
comparison sets `run.data_roots.synthetic`, `run.data_path` and `run.tfds_data_dir`.
"""

from configs import fartrack
from configs import quickstart
from fartrack_jax import config_lib

BATCH = 16


def get_config(arg=None):
  options = config_lib.parse_arg(arg, steps=300, seed=0)
  steps = options.steps
  config = quickstart.learnable(fartrack.get_config("variant=smoke"), BATCH)
  config.seed = options.seed
  config.train.lr = 1e-3
  config.data.train.sample_per_epoch = max(config.data.train.sample_per_epoch,
                                           steps * config.train.global_batch_size)
  config.train.epoch = 1
  config.train.lr_drop_epoch = 1
  r = config.run
  r.max_steps = steps
  r.log_every_steps = max(1, steps // 10)
  r.checkpoint_every_steps = steps
  r.val_every_steps = steps
  r.val_batches = 8
  return config_lib.validate_config(config)
