r"""Packs one training dataset from its native root into tensorflow-datasets `array_record` files.

  python scripts/build_tfds.py --dataset GOT10K_vottrain --root /data/got10k --data-dir /data/tfds \
      [--cache-dir /data/index_cache]

--dataset is one of the training names (`data_pipelines.training.datasets.TRAIN_NAMES`: GOT10K_vottrain,
LASOT, TRACKINGNET, COCO17, ...); --root is the folder `build_train_dataset` reads for it. The result is
`<data-dir>/tracking_frames/<dataset, lower-cased>/1.0.0/`, read back by
`data_pipelines.training.packed.open_packed_datasets(names, data_dir)` without TensorFlow. A bad root fails
with the reader's error before anything is written; tfds writes into a temporary folder renamed when the
build is complete, so an interrupted build leaves nothing that reads as a dataset. A dataset already built
in --data-dir is left as it is. See `data_pipelines/training/packed.py` for what is stored.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # pylint: disable=g-import-not-at-top

from data_pipelines.training import datasets
from fartrack_jax import cli

_DATASET = flags.DEFINE_enum("dataset", None, list(datasets.TRAIN_NAMES), "Training dataset to pack.",
                             required=True)
_ROOT = flags.DEFINE_string("root", None, "The dataset's native root folder (as build_train_dataset reads it).",
                            required=True)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "tfds data folder to write the packed dataset into.",
                                required=True)
_CACHE_DIR = flags.DEFINE_string("cache_dir", None, "Folder of the reader's index cache (optional; saves "
                                 "scanning the root again).")


def main(argv):
  del argv
  from data_pipelines.training import packed  # pylint: disable=g-import-not-at-top
  try:
    path = packed.pack_train_dataset(_DATASET.value, _ROOT.value, _DATA_DIR.value, _CACHE_DIR.value)
  except datasets.DatasetError as e:
    sys.exit(f"error: {e}")
  dataset = packed.PackedTrainDataset(_DATASET.value, _DATA_DIR.value)
  size = sum(f.stat().length for f in path.iterdir())
  print(f"{_DATASET.value}: {len(dataset)} sequences, {dataset.num_frames} frames, {size / 2 ** 20:.1f} MiB "
        f"in {path}", flush=True)


if __name__ == "__main__":
  if any(arg in ("--help", "-h", "-?", "--helpshort") for arg in sys.argv[1:]):
    from absl import app  # pylint: disable=g-import-not-at-top
    app.usage(shorthelp=True, writeto_stdout=True)  # absl's own --help, which exits 1
    sys.exit(0)
  cli.run(main)
