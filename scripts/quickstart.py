r"""Quick start: the FARTrack model and the three-stage training recipe end to end on this machine.

  python scripts/quickstart.py --workdir /tmp/fartrack_quickstart \
      [--config configs/fartrack_sparse.py:variant=tiny] [--checkpoint ORIGINAL.pth.tar] \
      [--stage1-steps N] [--skip-training] [--json results.json]

Part 1 (the model): builds the network for the config (default: the released tracker's stage, Tiny), takes
params from an original PyTorch checkpoint through the converter (or a fresh init), saves them as an orbax
checkpoint in the workdir (re-used on the next run with the same source), exports them to a PyTorch state
dict and converts that back (bit-exact), runs the jitted forward on synthetic template/search crops (decoded
box, keep masks, latency) and tracks a synthetic GOT-10k val set.
Part 2 (training, `configs/quickstart.py` run by `fartrack_jax/recipe.py`): generates synthetic training videos, trains stage 1 for
--stage1-steps steps, distils, exports the shallow variant, trains the sparse stage, then tracks held-out
videos with the trained model and scores it against repeating the first box, all in <workdir>/recipe
(TensorBoard logs and checkpoints in each stage's folder, learning_curves.png, tracked.mp4, scores.json).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # pylint: disable=g-import-not-at-top
from ml_collections import config_flags

from configs import quickstart as quickstart_config
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
_STAGE1_STEPS = flags.DEFINE_integer("stage1_steps", None, "Stage-1 training steps of the recipe (also "
                                     "--stage1-steps; default configs/quickstart.py's stage1_steps).")
_SKIP_TRAINING = flags.DEFINE_bool("skip_training", False, "Only part 1, the model (also --skip-training).")
_JSON = flags.DEFINE_string("json", None, "Also write the results here as JSON: {\"model\": part 1's box, "
                            "latency and scores, \"recipe\": {\"AO\", \"SR50\", \"SR75\", \"data_root\", "
                            "\"results_dir\", \"minutes\", ...}} (written when both parts are done).")


def main(argv):
  del argv
  import time  # pylint: disable=g-import-not-at-top
  from fartrack_jax import demo  # pylint: disable=g-import-not-at-top
  start = time.monotonic()
  config = config_lib.validate_config(_CONFIG.value)
  model = demo.run(config, _WORKDIR.value, _CHECKPOINT.value, _SEED.value, _RUNS.value)
  model["minutes"] = (time.monotonic() - start) / 60
  out = {"model": model}
  if not _SKIP_TRAINING.value:
    from fartrack_jax import recipe  # pylint: disable=g-import-not-at-top
    steps = None if _STAGE1_STEPS.value is None else f"stage1_steps={_STAGE1_STEPS.value}"
    trained = recipe.run_recipe(quickstart_config.get_config(steps), os.path.join(_WORKDIR.value, "recipe"),
                                seed=_SEED.value)
    out["recipe"] = dict(trained.pop("scores"), **trained)
    print(f"quick start done in {(time.monotonic() - start) / 60:.1f} min: the trained tracker's AO on the "
          f"held-out videos is {out['recipe']['AO']:.1f} % (repeating the first box: "
          f"{out['recipe']['baseline']['AO']:.1f} %)")
  if _JSON.value:
    import json  # pylint: disable=g-import-not-at-top
    from data_pipelines import annotation_files  # pylint: disable=g-import-not-at-top
    annotation_files.write_text_atomic(_JSON.value, json.dumps(out, indent=2, default=float) + "\n")


if __name__ == "__main__":
  cli.run(main)
