"""Packing a training set with Apache Beam: the builders of `packed.py` (frames) and `precropped.py` (crops)
with `beam=True` make their `train` split as a Beam transform, one sequence a unit of work, so a runner
spreads the sequences over its workers (the DirectRunner's processes here; Dataflow, Flink or Spark
unchanged):

    python scripts/build_tfds.py --beam --dataset LASOT --root /data/lasot --data-dir /data/tfds \
        [--format crops] [--beam_pipeline_options "runner=DirectRunner,direct_num_workers=16"]

What a worker does per sequence is what the single-process build does (`packed.frame_records`,
`precropped.crop_records`: read, cut windows, encode), under the same tfds keys, so the records are the same
record by record; tfds' BeamWriter sorts them into shards by key (the builders disable shuffling).

- Workers rebuild the native dataset from (training name, root, index cache) once each (`DoFn.setup`), so the
  root and --cache-dir must be visible to every worker under the same path: a local folder for the
  DirectRunner; a bucket (`gs://...`, read through etils.epath) or a shared mount on a cluster. With
  `--cache-dir gs://...` the workers read the index the launcher wrote instead of each scanning the root. The
  pipeline itself carries only sequence indices and the record layout.
- Shards: tfds writes each through `ExampleWriter.write(temporary name)`, then renames it to its final name;
  array_record writes local files only, so `BucketExampleWriter` writes a shard to a worker-local temporary
  file and copies it through etils.epath to the temporary name on a bucket. A bundle the runner retries
  writes a new temporary name and renames it over the same shard: no duplicate, nothing half-written (tfds
  deletes the temporary names a dead attempt left when the build ends).
- Records: Beam commits a bundle's outputs only when the bundle succeeds, so a worker that dies in the
  middle of a sequence leaves none of its records; tfds' writer refuses two records with one key.
- Frames that cannot be read are stored empty, as in the single-process build; the workers send their
  descriptions to one combine whose total `count_unreadable` writes beside the records (the builder moves
  it into `sequences.npz`'s `unreadable_frames`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import uuid
from typing import Callable, Sequence

import apache_beam as beam
import numpy as np
from etils import epath
from tensorflow_datasets.core import file_adapters
from tensorflow_datasets.core import writer as tfds_writer

from data_pipelines import paths
from data_pipelines.training import datasets

__all__ = ["BucketExampleWriter", "PackSequences", "SequenceWork", "UNREADABLE_FILE", "pipeline_options",
           "read_unreadable", "runs_here"]

UNREADABLE_FILE = "unreadable_frames.json"
_UNREADABLE = "unreadable"
_EXAMPLES_KEPT = 5  # descriptions of unreadable frames kept for the log


def pipeline_options(text: str | None, num_workers: int = 0):
  """Beam `PipelineOptions` of "name=value,name=value" (tfds build's --beam_pipeline_options spelling);
  without any: the local DirectRunner in `num_workers` processes (0: one per core)."""
  if text:
    flags = [f"--{option.strip()}" for option in text.split(",") if option.strip()]
  else:
    flags = ["--runner=DirectRunner", "--direct_running_mode=multi_processing",
             f"--direct_num_workers={num_workers or os.cpu_count() or 1}"]
  options = beam.options.pipeline_options.PipelineOptions(flags)
  if runs_here(options):
    # The DirectRunner's worker processes are fresh interpreters: they import this code from where this
    # process does (a remote runner gets it as a package instead, see docs/beam.md).
    code = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if code not in paths:
      os.environ["PYTHONPATH"] = os.pathsep.join([code] + [p for p in paths if p])
  return options


def runs_here(options) -> bool:
  """Whether the runner of `options` runs on this machine (a DirectRunner), whose disk its workers share."""
  runner = options.view_as(beam.options.pipeline_options.StandardOptions).runner
  return runner in (None, "DirectRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner")


@dataclasses.dataclass(frozen=True, eq=False)
class SequenceWork:
  """Everything a worker needs to make one sequence's records (small and picklable): the training name,
  its root and index cache (the worker rebuilds the native dataset from them), the record layout, and the
  builder's per-sequence function `make_records(seq, index, first_record, num_records)` yielding (tfds key,
  example, None or why the frame could not be read) (`packed.frame_records`, or `precropped.crop_records`
  with its window specs bound)."""
  train_name: str
  root: str
  cache_dir: str | None
  first_record: np.ndarray  # [S] int64
  num_records: int
  make_records: Callable

  def source(self) -> datasets.TrainDataset:
    source = datasets.build_train_dataset(self.train_name, self.root, self.cache_dir)
    if len(source) != len(self.first_record):
      raise datasets.DatasetError(f"{self.root}: a worker reads {len(source)} {self.train_name} sequences, the "
                                  f"build planned {len(self.first_record)}: the root changed during the build")
    return source

  def records(self, source: datasets.TrainDataset, index: int):
    """(tfds key, example, None or why the frame could not be read) for each frame of sequence `index`."""
    return self.make_records(source.sequence(index), index, int(self.first_record[index]), self.num_records)


class _PackSequence(beam.DoFn):
  """Sequence index -> its records; descriptions of unreadable frames to the `_UNREADABLE` output."""

  def __init__(self, work: SequenceWork):
    self._work = work
    self._source = None

  def setup(self):
    self._source = self._work.source()

  def process(self, index: int):
    for key, example, problem in self._work.records(self._source, int(index)):
      if problem:
        yield beam.pvalue.TaggedOutput(_UNREADABLE, problem)
      yield key, example


class _CountProblems(beam.CombineFn):
  """(count, the first `_EXAMPLES_KEPT` descriptions in sorted order): the same whatever the bundles."""

  def create_accumulator(self):
    return 0, []

  def add_input(self, accumulator, problem):
    count, examples = accumulator
    return count + 1, sorted(examples + [problem])[:_EXAMPLES_KEPT]

  def merge_accumulators(self, accumulators):
    count, examples = 0, []
    for c, e in accumulators:
      count += c
      examples = sorted(examples + list(e))[:_EXAMPLES_KEPT]
    return count, examples

  def extract_output(self, accumulator):
    return accumulator


def _write_json(value, path: str) -> None:
  """Writes `value` through a temporary name (a retried bundle rewrites the same file)."""
  path = epath.Path(path)
  tmp = path.parent / f".tmp_{uuid.uuid4().hex}_{path.name}"
  tmp.write_text(json.dumps({"count": value[0], "examples": value[1]}))
  tmp.replace(path)


class PackSequences(beam.PTransform):
  """The records of the sequences `sequences` (indices), one unit of work each, as (key, example); writes the
  count of unreadable frames to `unreadable_path` (JSON {"count", "examples"})."""

  def __init__(self, work: SequenceWork, sequences: Sequence[int], unreadable_path: str):
    super().__init__()
    self._work = work
    self._sequences = [int(i) for i in sequences]
    self._unreadable_path = os.fspath(unreadable_path)

  def expand(self, pipeline):
    outputs = (pipeline
               | "Sequences" >> beam.Create(self._sequences)
               # Create's elements would otherwise stay in the bundles it made them in: one per worker.
               | "Spread" >> beam.Reshuffle()
               | "Pack" >> beam.ParDo(_PackSequence(self._work)).with_outputs(_UNREADABLE, main="records"))
    _ = (outputs[_UNREADABLE]
         | "CountUnreadable" >> beam.CombineGlobally(_CountProblems())
         | "WriteUnreadable" >> beam.Map(_write_json, self._unreadable_path))
    return outputs.records


def read_unreadable(path: epath.Path) -> tuple[int, list[str]]:
  """(count, examples) written by `PackSequences`, and deletes the file."""
  value = json.loads(path.read_text())
  path.unlink()
  return int(value["count"]), list(value["examples"])


class BucketExampleWriter(tfds_writer.ExampleWriter):
  """tfds' ExampleWriter, which also writes a shard to a bucket: array_record's writer makes local files
  only, so the shard is written to a local temporary file and copied through etils.epath to `path` (the
  temporary name tfds renames to the shard's name once it is complete)."""

  def write(self, path, examples):
    if not paths.is_remote(path):
      return super().write(path, examples)
    adapter = file_adapters.ADAPTER_FOR_FORMAT[self.file_format]
    with tempfile.TemporaryDirectory(prefix="fartrack_shard_") as folder:
      local = os.path.join(folder, epath.Path(path).name)
      positions = adapter.write_examples(local, examples)
      epath.Path(local).copy(epath.Path(path), overwrite=True)
    return positions
