r"""Converts between the original PyTorch FARTrack checkpoints and fartrack-jax params (orbax).

PyTorch -> Flax (a stage checkpoint `{'net': ...}`, or MAE ViT-Tiny weights `{'model': ...}`):

  python scripts/convert_torch.py --config configs/fartrack_sparse.py:variant=tiny \
      --checkpoint FARTrackSparse_ep0015.pth.tar --output /tmp/fartrack_sparse_tiny

  python scripts/convert_torch.py --config configs/fartrack.py:variant=tiny \
      --checkpoint mae_tiny_distill_400e.pth.tar --output /tmp/stage1_init      # MAE: detected by its keys

Flax -> PyTorch (a state dict the original code loads):

  python scripts/convert_torch.py --direction to_torch --config configs/fartrack_sparse.py \
      --params /tmp/fartrack_sparse_tiny --output FARTrackSparse_from_jax.pth.tar

It prints which checkpoint keys were mapped, which were unused, which params were left at init, and exits
non-zero without writing anything when a key the config needs is missing or a shape disagrees. A distill
checkpoint given to the sparse config gets the original's `normN -> masknormN.norm` remap. A Tiny checkpoint
given to a Nano/Pico config keeps the first 10/6 layers (the rest is listed as unused).
Needs torch (pip install -r requirements-torch.txt).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # pylint: disable=g-import-not-at-top
from ml_collections import config_flags

from fartrack_jax import cli
from fartrack_jax import config_lib
from fartrack_jax import convert

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file of the stage/variant to convert for, e.g. configs/fartrack_sparse.py:variant=nano. "
    "Fields can be overridden: --config.model.depth=10.")
_DIRECTION = flags.DEFINE_enum("direction", "to_flax", ["to_flax", "to_torch"],
                               "to_flax: .pth.tar -> orbax params; to_torch: orbax params -> .pth.tar.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "to_flax: the PyTorch checkpoint (.pth.tar) to read.")
_PARAMS = flags.DEFINE_string("params", None, "to_torch: the params to read: an orbax params directory, a "
                              "training run's workdir or its checkpoints/ folder (the latest step).")
_OUTPUT = flags.DEFINE_string("output", None, "Where to write: a new directory (to_flax) or a .pth.tar file "
                              "(to_torch). Must not exist for to_flax.")
_SOURCE = flags.DEFINE_enum("source", "auto", ["auto", "net", "mae"],
                            "What --checkpoint holds: a stage checkpoint ('net'), MAE weights ('mae'), or "
                            "'auto' (by the file's top-level key).")
_ALLOW_PICKLE = flags.DEFINE_bool("allow_pickle", False, "Read --checkpoint with full unpickling when it "
                                  "holds more than tensors (only for files you trust).")
_SEED = flags.DEFINE_integer("seed", 0, "RNG seed for the params the checkpoint does not provide.")


def main(argv):
  del argv
  if _CONFIG.value is None:
    raise SystemExit("--config is required")
  if not _OUTPUT.value:
    raise SystemExit("--output is required")
  config = config_lib.validate_config(_CONFIG.value)
  try:
    if _DIRECTION.value == "to_flax":
      if not _CHECKPOINT.value:
        raise SystemExit("--checkpoint is required with --direction=to_flax")
      report = convert.convert_checkpoint_to_flax(_CHECKPOINT.value, config, _OUTPUT.value, _SOURCE.value,
                                                  _ALLOW_PICKLE.value, _SEED.value)
      for line in report.lines():
        print(line)
      print(f"wrote params for stage={config.stage} depth={config.model.depth} to {_OUTPUT.value}")
    else:
      if not _PARAMS.value:
        raise SystemExit("--params is required with --direction=to_torch")
      n = convert.convert_params_to_torch(_PARAMS.value, config, _OUTPUT.value)
      print(f"wrote {n} keys to {_OUTPUT.value}")
  except (convert.ConversionError, FileNotFoundError, FileExistsError, ValueError, ImportError) as e:
    print(f"error: {e}", file=sys.stderr)
    raise SystemExit(1) from None


if __name__ == "__main__":
  cli.run(main)
