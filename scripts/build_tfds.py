r"""Packs one training dataset from its native root into tensorflow-datasets `array_record` files.

  python scripts/build_tfds.py --dataset GOT10K_vottrain --root /data/got10k --data-dir /data/tfds \
      [--cache-dir /data/index_cache] [--format frames|crops] [--config configs/fartrack.py:variant=tiny] \
      [--num-workers N]

--format frames (default) stores every frame's image file as it is (`packed.py`); --format crops stores
every frame cut into small JPEG windows around its target at the resolution the stage 1/2 crops of
--config need (`precropped.py`: the accelerator data path, `--config.run.data_path=precropped`), cut in
--num-workers processes; tfds shows a progress bar over the frames.

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
_FORMAT = flags.DEFINE_enum("format", "frames", ["frames", "crops"], "frames: the image files as they are "
                            "(any stage, crops exact); crops: pre-cut windows for the stage 1/2 crops of --config "
                            "(run.data_path=precropped).")
_CONFIG = flags.DEFINE_string("config", "configs/fartrack.py:variant=tiny", "--format crops: the config whose "
                              "data.template / data.search crops the windows serve, as train.py's --config "
                              "(configs/<stage>.py[:arguments]).")
_NUM_WORKERS = flags.DEFINE_integer("num_workers", 0, "--format crops: processes that decode and cut the "
                                    "frames (0: this one).")
_OVERSAMPLE = flags.DEFINE_float("oversample", 1.0, "--format crops: store the windows this much finer than the "
                                 "crops need (>= 1): closer to the exact crops, for oversample^2 the decoding and "
                                 "storage.")


def _crop_config(text: str):
  """configs/<stage>.py[:arguments] -> that config (the same arguments train.py's --config takes)."""
  import importlib  # pylint: disable=g-import-not-at-top
  path, _, argument = text.partition(":")
  stem = os.path.splitext(os.path.basename(path))[0]
  if os.path.dirname(os.path.normpath(path)) not in ("configs", "") or stem.startswith("_"):
    raise SystemExit(f"error: --config={text!r}: expected configs/<stage>.py[:arguments]")
  try:
    module = importlib.import_module(f"configs.{stem}")
  except ModuleNotFoundError:
    raise SystemExit(f"error: --config={text!r}: no such config") from None
  return module.get_config(argument or None)


def main(argv):
  del argv
  from data_pipelines.training import packed  # pylint: disable=g-import-not-at-top
  try:
    if _FORMAT.value == "crops":
      from data_pipelines.training import precropped, processing  # pylint: disable=g-import-not-at-top
      crops = processing.FrameProcessing.from_config(_crop_config(_CONFIG.value))
      path = precropped.pack_precropped_dataset(_DATASET.value, _ROOT.value, _DATA_DIR.value, crops,
                                                _CACHE_DIR.value, _NUM_WORKERS.value,
                                                oversample=_OVERSAMPLE.value)
      dataset = precropped.PrecroppedTrainDataset(_DATASET.value, _DATA_DIR.value, crops.template, crops.search,
                                                  _CONFIG.value)
    else:
      path = packed.pack_train_dataset(_DATASET.value, _ROOT.value, _DATA_DIR.value, _CACHE_DIR.value)
      dataset = packed.PackedTrainDataset(_DATASET.value, _DATA_DIR.value)
  except datasets.DatasetError as e:
    sys.exit(f"error: {e}")
  size = sum(f.stat().length for f in path.iterdir())
  print(f"{_DATASET.value}: {len(dataset)} sequences, {dataset.num_frames} frames, {size / 2 ** 20:.1f} MiB "
        f"in {path}", flush=True)


if __name__ == "__main__":
  if any(arg in ("--help", "-h", "-?", "--helpshort") for arg in sys.argv[1:]):
    from absl import app  # pylint: disable=g-import-not-at-top
    app.usage(shorthelp=True, writeto_stdout=True)  # absl's own --help, which exits 1
    sys.exit(0)
  cli.run(main)
