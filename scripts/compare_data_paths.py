r"""Learning comparison of the stage 1/2 data paths: whole frames (exact) against pre-cropped windows.

  python scripts/compare_data_paths.py [--workdir /tmp/data_paths] [--steps 300] [--seeds 0,1] [--json FILE]

Trains the smoke stage 1 in a learnable setting once per data path and seed (same init, same example draws)
on synthetic videos and validates every run on held-out synthetic videos through the exact path; prints a
row per run (held-out IoU and loss, last training loss and IoU) and the mean held-out IoU per data path.
The runs' config: `configs/compare_data_paths.py`; the comparison: `scripts/benchmarks/data_paths.py`. About
2 x steps x seeds smoke steps on a CPU.
"""

import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # pylint: disable=g-import-not-at-top

from fartrack_jax import cli

_WORKDIR = flags.DEFINE_string("workdir", "/tmp/data_paths", "Data, checkpoints and logs of every run (a run "
                               "already there is resumed or reused).")
_STEPS = flags.DEFINE_integer("steps", 300, "Training steps per run.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1"], "Seeds (init and example draws); every seed trains both paths.")
_JSON = flags.DEFINE_string("json", None, "Write the rows as JSON here.")
_OVERSAMPLE = flags.DEFINE_float("oversample", 1.0, "Windows of the pre-cropped set this much finer than the crops "
                                 "need (build_tfds.py --oversample).")
_DATA_PATHS = flags.DEFINE_list("data_paths", ["frames", "precropped"], "Data paths to train.")


def main(argv):
  del argv
  from scripts.benchmarks import data_paths  # pylint: disable=g-import-not-at-top
  from scripts.benchmarks import timing  # pylint: disable=g-import-not-at-top
  if _STEPS.value < 1:
    raise SystemExit(f"error: --steps={_STEPS.value} must be >= 1")
  rows = data_paths.compare_data_paths(_WORKDIR.value, _STEPS.value, [int(s) for s in _SEEDS.value],
                                       _OVERSAMPLE.value, _DATA_PATHS.value)
  print()
  timing.report(rows, ["data_path", "oversample", "seed", "steps", "heldout_iou", "heldout_loss", "train_iou",
                       "train_loss"], _JSON.value)
  for path in _DATA_PATHS.value:
    ious = [r["heldout_iou"] for r in rows if r["data_path"] == path]
    print(f"{path}: mean held-out IoU {statistics.mean(ious):.3f} over {len(ious)} seeds")


if __name__ == "__main__":
  cli.run(main)
