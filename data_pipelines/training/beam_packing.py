"""Packing a training set with Apache Beam: the builders of `packed.py` (frames) and `precropped.py` (crops)
with `beam=True` make their `train` split with a Beam pipeline, one shard a unit of work, so a runner spreads
the shards over its workers (the DirectRunner's processes here; Dataflow, Flink or Spark unchanged):

    python scripts/build_tfds.py --beam --dataset LASOT --root /data/lasot --data-dir /data/tfds \
        [--format crops] [--beam_pipeline_options "runner=DirectRunner,direct_num_workers=16"]

- A shard is a run of consecutive sequences (`plan_shards`): as many shards as tfds' size rule gives for the
  set's estimated size (1,024 for a TB), and at least `MIN_SHARDS`, so TrackingNet's 30,000 sequences make
  over a thousand units. The worker of a shard makes its sequences' records with the function the
  single-process build runs (`packed.frame_records`, `precropped.crop_records`: read, cut windows, encode),
  encodes them with the builder's features and writes the shard itself, in record order: no record crosses
  between processes. (tfds' own Beam writer sends every record through a GroupByKey to sort them back into
  order: 9x the CPU of the single-process build per frame for the frames format, docs/beam.md.) The split's
  shard lengths and sizes come back to the launcher, which hands tfds the SplitInfo; tfds writes
  `dataset_info.json` as for any build.
- Workers rebuild the native dataset from (training name, root, index cache) once each (`DoFn.setup`), so the
  root and --cache-dir must be visible to every worker under the same path: a local folder for the
  DirectRunner; a bucket (`gs://...`, read through etils.epath) or a shared mount on a cluster. With
  `--cache-dir gs://...` the workers read the index the launcher wrote instead of each scanning the root. The
  pipeline itself carries only shard indices, the sequences of each and the record layout.
- Shards are written under a temporary name, then renamed to their own: array_record writes local files
  only, so `BucketExampleWriter` writes a shard to a worker-local file and copies it through etils.epath when
  the name is on a bucket. A shard whose worker dies is made again by the runner (Beam retries bundles) and
  renamed over the same name: no record twice, nothing half-written under a shard's name; the temporary names
  a dead attempt left are deleted when the pipeline ends. A shard that makes another number of records than
  planned (the root changed) fails the build.
- Frames that cannot be read are stored empty, as in the single-process build; each shard reports their count
  and a few descriptions, which end in `sequences.npz`'s `unreadable_frames` and the log.
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
from tensorflow_datasets.core import example_serializer
from tensorflow_datasets.core import file_adapters
from tensorflow_datasets.core import naming
from tensorflow_datasets.core import splits as split_info_lib
from tensorflow_datasets.core import writer as tfds_writer
from tensorflow_datasets.core.utils import shard_utils

from data_pipelines import paths
from data_pipelines.training import datasets

__all__ = ["BucketExampleWriter", "MIN_SHARDS", "SequenceWork", "ShardWork", "pipeline_options", "plan_shards",
           "runs_here", "write_split"]

# Units of work for the runner's workers when tfds' size rule gives fewer shards (a set under 64 MiB gets one).
MIN_SHARDS = 64
_EXAMPLES_KEPT = 5  # descriptions of unreadable frames kept for the log
# Shards and the results file are written under names with this prefix first: tfds' prefix of temporary build
# folders, which the move of a bucket build (`packed._move_in_order`) leaves behind.
_TEMPORARY_PREFIX = "incomplete."


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


def plan_shards(first_record: np.ndarray, sequences: Sequence[int], num_records: int,
                num_shards: int) -> list[list[int]]:
  """The sequences `sequences` (those that write records, increasing; sequence i's records start at
  `first_record[i]`) cut into at most `num_shards` runs of consecutive sequences of about equal records, none
  empty: the shards, in record order."""
  sequences = [int(i) for i in sequences]
  ends = [int(first_record[i]) for i in sequences[1:]] + [int(num_records)]
  target = num_records / max(int(num_shards), 1)
  shards, current = [], []
  for index, end in zip(sequences, ends):
    current.append(index)
    if end >= target * (len(shards) + 1) - 1e-9:
      shards.append(current)
      current = []
  if current:
    shards.append(current)
  return shards


@dataclasses.dataclass(frozen=True, eq=False)
class ShardWork:
  """One build's shards: the sequences of each (`plan_shards`), the records each must hold, where each goes
  (tfds' file name template of the split) and how records are encoded (the builder's features)."""
  work: SequenceWork
  shards: list[list[int]]
  shard_records: list[int]
  template: naming.ShardedFileTemplate
  features: object  # tfds FeaturesDict
  file_format: file_adapters.FileFormat

  def path(self, shard: int) -> epath.Path:
    return self.template.sharded_filepath(shard_index=shard, num_shards=len(self.shards))


class _WriteShard(beam.DoFn):
  """Shard index -> the shard written (its sequences' records, through a temporary name) and
  {"shard", "records", "bytes", "unreadable", "examples"}."""

  def __init__(self, shards: ShardWork):
    self._shards = shards
    self._source = None
    self._serializer = None

  def setup(self):
    self._source = self._shards.work.source()
    self._serializer = example_serializer.ExampleSerializer(self._shards.features.get_serialized_info())

  def process(self, shard: int):
    shards, work = self._shards, self._shards.work
    problems, written = [], {"records": 0, "bytes": 0, "key": -1}

    def serialized():
      for index in shards.shards[shard]:
        for key, example, problem in work.records(self._source, index):
          if problem:
            problems.append(problem)
          if key <= written["key"]:
            raise datasets.DatasetError(f"{work.root}: sequence {index} made record key {key} after "
                                        f"{written['key']}: the records are out of order")
          data = self._serializer.serialize_example(shards.features.encode_example(example))
          written["records"] += 1
          written["bytes"] += len(data)
          written["key"] = key
          yield key, data

    path = shards.path(shard)
    # Under a temporary name first, so that a shard's name never holds part of it; a retried or duplicate
    # attempt writes the same records and renames them over the same name.
    tmp = path.parent / f"{_TEMPORARY_PREFIX}{uuid.uuid4().hex}.{path.name}"
    BucketExampleWriter(shards.file_format).write(os.fspath(tmp), serialized())
    if written["records"] != shards.shard_records[shard]:
      tmp.unlink(missing_ok=True)
      raise datasets.DatasetError(f"{work.root}: shard {shard} made {written['records']} records, the build "
                                  f"planned {shards.shard_records[shard]}: the root changed during the build")
    tmp.replace(path)
    # Progress, in the worker's output (the DirectRunner's console; a remote runner's worker logs).
    print(f"{work.train_name}: shard {shard + 1} of {len(shards.shards)} written ({written['records']} records, "
          f"{len(problems)} unreadable)", flush=True)
    yield {"shard": int(shard), "records": written["records"], "bytes": written["bytes"],
           "unreadable": len(problems), "examples": sorted(problems)[:_EXAMPLES_KEPT]}


def _write_results(results: list, path: str) -> None:
  """The shards' results as JSON, through a temporary name (a retried bundle rewrites the same file)."""
  path = epath.Path(path)
  tmp = path.parent / f"{_TEMPORARY_PREFIX}{uuid.uuid4().hex}.{path.name}"
  tmp.write_text(json.dumps(sorted(results, key=lambda r: r["shard"])))
  tmp.replace(path)


def _record_bytes(work: SequenceWork, source: datasets.TrainDataset, sequences: Sequence[int], features,
                  samples: int = 8) -> float:
  """The mean serialized size of the first record of up to `samples` of `sequences`, spread over them."""
  serializer = example_serializer.ExampleSerializer(features.get_serialized_info())
  picks = sorted({int(sequences[k]) for k in np.linspace(0, len(sequences) - 1, min(samples, len(sequences)))
                  .round().astype(int)})
  sizes = []
  for index in picks:
    for _, example, _ in work.records(source, index):
      sizes.append(len(serializer.serialize_example(features.encode_example(example))))
      break
  return float(np.mean(sizes)) if sizes else 0.0


def write_split(work: SequenceWork, sequences: Sequence[int], template: naming.ShardedFileTemplate,
                features, file_format: file_adapters.FileFormat, beam_options,
                shard_config: shard_utils.ShardConfig, source: datasets.TrainDataset | None = None):
  """Makes the split of `work`'s records from the sequences `sequences` (those that write records) with the
  Beam pipeline of `beam_options`, one shard a unit of work: each worker makes its shard's sequences' records
  and writes the shard itself, so no record crosses between processes. Returns (tfds SplitInfo, the number of
  frames that could not be read, a few of their descriptions).

  The shards are runs of consecutive sequences: as many as tfds' size rule gives for the estimated size
  (`shard_config`; 1,024 for a TB), at least `MIN_SHARDS` when there are that many sequences, so the runner
  has units to spread; the records are in the same order as the single-process build's."""
  source = source or work.source()
  num_records = int(work.num_records)
  estimate = _record_bytes(work, source, sequences, features) * num_records
  num_shards = max(shard_config.get_number_shards(int(estimate), num_records), min(MIN_SHARDS, len(sequences)))
  shards = plan_shards(work.first_record, sequences, num_records, num_shards)
  bounds = [int(work.first_record[s[0]]) for s in shards] + [num_records]
  shard_work = ShardWork(work, shards, [b - a for a, b in zip(bounds, bounds[1:])], template, features,
                         file_format)
  folder = epath.Path(template.data_dir)
  results_path = folder / f"{_TEMPORARY_PREFIX}shards_{template.split}.json"
  print(f"{work.train_name}: {len(shards)} shards of about {num_records // len(shards)} records (~"
        f"{estimate / len(shards) / 2**20:.0f} MiB each), one a unit of Beam work", flush=True)
  with beam.Pipeline(options=beam_options) as pipeline:
    _ = (pipeline
         | "Shards" >> beam.Create(list(range(len(shards))))
         # Create's elements would otherwise stay in the bundles it made them in: one per worker.
         | "Spread" >> beam.Reshuffle()
         | "Write" >> beam.ParDo(_WriteShard(shard_work))
         | "Collect" >> beam.combiners.ToList()
         | "Save" >> beam.Map(_write_results, os.fspath(results_path)))
  results = {r["shard"]: r for r in json.loads(results_path.read_text())}
  for leftover in folder.iterdir():  # the results and what attempts that died left under temporary names
    if leftover.name.startswith(_TEMPORARY_PREFIX):
      leftover.unlink(missing_ok=True)
  missing = sorted(set(range(len(shards))) - set(results))
  if missing or [results[s]["records"] for s in range(len(shards))] != shard_work.shard_records:
    raise datasets.DatasetError(f"{folder}: the Beam build reported {len(results)} of {len(shards)} shards "
                                f"(missing {missing[:5]}) or other record counts than planned; run it again")
  info = split_info_lib.SplitInfo(name=template.split, shard_lengths=shard_work.shard_records,
                                  num_bytes=sum(r["bytes"] for r in results.values()), filename_template=template)
  count = sum(r["unreadable"] for r in results.values())
  examples = sorted(e for r in results.values() for e in r["examples"])[:_EXAMPLES_KEPT]
  return info, count, examples


class BucketExampleWriter(tfds_writer.ExampleWriter):
  """tfds' ExampleWriter, which also writes a shard to a bucket: array_record's writer makes local files
  only, so the shard is written to a local temporary file and copied through etils.epath to `path` (the
  temporary name that is renamed to the shard's name once the shard is complete)."""

  def write(self, path, examples):
    if not paths.is_remote(path):
      return super().write(path, examples)
    adapter = file_adapters.ADAPTER_FOR_FORMAT[self.file_format]
    with tempfile.TemporaryDirectory(prefix="fartrack_shard_") as folder:
      local = os.path.join(folder, epath.Path(path).name)
      positions = adapter.write_examples(local, examples)
      epath.Path(local).copy(epath.Path(path), overwrite=True)
    return positions
