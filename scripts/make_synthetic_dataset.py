r"""Writes a tiny synthetic evaluation benchmark in a real benchmark's on-disk layout.

  python scripts/make_synthetic_dataset.py --layout lasot --root /tmp/synthetic/lasot \
      [--num-sequences 3] [--num-frames 20] [--size 160x120] [--seed 0]

--layout is one of got10k, lasot, lasot_ext, trackingnet, nfs, uav123, otb. The root then reads with
`data_pipelines.evaluation.load_dataset` (got10k gives got10k_val and got10k_test); see
`data_pipelines/synthetic.py` for what is written.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # pylint: disable=g-import-not-at-top

from data_pipelines import synthetic
from fartrack_jax import cli

_LAYOUT = flags.DEFINE_enum("layout", None, list(synthetic.LAYOUTS), "Benchmark layout to write.",
                            required=True)
_ROOT = flags.DEFINE_string("root", None, "Folder to write the benchmark into.", required=True)
_NUM_SEQUENCES = flags.DEFINE_integer("num_sequences", 3, "Sequences (per split for got10k).", lower_bound=1)
_NUM_FRAMES = flags.DEFINE_integer("num_frames", 20, "Frames per sequence.", lower_bound=2)
_SIZE = flags.DEFINE_string("size", "160x120", "Frame size WIDTHxHEIGHT.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the videos.")


def _parse_size(text: str) -> tuple[int, int]:
  try:
    width, height = (int(v) for v in text.lower().split("x"))
  except ValueError:
    raise flags.ValidationError(f"--size={text!r} is not WIDTHxHEIGHT, e.g. 160x120") from None
  return width, height


def main(argv):
  del argv
  synthetic.make_synthetic_dataset(_LAYOUT.value, _ROOT.value, num_sequences=_NUM_SEQUENCES.value,
                                   num_frames=_NUM_FRAMES.value, size=_parse_size(_SIZE.value),
                                   seed=_SEED.value)


if __name__ == "__main__":
  cli.run(main)
