r"""Compares fartrack-jax with the original PyTorch FARTrack on the same weights and inputs.

  python scripts/parity_check.py --torch-repo /path/to/FARTrack \
      --config configs/fartrack_sparse.py:variant=tiny [--checkpoint FILE.pth.tar] [--seed 0]

Builds the original model from your checkout (random init from --seed unless --checkpoint is given), saves
its state dict and converts it with our converter, runs both on the same random inputs (templates, search,
and for the sparse stage a key mask) and prints max/mean |diff| of the coordinate logits (every layer for
distill), of the decoded boxes, and mask mismatches. Exits 1 when logits differ by more than 1e-4 (fp32)
or any keep mask differs.

The original runs on the CPU with run-time adjustments made in this process only (see README, "Parity with
the original"); your checkout is not modified. Needs torch, timm (--no-deps), easydict, pyyaml, einops.

--write-fixture PATH stores the original's weights (float16-valued), inputs and outputs as a CI fixture
instead of comparing (see tests/fartrack_jax/test_parity_fixtures.py for the commands that made ours).
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # pylint: disable=g-import-not-at-top
from ml_collections import config_flags

from fartrack_jax import cli
from fartrack_jax import config_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "Stage/variant config, e.g. "
                                          "configs/fartrack_distill.py:variant=nano; fields may be overridden.")
_TORCH_REPO = flags.DEFINE_string("torch_repo", None, "Path of a checkout of the original FARTrack code "
                                  "(also --torch-repo).")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Optional original checkpoint (.pth.tar) to compare "
                                  "on instead of a random init.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the random init and of the random inputs.")
_BATCH = flags.DEFINE_integer("batch", 2, "Number of random input samples.")
_ALLOW_PICKLE = flags.DEFINE_bool("allow_pickle", False, "Read --checkpoint with full unpickling (trusted "
                                  "files only).")
_WRITE_FIXTURE = flags.DEFINE_string("write_fixture", None, "Write a CI fixture (.npz) here instead of "
                                     "comparing (also --write-fixture).")
_WRITE_PARAM_SHAPES = flags.DEFINE_string("write_param_shapes", None, "Add the original's state-dict key "
                                          "names and shapes for --config to this JSON file (keyed by stage) "
                                          "instead of comparing.")


def main(argv):
  del argv
  if not _TORCH_REPO.value or _CONFIG.value is None:
    raise SystemExit("--torch-repo and --config are required (see --help)")
  config = config_lib.validate_config(_CONFIG.value)
  from fartrack_jax import parity  # pylint: disable=g-import-not-at-top
  if _WRITE_PARAM_SHAPES.value:
    path = _WRITE_PARAM_SHAPES.value
    table = json.load(open(path)) if os.path.exists(path) else {}
    table[config.stage] = parity.original_param_shapes(_TORCH_REPO.value, config, _SEED.value)
    with open(path + ".tmp", "w") as f:
      json.dump(table, f, indent=1, sort_keys=True)
    os.replace(path + ".tmp", path)
    print(f"wrote {len(table[config.stage])} {config.stage} keys to {path}")
    return
  if _WRITE_FIXTURE.value:
    parity.write_fixture(_WRITE_FIXTURE.value, _TORCH_REPO.value, config,
                         json.loads(config.to_json_best_effort()), _SEED.value, _BATCH.value)
    print(f"wrote {_WRITE_FIXTURE.value} ({os.path.getsize(_WRITE_FIXTURE.value) / 1e6:.2f} MB)")
    return
  print(f"stage={config.stage} variant={config.get('variant')} depth={config.model.depth} seed={_SEED.value}")
  result = parity.run_parity(_TORCH_REPO.value, config, _CHECKPOINT.value, _SEED.value, _ALLOW_PICKLE.value,
                             _BATCH.value)
  print(result.table())
  raise SystemExit(0 if result.passed else 1)


if __name__ == "__main__":
  cli.run(main)
