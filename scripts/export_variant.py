r"""Exports one depth of a distilled model as a standalone params checkpoint.

  python scripts/export_variant.py --config configs/fartrack_distill.py --checkpoint /tmp/distill_run \
      --depth 10 --output /tmp/fartrack_nano      # Nano; --depth 6: Pico

--checkpoint is the distillation run's workdir (its latest checkpoint), one of its `checkpoints/<step>`
folders' parent, or a params checkpoint. The output loads in scripts/evaluate.py with the config at that
depth (e.g. configs/fartrack_distill.py:variant=nano) and as `--config.model.pretrain_pth` of the sparse stage.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # pylint: disable=g-import-not-at-top
from ml_collections import config_flags

from fartrack_jax import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "The config the checkpoint was trained with, e.g. "
                                          "configs/fartrack_distill.py (full depth).")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Training workdir or params checkpoint to export from.")
_DEPTH = flags.DEFINE_integer("depth", None, "Layers to keep: 10 (Nano), 6 (Pico), or any 1..15.")
_OUTPUT = flags.DEFINE_string("output", None, "New params checkpoint directory (must not exist).")


def main(argv):
  if len(argv) > 1:
    raise SystemExit(f"unexpected arguments: {' '.join(argv[1:])}")
  for name, value in (("--config", _CONFIG.value), ("--checkpoint", _CHECKPOINT.value),
                      ("--depth", _DEPTH.value), ("--output", _OUTPUT.value)):
    if value is None:
      raise SystemExit(f"{name} is required (see --help)")
  from fartrack_jax.training import depth_variants  # pylint: disable=g-import-not-at-top
  try:
    meta = depth_variants.save_variant(_CHECKPOINT.value, _CONFIG.value, _DEPTH.value, _OUTPUT.value)
  except (ValueError, FileNotFoundError, FileExistsError) as e:
    raise SystemExit(f"error: {e}") from None
  print(f"wrote {_OUTPUT.value}: stage {meta['stage']}, depth {meta['depth']} "
        f"(from depth {meta['exported_from_depth']})")


if __name__ == "__main__":
  cli.run(main)
