r"""Quick start: the FARTrack model and the three-stage training recipe end to end on this machine.

  python scripts/quickstart.py --workdir /tmp/fartrack_quickstart \
      [--config configs/fartrack_sparse.py:variant=tiny] [--checkpoint ORIGINAL.pth.tar] \
      [--stage1-steps 300] [--skip-training]

Part 1 (the model): builds the network for the config (default: the released tracker's stage, Tiny), takes
params from an original PyTorch checkpoint through the converter (or a fresh init), saves them as an orbax
checkpoint in the workdir (re-used on the next run), exports them to a PyTorch state dict and converts that
back (bit-exact), runs the jitted forward on synthetic template/search crops (decoded box, keep masks,
latency) and tracks a synthetic GOT-10k val set.
Part 2 (training, `fartrack_jax/recipe.py`): generates synthetic training videos, trains stage 1 for
--stage1-steps steps, distils, exports the shallow variant, trains the sparse stage, then tracks and scores
with the trained model, all with the smoke model in <workdir>/recipe (TensorBoard logs and checkpoints in
each stage's folder). About two minutes on a 2-core CPU.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # pylint: disable=g-import-not-at-top
from ml_collections import config_flags

from fartrack_jax import cli
from fartrack_jax import config_lib

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(cli.repo_root(), "configs", "fartrack_sparse.py"),
    "Config (default configs/fartrack_sparse.py, variant tiny); e.g. configs/fartrack.py:variant=smoke.")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/fartrack_quickstart", "Where params and exports go.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Optional original checkpoint (.pth.tar) to convert "
                                  "instead of a fresh init.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the init and of the synthetic crops.")
_RUNS = flags.DEFINE_integer("runs", 20, "Timed forward calls.")
_STAGE1_STEPS = flags.DEFINE_integer("stage1_steps", 300, "Stage-1 training steps of the recipe "
                                     "(also --stage1-steps); distillation and sparse training run 40 and 10.")
_SKIP_TRAINING = flags.DEFINE_bool("skip_training", False, "Only part 1, the model (also --skip-training).")


def main(argv):
  del argv
  from fartrack_jax import demo  # pylint: disable=g-import-not-at-top
  config = config_lib.validate_config(_CONFIG.value)
  demo.run(config, _WORKDIR.value, _CHECKPOINT.value, _SEED.value, _RUNS.value)
  if not _SKIP_TRAINING.value:
    from fartrack_jax import recipe  # pylint: disable=g-import-not-at-top
    recipe.run_recipe(os.path.join(_WORKDIR.value, "recipe"), stage1_steps=_STAGE1_STEPS.value,
                      seed=_SEED.value)


if __name__ == "__main__":
  cli.run(main)
