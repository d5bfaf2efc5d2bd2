"""Training datasets packed into tensorflow-datasets `array_record` files, read back without TensorFlow.

Millions of small JPEGs are slow to list and open on GCS or a TPU host's network disk; a packed dataset is
a few large files with random access. Build one per training name from its native root:

    python scripts/build_tfds.py --dataset GOT10K_vottrain --root /data/got10k --data-dir /data/tfds

which writes `<data_dir>/tracking_frames/<config>/1.0.0/` (`<config>` is the name lower-cased, see
`config_name`), then read it where `build_train_datasets` would be used:

    datasets = open_packed_datasets(["GOT10K_vottrain", "LASOT"], "/data/tfds")
    seq = datasets[0].sequence(0)   # TrainSequence whose frames are PackedFrame references

What is stored (builder `TrackingFrames`, one `BuilderConfig` per name of `datasets.TRAIN_NAMES`):
- split `train`, one record per frame, in (sequence, frame) order: frame k of sequence i is record
  `first_record[i] + k`. Features: `image` (the image file's bytes as stored on disk, not re-encoded),
  `box` [4] float32 x, y, w, h, `visible`, `valid`, `sequence` (the sequence that wrote the record) and
  `frame` (its index in that sequence). An image dataset (COCO) holds one record per image file: the
  objects of one image share its record, which holds the box of the first of them.
- `sequences.npz` beside the record files (SEQUENCES_FILE): the sequence table, so a reader has every
  sequence's name, class, boxes, valid and visible flags without scanning the records. Arrays: `names`
  [S] str, `classes` [C] str and `seq_class` [S] int32 (-1: none), `frame_offsets` [S + 1] int64 (sequence
  i's frames are rows frame_offsets[i]:frame_offsets[i + 1] of the next three), `boxes` [F, 4] float32,
  `valid` [F] bool, `visible` [F] bool, `first_record` [S] int64, `num_records`, `is_video`, the reader's
  `skipped_names`/`skipped_reasons`, `unreadable_frames` (frames whose file could not be read when packing:
  stored empty, so training counts them as unreadable images, as it would have on the native root), and
  provenance (`train_name`, `root`, `table_format`).

Atomicity: tfds writes everything into `<version>.incomplete...` and renames it to `<version>` only after
the records and `dataset_info.json` are written; `sequences.npz` is written into that temporary folder
after the records (itself through a temporary name), so a crash leaves no folder that looks complete.

The sequences are exactly `datasets.build_train_dataset(name, root)`'s: same order, names, classes, boxes,
valid and visible flags, and skipped sequences.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import io
import logging
import math
import os
import tempfile
import uuid
from typing import Iterator, Sequence

from google.protobuf import message as protobuf_message
import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core.data_sources import base as tfds_data_sources
from tensorflow_datasets.proto import tf_example_pb2
from etils import epath

from data_pipelines import paths
from data_pipelines.training import datasets
from data_pipelines.training import remote_records
from data_pipelines.training.datasets import DatasetError
from data_pipelines.training.datasets import TrainSequence

__all__ = ["BUILDER_NAME", "DatasetError", "PackedFrame", "PackedTrainDataset", "SEQUENCES_FILE",
           "TrackingFrames", "build_with_tfds", "config_name", "frame_records", "open_packed_datasets",
           "pack_train_dataset", "packed_path", "record_key", "storage_failure"]

logger = logging.getLogger(__name__)

BUILDER_NAME = "tracking_frames"
DATASET_VERSION = "1.0.0"
SPLIT = "train"
SEQUENCES_FILE = "sequences.npz"
TABLE_FORMAT = 1
# tfds sorts the records by key before writing. Keys spread evenly over tfds' 128-bit key space keep the
# order and spread the records over its 1000 on-disk buckets, each sorted in memory on its own; small
# integer keys would all fall into bucket 0, which would then have to hold the whole dataset in memory.
_KEY_SPACE = 2 ** 128
_INCOMPLETE_PREFIX = "incomplete."  # tfds' temporary build folders (tfds.core.constants.INCOMPLETE_PREFIX)


def record_key(record: int, num_records: int) -> int:
  """The tfds example key of record `record` of `num_records`: increasing with the record, and spread
  evenly over tfds' key space (see _KEY_SPACE)."""
  return record * (_KEY_SPACE // max(num_records, 1))


def config_name(name: str) -> str:
  """The builder config of training name `name` (one of `datasets.TRAIN_NAMES`): `GOT10K_vottrain` ->
  `got10k_vottrain`."""
  if name not in datasets.TRAIN_NAMES:
    raise ValueError(f"unknown training dataset {name!r}; one of {', '.join(datasets.TRAIN_NAMES)}")
  return name.lower()


def packed_path(name: str, data_dir: str, builder: str = BUILDER_NAME,
                version: str = DATASET_VERSION) -> epath.Path:
  """The folder of training name `name`'s packed dataset under the tfds `data_dir` (`builder`: this module's
  frames, or `precropped`'s crops)."""
  return epath.Path(os.fspath(data_dir)) / builder / config_name(name) / version


@dataclasses.dataclass(eq=False)
class TrackingFramesConfig(tfds.core.BuilderConfig):
  """One training name of `datasets.TRAIN_NAMES`."""
  train_name: str = ""


class TrackingFrames(tfds.core.GeneratorBasedBuilder):
  """Frames of one training dataset, read from its native root by `datasets.build_train_dataset`.

  Building needs the root: `TrackingFrames(config=..., data_dir=..., root=ROOT, cache_dir=...)` or tfds'
  manual folder (`tfds build ... --manual_dir ROOT`). Reading needs neither.
  """

  VERSION = tfds.core.Version(DATASET_VERSION)
  RELEASE_NOTES = {
      DATASET_VERSION: "Frames as their stored image bytes with box, visible, valid, sequence and frame "
                       "index, in (sequence, frame) order; the sequence table in sequences.npz.",
  }
  BUILDER_CONFIGS = [
      TrackingFramesConfig(name=config_name(n), train_name=n,
                           description=f"The frames of training dataset {n}, packed from its native layout.")
      for n in datasets.TRAIN_NAMES
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = ("The dataset's native root folder (the one `datasets.build_train_dataset` "
                                  "reads), given as root= or as the manual folder.")

  def __init__(self, *, root: str | None = None, cache_dir: str | None = None, file_format=None,
               beam: bool = False, **kwargs):
    super().__init__(file_format=file_format or "array_record", **kwargs)
    self._root = root
    self._cache_dir = cache_dir
    # Make the split with a Beam pipeline, one shard a unit of work (beam_packing.py); the runner and its
    # options come with download_and_prepare's DownloadConfig(beam_options=...).
    self._beam = beam
    self._beam_unreadable: tuple[int, list[str]] | None = None  # the Beam build's unreadable frames, examples
    self._source: datasets.TrainDataset | None = None
    self._layout: tuple[np.ndarray, int] | None = None  # first_record [S], number of records
    self._unreadable: list[str] = []

  # tfds 4.9.10 finds a builder's folder through the `importlib_resources` backport, which it installs
  # only for Python < 3.9; this is the same file it falls back to.
  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(inspect.getfile(cls))

  def source_dataset(self, dl_manager=None) -> datasets.TrainDataset:
    """The native dataset to pack (read once, then kept): DatasetError names a bad root."""
    if self._source is None:
      root = self._root
      if root is None:
        if dl_manager is None:
          raise ValueError(f"{self.name}/{self.builder_config.name}: building needs root= or a manual folder")
        root = os.fspath(dl_manager.manual_dir)
      self._source = datasets.build_train_dataset(self.builder_config.train_name, root, self._cache_dir)
    return self._source

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.builder_config.description,
        features=tfds.features.FeaturesDict({
            # Raw bytes, decoded by the reader (cv2.imdecode): an Image feature would need TensorFlow to
            # write and would re-encode.
            "image": tfds.features.Tensor(shape=(), dtype=np.object_, doc="image file bytes as stored"),
            "box": tfds.features.Tensor(shape=(4,), dtype=np.float32, doc="x, y, w, h in pixels"),
            "visible": tfds.features.Scalar(dtype=np.bool_, doc="the target is visible"),
            "valid": tfds.features.Scalar(dtype=np.bool_, doc="the box is usable"),
            "sequence": tfds.features.Scalar(dtype=np.int64, doc="sequence index in sequences.npz"),
            "frame": tfds.features.Scalar(dtype=np.int64, doc="frame index in the sequence"),
        }),
        disable_shuffling=True,  # the records must stay in (sequence, frame) order
    )

  def _split_generators(self, dl_manager):
    source = self.source_dataset(dl_manager)
    first_record, owner, num_records = _record_layout(source)
    self._layout = (first_record, num_records)
    print(f"{source.name}: packing {len(source)} sequences, {source.num_frames} frames ({num_records} "
          f"records) from {source.root}", flush=True)
    if self._beam:
      return {SPLIT: self._beam_split(source, np.flatnonzero(owner == np.arange(len(source))), first_record,
                                      num_records)}
    return {SPLIT: self._generate_examples(source, first_record, owner, num_records)}

  def _sequence_work(self, source, first_record, num_records):
    from data_pipelines.training import beam_packing  # pylint: disable=g-import-not-at-top
    return beam_packing.SequenceWork(source.name, source.root, self._cache_dir, first_record, num_records,
                                     frame_records)

  def _beam_split(self, source, sequences, first_record, num_records):
    """What the Beam build of the split needs (`_generate_splits`): the workers' per-sequence work and the
    sequences `sequences` (those that write records)."""
    return self._sequence_work(source, np.asarray(first_record, np.int64), num_records), np.asarray(sequences)

  def _generate_splits(self, dl_manager, download_config):
    if not self._beam:
      return super()._generate_splits(dl_manager, download_config)
    # One shard a unit of Beam work, written by the worker that makes its records (beam_packing.write_split),
    # instead of tfds' BeamWriter, which sends every record through a shuffle to sort them back into order.
    from data_pipelines.training import beam_packing  # pylint: disable=g-import-not-at-top
    (split, (work, sequences)), = self._split_generators(dl_manager).items()
    info, count, examples = beam_packing.write_split(
        work, sequences, self._get_filename_template(split), self.info.features, self.info.file_format,
        download_config.beam_options, download_config.get_shard_config(), self.source_dataset())
    self._beam_unreadable = (count, examples)
    return [info]

  def _count_unreadable(self) -> int:
    """Frames that could not be read in this build (logged with a few examples)."""
    if self._beam_unreadable is not None:
      count, examples = self._beam_unreadable
    else:
      count, examples = len(self._unreadable), self._unreadable[:3]
    if count:
      logger.warning("%s: %d frames could not be read and are stored empty (e.g. %s)",
                     self.builder_config.train_name, count, "; ".join(examples[:3]))
    return count

  def _generate_examples(self, source, first_record, owner, num_records):
    for i in range(len(source)):
      if owner[i] != i:  # an image already packed for an earlier object
        continue
      for key, example, problem in frame_records(source.sequence(i), i, int(first_record[i]), num_records):
        if problem:
          self._unreadable.append(problem)
        yield key, example

  def _download_and_prepare(self, dl_manager, download_config=None):
    super()._download_and_prepare(dl_manager=dl_manager, download_config=download_config)
    first_record, num_records = self._layout
    # Last, into the temporary folder tfds renames when the whole build is done.
    _write_table(self.data_path / SEQUENCES_FILE, self.source_dataset(), first_record, num_records,
                 self._count_unreadable())


def _read_file(path: str) -> tuple[bytes, str | None]:
  """(the file's bytes, None), or (b"", why) when it cannot be read: such a frame is kept as an empty record,
  which training counts as an unreadable image and redraws, as it does on the native root. A failed request
  to a bucket is no unreadable frame: DatasetError, which fails the build (a Beam runner retries the
  sequence)."""
  try:
    return paths.read_bytes(path), None  # a root on a bucket: through etils.epath
  except OSError as e:
    if paths.is_storage_failure(path, e):
      raise storage_failure(path, e) from None
    return b"", f"{path}: {e}"


def storage_failure(path: str, error: OSError) -> DatasetError:
  """The error of a failed request for a frame on a bucket (`paths.is_storage_failure`)."""
  return DatasetError(f"{path}: cannot read the frame from its bucket ({error}); check this machine's access "
                      f"to it and run the command again")


def frame_records(seq: TrainSequence, index: int, first_record: int, num_records: int):
  """The records of sequence `index` (`seq`), whose first record is `first_record` of `num_records`: one
  (tfds key, example, None or why the frame could not be read) per frame. The unit of work of every build
  (this module's generator, a Beam worker: `beam_packing.py`)."""
  for k, path in enumerate(seq.frames):
    image, problem = _read_file(path)
    yield record_key(first_record + k, num_records), {
        "image": image, "box": np.asarray(seq.boxes[k], np.float32), "visible": bool(seq.visible[k]),
        "valid": bool(seq.valid[k]), "sequence": index, "frame": k}, problem


def _record_layout(source: datasets.TrainDataset) -> tuple[np.ndarray, np.ndarray, int]:
  """first_record [S] int64, owner [S] int64 (the sequence whose records sequence i reads: i itself for a
  video; for an image dataset, the first sequence with the same image file) and the number of records."""
  n = len(source)
  if source.is_video:
    lengths = np.array([len(source.sequence(i).frames) for i in range(n)], np.int64)
    first_record = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return first_record, np.arange(n, dtype=np.int64), int(lengths.sum())
  first_record = np.zeros(n, np.int64)
  owner = np.zeros(n, np.int64)
  seen: dict[tuple[str, ...], tuple[int, int]] = {}
  num_records = 0
  for i in range(n):
    frames = source.sequence(i).frames
    if frames not in seen:
      seen[frames] = (num_records, i)
      num_records += len(frames)
    first_record[i], owner[i] = seen[frames]
  return first_record, owner, num_records


def _write_table(path: epath.Path, source: datasets.TrainDataset, first_record: np.ndarray, num_records: int,
                 unreadable_frames: int, table_format: int = TABLE_FORMAT, **extra) -> None:
  names, object_classes, lengths, boxes, valid, visible = [], [], [], [], [], []
  for seq in source:  # one at a time: a sequence's frame paths are not kept
    names.append(seq.name)
    object_classes.append(seq.object_class)
    lengths.append(len(seq.boxes))
    boxes.append(np.asarray(seq.boxes, np.float32).reshape(-1, 4))
    valid.append(np.asarray(seq.valid, bool))
    visible.append(np.asarray(seq.visible, bool))
  classes = sorted({c for c in object_classes if c is not None})
  class_ids = {c: i for i, c in enumerate(classes)}
  skipped = source.skipped
  arrays = dict(
      table_format=np.int64(table_format), train_name=np.str_(source.name), root=np.str_(source.root),
      is_video=np.bool_(source.is_video), names=np.array(names, np.str_),
      classes=np.array(classes, np.str_).reshape(-1),
      seq_class=np.array([class_ids.get(c, -1) for c in object_classes], np.int32),
      frame_offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
      boxes=np.concatenate(boxes), valid=np.concatenate(valid), visible=np.concatenate(visible),
      first_record=np.asarray(first_record, np.int64), num_records=np.int64(num_records),
      skipped_names=np.array(list(skipped), np.str_).reshape(-1),
      skipped_reasons=np.array(list(skipped.values()), np.str_).reshape(-1),
      unreadable_frames=np.int64(unreadable_frames), **extra)
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  tmp = path.parent / (path.name + ".tmp")
  tmp.write_bytes(buffer.getvalue())
  tmp.replace(path)


def pack_train_dataset(name: str, root: str, data_dir: str, cache_dir: str | None = None,
                       beam_options=None) -> epath.Path:
  """Packs training name `name` from its native `root` into the tfds `data_dir` (the reader's index cache
  in `cache_dir` when given) and returns the packed folder. DatasetError (the reader's) for a bad root,
  before anything is written; an already built dataset is left as it is. With `beam_options` (Beam
  `PipelineOptions`, see `beam_packing.pipeline_options`) the records are made by that Beam pipeline, one
  shard of consecutive sequences a unit of work; they are the same records."""
  builder = TrackingFrames(config=config_name(name), data_dir=os.fspath(data_dir), root=os.fspath(root),
                           cache_dir=cache_dir, beam=beam_options is not None)
  return build_with_tfds(builder, name, data_dir, BUILDER_NAME, DATASET_VERSION, beam_options)


def build_with_tfds(builder: tfds.core.DatasetBuilder, name: str, data_dir: str, builder_name: str,
                    version: str, beam_options=None) -> epath.Path:
  """Runs `builder` (this module's or precropped's) into `data_dir` unless a complete set is there."""
  path = packed_path(name, data_dir, builder_name, version)
  if path.exists():
    missing = [f for f in (SEQUENCES_FILE, "dataset_info.json") if not (path / f).exists()]
    if missing:
      raise DatasetError(f"{path}: exists without {missing[0]}, so it is not a complete packed dataset; "
                         "delete it and pack again")
    print(f"{name}: already packed in {path}; delete that folder to pack again", flush=True)
    return path
  builder.source_dataset()  # a bad root fails here, before tfds makes any folder
  # Nothing is downloaded, but tfds would leave an empty downloads/ folder in data_dir.
  with tempfile.TemporaryDirectory(prefix=f"{builder_name}_downloads") as download_dir, \
       _finish_in_order_on_buckets():
    config = tfds.download.DownloadConfig(beam_options=beam_options)
    builder.download_and_prepare(download_dir=download_dir, download_config=config)
  if not (path / SEQUENCES_FILE).exists():
    raise DatasetError(f"{path}: tfds finished but {SEQUENCES_FILE} is missing")
  return path


def _move_in_order(source: epath.Path, target: epath.Path) -> None:
  """Moves the files of the build folder `source` into `target`, the records first, then `sequences.npz`,
  then `dataset_info.json`; not the temporary shard names a retried worker left (tfds' own rename would
  carry them over and delete them after)."""
  last = (SEQUENCES_FILE, "dataset_info.json")
  files = sorted((p for p in source.iterdir() if p.is_file() and not p.name.startswith(_INCOMPLETE_PREFIX)),
                 key=lambda p: (last.index(p.name) if p.name in last else -1, p.name))
  target.mkdir(parents=True, exist_ok=True)
  for file in files:
    file.replace(target / file.name)


@contextlib.contextmanager
def _finish_in_order_on_buckets():
  """While it lasts, tfds' temporary build folder on a bucket is finished file by file, the records first
  and `dataset_info.json` (what marks a finished set for every reader) last.

  tfds builds into `<version>.incomplete...` and renames that folder to `<version>`; on a bucket a folder
  rename is one object copy after another in name order (TensorFlow's GCS file system), which puts
  `dataset_info.json` in place before the shards, so a rename cut short would leave a set that looks finished
  (and the storage emulator refuses folder renames altogether). Local folders keep tfds' own rename."""
  tfds_incomplete_dir = tfds.core.utils.incomplete_dir

  @contextlib.contextmanager
  def incomplete_dir(dirname, permissions=None, overwrite=False):
    if not paths.is_remote(dirname):
      with tfds_incomplete_dir(dirname, permissions=permissions, overwrite=overwrite) as tmp:
        yield tmp
      return
    target = epath.Path(os.fspath(dirname))
    tmp = target.parent / f"{_INCOMPLETE_PREFIX}{uuid.uuid4().hex[:6].upper()}_{target.name}"
    tmp.mkdir(parents=True, exist_ok=True)
    try:
      yield os.fspath(tmp)
      if overwrite:
        target.rmtree(missing_ok=True)
      _move_in_order(tmp, target)
    finally:
      if tmp.exists():
        tmp.rmtree()

  tfds.core.utils.incomplete_dir = incomplete_dir
  try:
    yield
  finally:
    tfds.core.utils.incomplete_dir = tfds_incomplete_dir


class ExampleParser:
  """A record's tf.train.Example -> the dict tfds' `data_source` gives for it (`deserialize_example_np`: a
  scalar as a Python value, a fixed-shape tensor as a numpy array of its dtype), for features of fixed shape
  and no decoding step (this module's and `precropped`'s): ~0.1 ms of CPU a pre-cropped record against
  0.26 ms for tfds' generic parsing (docs/performance.md). `supports(features)` says whether a set's
  features are all of that kind; otherwise use tfds' own parsing."""

  def __init__(self, serialized_info: dict):
    self._specs = [(key, info.np_dtype, tuple(info.shape)) for key, info in serialized_info.items()]

  @classmethod
  def supports(cls, features) -> bool:
    """Whether `features` (a tfds FeaturesDict) is parsed exactly by this class: a flat dict of Tensor or
    Scalar features of fixed shape with bytes, integer, float or bool values."""
    if not isinstance(features, tfds.features.FeaturesDict):
      return False
    for key, feature in features.items():
      if type(feature) not in (tfds.features.Tensor, tfds.features.Scalar):
        return False
      info = feature.get_serialized_info()
      if info.shape is None or any(d is None or d < 0 for d in info.shape) or info.sequence_rank:
        return False
      if not (info.np_dtype == np.object_ or np.issubdtype(info.np_dtype, np.integer)
              or np.issubdtype(info.np_dtype, np.floating) or info.np_dtype == np.bool_):
        return False
    return True

  def __call__(self, serialized: bytes) -> dict:
    features = tf_example_pb2.Example.FromString(serialized).features.feature
    out = {}
    for key, dtype, shape in self._specs:
      feature = features[key]  # a missing key reads as an empty feature: caught by the size check below
      kind = feature.WhichOneof("kind")
      values = getattr(feature, kind).value if kind else ()
      if len(values) != (math.prod(shape) if shape else 1):
        raise ValueError(f"feature {key!r}: {len(values)} values, the set's features say shape {shape}")
      if not shape:
        out[key] = values[0] if dtype == np.object_ else np.array(values[0], dtype).item()
      else:
        out[key] = np.array(values, dtype).reshape(shape)
    return out


class _RecordSource:
  """The `train` split of one packed dataset, opened on first use in each process (a grain worker gets a
  pickled copy without the open files). Pickles to its path and size only."""

  def __init__(self, name: str, data_dir: str, num_records: int, builder: str = BUILDER_NAME,
               version: str = DATASET_VERSION):
    self.name = name
    self.data_dir = os.fspath(data_dir)
    self.num_records = num_records
    self.builder = builder
    self.version = version
    self._records = None
    self._parse = None
    self._pid = None

  @property
  def path(self) -> str:
    return os.fspath(packed_path(self.name, self.data_dir, self.builder, self.version))

  def __getstate__(self):
    return {"name": self.name, "data_dir": self.data_dir, "num_records": self.num_records,
            "builder": self.builder, "version": self.version}

  def __setstate__(self, state):
    self.__init__(**state)

  def _key(self):
    return self.name, self.data_dir, self.builder, self.version

  def __eq__(self, other):
    return isinstance(other, _RecordSource) and self._key() == other._key()

  def __hash__(self):
    return hash(self._key())

  def _open(self):
    if self._records is None or self._pid != os.getpid():
      records = tfds.data_source(f"{self.builder}/{config_name(self.name)}:{self.version}", split=SPLIT,
                                 data_dir=self.data_dir, download=False)
      if remote_records.is_gcs(self.data_dir):
        # On a bucket: closed byte ranges through tensorstore instead of array_record's open-ended reads.
        ranges = remote_records.RemoteArrayRecords(tfds_data_sources.file_instructions(records.dataset_info, SPLIT))
        if ranges.readable():
          records.data_source = ranges
        else:
          logger.warning("%s: not in the encoding read by byte ranges; array_record's reader reads it", self.path)
      if len(records) != self.num_records:
        raise DatasetError(f"{self.path}: {len(records)} records, {SEQUENCES_FILE} says {self.num_records}")
      features = records.dataset_info.features
      parse = ExampleParser(features.get_serialized_info()) if ExampleParser.supports(features) else None
      self._records, self._parse, self._pid = records, parse, os.getpid()
    return self._records

  def _parsed(self, serialized: bytes, index: int) -> dict:
    try:
      return self._parse(serialized)
    except (ValueError, protobuf_message.DecodeError) as e:
      raise DatasetError(f"{self.path}: record {index} does not parse as this set's examples ({e})") from e

  def record(self, index: int) -> dict:
    """Record `index` of the split: {"image": bytes, "box": [4] float32, "visible", "valid", "sequence",
    "frame"}."""
    records = self._open()
    if self._parse is None:
      return records[index]
    return self._parsed(records.data_source[index], index)

  def records(self, indices: Sequence[int]) -> list[dict]:
    """`record` of each of `indices`, in one call: array_record reads them in parallel in its C++ reader,
    without the GIL; on a bucket `remote_records` requests their byte ranges together (one storage request
    per record, none of them a Python thread's)."""
    records, indices = self._open(), list(indices)
    if self._parse is None:
      return list(records.__getitems__(indices))
    serialized = records.data_source.__getitems__(indices)
    if len(serialized) != len(indices):
      raise DatasetError(f"{self.path}: asked for {len(indices)} records, the reader gave {len(serialized)}")
    return [self._parsed(data, i) for data, i in zip(serialized, indices)]


@dataclasses.dataclass(frozen=True, slots=True)
class PackedFrame:
  """A frame of a packed dataset: `read_bytes()` gives its stored image file bytes. Small and picklable."""
  source: _RecordSource
  record: int  # index in the `train` split
  sequence: int  # the sequence that wrote the record
  frame: int  # the frame's index in that sequence
  label: str  # "<training name>/<sequence name>", for messages
  # The record, when already read (`with_record`; `pipeline.read_images` reads a sample's frames together).
  prefetched: dict | None = dataclasses.field(default=None, compare=False, repr=False)

  @property
  def name(self) -> str:
    return f"{self.label} frame {self.frame} ({self.source.path} record {self.record})"

  @property
  def record_index(self) -> int:
    """The record that reading this frame reads: `record` (a pre-cropped frame's depends on its crops)."""
    return self.record

  def with_record(self, record: dict) -> "PackedFrame":
    """This frame holding its record `record` (record `record_index`, as `source.records` read it), so
    that reading it sends no request of its own."""
    return dataclasses.replace(self, prefetched=record)

  def check_record(self, record: dict, index: int) -> None:
    """DatasetError when `record`, read as record `index`, is another frame's (records out of the table's
    order)."""
    if (int(record["sequence"]), int(record["frame"])) != (self.sequence, self.frame):
      raise DatasetError(f"{self.source.path}: record {index} holds sequence {int(record['sequence'])} "
                         f"frame {int(record['frame'])}, {SEQUENCES_FILE} says sequence {self.sequence} frame "
                         f"{self.frame}: the records are not in the table's order")

  def checked_record(self) -> dict:
    """This frame's record (`record_index`), refused when it is not this frame's (`check_record`)."""
    index = self.record_index
    record = self.source.record(index) if self.prefetched is None else self.prefetched
    self.check_record(record, index)
    return record

  def read_bytes(self) -> bytes:
    return self.checked_record()["image"]


def _load_table(path: epath.Path, table_format: int = TABLE_FORMAT) -> dict[str, np.ndarray]:
  table_path = path / SEQUENCES_FILE
  try:
    data = table_path.read_bytes()
  except FileNotFoundError:
    raise DatasetError(f"{path}: no {SEQUENCES_FILE}: not a packed dataset, or one left unfinished") from None
  try:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
      table = {k: npz[k] for k in npz.files}
  except (ValueError, OSError) as e:
    raise DatasetError(f"{table_path}: unreadable sequence table ({e})") from e
  if int(table.get("table_format", -1)) != table_format:
    raise DatasetError(f"{table_path}: table_format {table.get('table_format')}, this reader reads "
                       f"{table_format}")
  return table


class PackedTrainDataset:
  """A packed training dataset with `datasets.TrainDataset`'s interface (`name`, `len`, `sequence(i)`,
  `is_video`, `skipped`); its sequences' frames are `PackedFrame`s, which `pipeline.read_image` reads.
  Opening reads only `sequences.npz`; the records are opened on the first frame read, in each process.
  No TensorFlow is imported."""

  BUILDER = BUILDER_NAME
  VERSION = DATASET_VERSION
  TABLE_FORMAT = TABLE_FORMAT
  FRAME = PackedFrame
  RECORDS_PER_FRAME = 1  # the records of a sequence's frame k start at its first record + k * this
  BUILD_FLAGS = ""  # what build_tfds.py needs besides --dataset, --root and --data-dir

  def __init__(self, name: str, data_dir: str):
    self.name = name
    self.data_dir = os.fspath(data_dir)
    path = packed_path(name, self.data_dir, self.BUILDER, self.VERSION)
    if not (path / "dataset_info.json").exists():
      raise DatasetError(self._not_built(path))
    table = _load_table(path, self.TABLE_FORMAT)
    if str(table["train_name"]) != name:
      raise DatasetError(f"{path / SEQUENCES_FILE}: holds {table['train_name']}, not {name}")
    self._check_table(path, table)
    self.root = str(table["root"])  # where it was packed from
    self.is_video = bool(table["is_video"])
    self.skipped = dict(zip(table["skipped_names"].tolist(), table["skipped_reasons"].tolist()))
    self.unreadable_frames = int(table["unreadable_frames"])
    self._names = table["names"]
    self._classes = table["classes"].tolist()
    self._seq_class = table["seq_class"]
    self._offsets = table["frame_offsets"]
    self._boxes, self._valid, self._visible = table["boxes"], table["valid"], table["visible"]
    self._first_record = table["first_record"]
    n = len(self._names)
    if not (len(self._offsets) == n + 1 and len(self._first_record) == n == len(self._seq_class)
            and len(self._boxes) == len(self._valid) == len(self._visible) == self._offsets[-1]):
      raise DatasetError(f"{path / SEQUENCES_FILE}: arrays of inconsistent lengths")
    # The sequence that wrote each sequence's records: itself, but for an image shared by several objects.
    if self.is_video:
      self._owner = np.arange(n, dtype=np.int64)
    else:
      _, first, inverse = np.unique(self._first_record, return_index=True, return_inverse=True)
      self._owner = first[inverse.reshape(-1)]
    for array in (self._boxes, self._valid, self._visible):
      array.flags.writeable = False  # sequences hand out views
    self._source = _RecordSource(name, self.data_dir, int(table["num_records"]), self.BUILDER, self.VERSION)

  def _not_built(self, path: epath.Path) -> str:
    """The one line saying that this set is not at `path` and how to build it (subclasses may say more)."""
    return (f"{self.data_dir}: no packed {self.name} dataset (no {path}/dataset_info.json); build it with: python "
            f"scripts/build_tfds.py --dataset {self.name} --root ROOT --data-dir {self.data_dir}{self.BUILD_FLAGS}")

  def _check_table(self, path: epath.Path, table: dict[str, np.ndarray]) -> None:
    """Subclasses refuse a table built for other settings (DatasetError)."""

  def __len__(self) -> int:
    return len(self._names)

  @property
  def num_frames(self) -> int:
    return int(self._offsets[-1])

  @property
  def names(self) -> list[str]:
    return self._names.tolist()

  def sequence(self, index: int) -> TrainSequence:
    n = len(self)
    if not -n <= index < n:
      raise IndexError(f"{self.name} has {n} sequences, asked for {index}")
    i = int(index) % n
    start, stop = int(self._offsets[i]), int(self._offsets[i + 1])
    name = str(self._names[i])
    label = f"{self.name}/{name}"
    first, owner = int(self._first_record[i]), int(self._owner[i])
    frames = tuple(self.FRAME(self._source, first + k * self.RECORDS_PER_FRAME, owner, k, label)
                   for k in range(stop - start))
    class_id = int(self._seq_class[i])
    return TrainSequence(dataset=self.name, name=name, frames=frames, boxes=self._boxes[start:stop],
                         valid=self._valid[start:stop], visible=self._visible[start:stop],
                         is_video=self.is_video, object_class=self._classes[class_id] if class_id >= 0 else None)

  def __iter__(self) -> Iterator[TrainSequence]:
    return (self.sequence(i) for i in range(len(self)))

  def __repr__(self) -> str:
    return (f"{type(self).__name__}({self.name!r}, data_dir={self.data_dir!r}, {len(self)} sequences, "
            f"{self.num_frames} frames)")


def open_packed_datasets(names: Sequence[str], data_dir: str) -> list[PackedTrainDataset]:
  """One packed dataset per training name, in order, from the tfds `data_dir` (`build_train_datasets`'
  counterpart); DatasetError naming the data_dir and the name when one is not built."""
  return [PackedTrainDataset(name, data_dir) for name in names]
