r"""Packs one training dataset from its native root into tensorflow-datasets `array_record` files.

  python scripts/build_tfds.py --dataset GOT10K_vottrain --root /data/got10k --data-dir /data/tfds \
      [--cache-dir /data/index_cache] [--format frames|crops] [--config configs/fartrack.py:variant=tiny] \
      [--num-workers N]

--format frames (default) stores every frame's image file as it is (`packed.py`); --format crops stores
every frame cut into small JPEG windows around its target at the resolution the stage 1/2 crops of
--config need (`precropped.py`: the accelerator data path, `--config.run.data_path=precropped`), cut in
--num-workers processes; tfds shows a progress bar over the frames.

--dataset is one of the training names (`data_pipelines.training.datasets.TRAIN_NAMES`: GOT10K_vottrain,
LASOT, TRACKINGNET, COCO17, ...); --root is the folder `build_train_dataset` reads for it, local or on a bucket
(gs://BUCKET/lasot: listed and read through etils.epath, its index cached in --cache-dir or, without it, in
~/.cache/fartrack_jax/index_cache; see docs/beam.md). The result is
`<data-dir>/tracking_frames/<dataset, lower-cased>/1.0.0/`, read back by
`data_pipelines.training.packed.open_packed_datasets(names, data_dir)` without TensorFlow. A bad root fails
with the reader's error before anything is written; tfds writes into a temporary folder renamed when the
build is complete, so an interrupted build leaves nothing that reads as a dataset. A dataset already built
in --data-dir is left as it is. See `data_pipelines/training/packed.py` for what is stored.

--data-dir gs://BUCKET/tfds (a TPU slice's shared copy): array_record writes local files only (its writer
is riegeli's FdWriter; only its reader has a GCS client), and tfds writes every shard through it, so the set
is built in --scratch-dir on this machine and then copied into the bucket through etils.epath, shards
first and `dataset_info.json` (what marks a finished set for every reader) last. An interrupted copy leaves
no `dataset_info.json`, so nothing that reads as a dataset; running the same command again keeps the local
build and the shards already in the bucket (same name and size) and copies the rest. The local build is
deleted once the copy is complete. See docs/buckets.md.

--beam makes the records with Apache Beam (`pip install -r requirements-beam.txt`), one shard (a run of
consecutive sequences) a unit of work: by default the local DirectRunner in --num-workers processes (0: one
per core), or any runner through --beam_pipeline_options
"runner=DataflowRunner,project=...,region=...,temp_location=gs://...". The records are the same, in the same
order, as without it. Each worker writes its shard itself, into a bucket too (no --scratch-dir): through a
local temporary file copied under a temporary name, renamed once complete; the finished set is then moved
into place file by file, `dataset_info.json` last. See docs/beam.md.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # pylint: disable=g-import-not-at-top

from data_pipelines.training import datasets
from fartrack_jax import cli

_DATASET = flags.DEFINE_enum("dataset", None, list(datasets.TRAIN_NAMES), "Training dataset to pack.",
                             required=True)
_ROOT = flags.DEFINE_string("root", None, "The dataset's native root folder (as build_train_dataset reads it): "
                            "local, or on a bucket (gs://BUCKET/got10k), read through etils.epath.", required=True)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "tfds data folder to write the packed dataset into.",
                                required=True)
_CACHE_DIR = flags.DEFINE_string("cache_dir", None, "Folder of the reader's index cache (optional; saves "
                                 "scanning the root again). May be a bucket (what a remote Beam runner's workers "
                                 "read). A --root on a bucket without it: ~/.cache/fartrack_jax/index_cache.")
_FORMAT = flags.DEFINE_enum("format", "frames", ["frames", "crops"], "frames: the image files as they are "
                            "(any stage, crops exact); crops: pre-cut windows for the stage 1/2 crops of --config "
                            "(run.data_path=precropped).")
_CONFIG = flags.DEFINE_string("config", "configs/fartrack.py:variant=tiny", "--format crops: the config whose "
                              "data.template / data.search crops the windows serve, as train.py's --config "
                              "(configs/<stage>.py[:arguments]).")
_NUM_WORKERS = flags.DEFINE_integer("num_workers", 0, "--format crops: processes that decode and cut the "
                                    "frames (0: this one); --beam without --beam_pipeline_options: the "
                                    "DirectRunner's worker processes (0: one per core).")
_BEAM = flags.DEFINE_bool("beam", False, "Make the records with Apache Beam, one shard of consecutive "
                          "sequences a unit of work (the same records; needs pip install -r "
                          "requirements-beam.txt). See docs/beam.md.")
_BEAM_OPTIONS = flags.DEFINE_string("beam_pipeline_options", None, "--beam: Beam pipeline options as "
                                    "name=value,name=value (tfds build's spelling), e.g. runner=DataflowRunner,"
                                    "project=P,region=R,temp_location=gs://B/tmp,extra_packages=dist/<wheel>; default: "
                                    "runner=DirectRunner,direct_running_mode=multi_processing,"
                                    "direct_num_workers=<--num_workers, 0: one per core>.")
_SCRATCH_DIR = flags.DEFINE_string("scratch_dir", "~/.cache/fartrack_jax/tfds_scratch", "--data-dir gs://...: "
                                   "local folder the set is built in before it is copied into the bucket (needs "
                                   "the set's size free; kept until the copy is complete, so a second run "
                                   "resumes the copy).")
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


def _scratch_for(data_dir: str) -> str:
  """The local build folder of a bucket --data-dir: the same for every run with that --data-dir."""
  import hashlib  # pylint: disable=g-import-not-at-top
  digest = hashlib.sha256(data_dir.rstrip("/").encode()).hexdigest()[:12]
  return os.path.join(os.path.expanduser(_SCRATCH_DIR.value), digest)


def _beam_options():
  """The Beam pipeline options of --beam_pipeline_options, or None without --beam; exits with one line when
  Apache Beam is not installed."""
  if not _BEAM.value:
    return None
  try:
    from data_pipelines.training import beam_packing  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    if (e.name or "").split(".")[0] != "apache_beam":
      raise
    sys.exit("error: --beam needs Apache Beam, which is not installed: pip install -r requirements-beam.txt")
  from fartrack_jax import storage  # pylint: disable=g-import-not-at-top
  options = beam_packing.pipeline_options(_BEAM_OPTIONS.value, _NUM_WORKERS.value)
  if not beam_packing.runs_here(options) and not storage.is_remote(_DATA_DIR.value):
    sys.exit(f"error: --data-dir {_DATA_DIR.value} is a local folder, which the workers of "
             f"--beam_pipeline_options {_BEAM_OPTIONS.value!r} cannot write: give a bucket (--data-dir gs://...)")
  return options


def _pack(data_dir: str, beam_options=None):
  """Builds the set into `data_dir` (a local folder; with Beam, a bucket too); returns (its folder, the
  opened dataset)."""
  from data_pipelines.training import packed  # pylint: disable=g-import-not-at-top
  if _FORMAT.value == "crops":
    from data_pipelines.training import precropped, processing  # pylint: disable=g-import-not-at-top
    crops = processing.FrameProcessing.from_config(_crop_config(_CONFIG.value))
    path = precropped.pack_precropped_dataset(_DATASET.value, _ROOT.value, data_dir, crops, _CACHE_DIR.value,
                                              _NUM_WORKERS.value, oversample=_OVERSAMPLE.value,
                                              beam_options=beam_options)
  else:
    path = packed.pack_train_dataset(_DATASET.value, _ROOT.value, data_dir, _CACHE_DIR.value,
                                     beam_options=beam_options)
  return _open(data_dir, path)


def _pack_into_bucket(data_dir: str):
  """Builds in the scratch folder, then copies the finished set into the bucket `data_dir`, the shards
  first and `dataset_info.json` last; returns (the bucket folder, the dataset opened there)."""
  import shutil  # pylint: disable=g-import-not-at-top
  from data_pipelines.training import packed, precropped  # pylint: disable=g-import-not-at-top
  from fartrack_jax import storage  # pylint: disable=g-import-not-at-top
  builder, version = ((precropped.BUILDER_NAME, precropped.DATASET_VERSION) if _FORMAT.value == "crops"
                      else (packed.BUILDER_NAME, packed.DATASET_VERSION))
  target = packed.packed_path(_DATASET.value, data_dir, builder, version)
  if (target / "dataset_info.json").exists():
    print(f"{_DATASET.value}: already packed in {target}; delete that folder to pack again", flush=True)
  else:
    storage.check_writable(data_dir, "--data-dir")
    scratch = _scratch_for(data_dir)
    local, _ = _pack(scratch)
    copied, kept = storage.upload_tree(local, target, last=(packed.SEQUENCES_FILE, "dataset_info.json"))
    print(f"{_DATASET.value}: copied {copied} files into {target}"
          + (f" ({kept} already there from an earlier run)" if kept else ""), flush=True)
    shutil.rmtree(scratch, ignore_errors=True)
  return _open(data_dir, target)


def _open(data_dir: str, path):
  """(path, the set opened from `data_dir`, as training opens it)."""
  from data_pipelines.training import packed  # pylint: disable=g-import-not-at-top
  if _FORMAT.value == "crops":
    from data_pipelines.training import precropped, processing  # pylint: disable=g-import-not-at-top
    crops = processing.FrameProcessing.from_config(_crop_config(_CONFIG.value))
    return path, precropped.PrecroppedTrainDataset(_DATASET.value, data_dir, crops.template, crops.search,
                                                   _CONFIG.value)
  return path, packed.PackedTrainDataset(_DATASET.value, data_dir)


def main(argv):
  del argv
  from fartrack_jax import storage  # pylint: disable=g-import-not-at-top
  beam_options = _beam_options()
  try:
    if beam_options is not None:  # the workers write where they are told, a bucket included
      if storage.is_remote(_DATA_DIR.value):
        storage.check_writable(_DATA_DIR.value, "--data-dir")
      path, dataset = _pack(_DATA_DIR.value, beam_options)
    elif storage.is_remote(_DATA_DIR.value):
      path, dataset = _pack_into_bucket(_DATA_DIR.value)
    else:
      path, dataset = _pack(_DATA_DIR.value, beam_options)
  except (datasets.DatasetError, storage.StorageError) as e:
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
