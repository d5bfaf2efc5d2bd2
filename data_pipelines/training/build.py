"""The training inputs a config asks for: its datasets, and the per-index examples of its stage.

The trainer's input, in two calls (the trainer checks between them that every host opened the same data):

    datasets = open_datasets(config, "train", index_cache_dir)
    batches = input_pipeline(config, datasets, "train", per_process_batch, seed,
                             shard_index=jax.process_index(), shard_count=jax.process_count())

or piece by piece:

    datasets = train_datasets_from_config(config, {"got10k": ".../got10k", "lasot": ...}, cache_dir)
    if config.stage == "fartrack_sparse":
      it = iter(clips.clip_dataset(clip_examples_from_config(config, datasets, seed), batch_size, ...))
    else:
      it = iter(pipeline.frame_dataset(frame_examples_from_config(config, datasets, seed), batch_size, ...))
"""

from __future__ import annotations

from typing import Mapping, Sequence

from data_pipelines.training import clips
from data_pipelines.training import datasets as datasets_lib
from data_pipelines.training import pipeline
from data_pipelines.training import processing
from data_pipelines.training import sampler

SPLITS = ("train", "val")


def _split(split: str) -> str:
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  return split


def _ratios(config, datasets: Sequence[sampler.DatasetLike], split: str) -> tuple[float, ...]:
  ratios = tuple(float(r) for r in config.data[_split(split)].datasets_ratio)
  if len(ratios) != len(datasets):
    raise ValueError(f"data.{split}.datasets_ratio has {len(ratios)} entries for {len(datasets)} datasets "
                     f"({', '.join(d.name for d in datasets)})")
  return ratios


def train_datasets_from_config(config, roots: Mapping[str, str], cache_dir: str | None = None,
                               split: str = "train") -> list[datasets_lib.TrainDataset]:
  """The datasets named by `data.<split>.datasets_name`, in order; `roots` maps a name or its family
  (`got10k`, `lasot`, `trackingnet`, `coco`, `synthetic`) to its root (see
  `datasets.build_train_datasets`); DatasetError for a missing or wrong root."""
  names = tuple(config.data[_split(split)].datasets_name)
  return datasets_lib.build_train_datasets(names, roots, cache_dir=cache_dir)


def frame_examples_from_config(config, datasets: Sequence[sampler.DatasetLike], seed: int,
                               split: str = "train") -> pipeline.FrameExamples:
  """Frame-level examples (stages 1 and 2): T templates and one search crop per index."""
  return pipeline.FrameExamples(datasets=list(datasets), ratios=_ratios(config, datasets, split),
                                num_templates=int(config.data.template.number),
                                max_gap=int(config.data.max_gap),
                                process=processing.FrameProcessing.from_config(config), seed=int(seed))


def clip_examples_from_config(config, datasets: Sequence[sampler.DatasetLike], seed: int,
                              split: str = "train") -> clips.ClipExamples:
  """Clips of the sparse stage: T template and S search frames per index on `data.clip_canvas`."""
  data = config.data
  for field in ("max_interval", "interval_prob", "clip_canvas"):
    if field not in data:
      raise ValueError(f"data.{field} is missing from the config: clips need a fartrack_sparse config "
                       f"(this one is {config.get('stage')!r})")
  return clips.ClipExamples(datasets=list(datasets), ratios=_ratios(config, datasets, split),
                            num_templates=int(data.template.number), num_searches=int(data.search.number),
                            max_gap=int(data.max_gap), max_interval=int(data.max_interval),
                            interval_prob=float(data.interval_prob), canvas=int(data.clip_canvas),
                            seed=int(seed))


def open_datasets(config, split: str, index_cache_dir: str) -> list:
  """The datasets of `config.data[split]` from where `config.run` says: pre-cropped sets
  (`run.data_path=precropped`), packed frames (`run.tfds_data_dir`), or the native roots (`run.data_roots`,
  their indexes cached in `index_cache_dir`). Raises `DatasetError` naming the root or set."""
  names = tuple(config.data[_split(split)].datasets_name)
  if config.run.get("data_path", "frames") == "precropped":  # validate_config checks the stage and folder
    # tfds (behind the packed readers) is imported only by the runs that read packed sets.
    from data_pipelines.training import precropped  # pylint: disable=g-import-not-at-top
    return precropped.open_precropped_datasets(names, config.run.tfds_data_dir,
                                               processing.FrameProcessing.from_config(config),
                                               f"configs/{config.stage}.py:variant={config.variant}")
  if config.run.tfds_data_dir:
    from data_pipelines.training import packed  # pylint: disable=g-import-not-at-top
    return packed.open_packed_datasets(names, config.run.tfds_data_dir)
  roots = {k: v for k, v in config.run.data_roots.items() if v}
  return train_datasets_from_config(config, roots, index_cache_dir, split=split)


def input_pipeline(config, datasets: Sequence[sampler.DatasetLike], split: str, per_process_batch: int,
                   seed: int, *, shard_index: int = 0, shard_count: int = 1, num_examples: int | None = None):
  """Batches of the config's stage from `datasets`: frame pairs, or clips for the sparse stage; this
  process's shard (`shard_index` of `shard_count`) of `per_process_batch` rows each."""
  if config.stage == "fartrack_sparse":
    examples, dataset_fn = clip_examples_from_config(config, datasets, seed, split=split), clips.clip_dataset
  else:
    examples, dataset_fn = frame_examples_from_config(config, datasets, seed, split=split), pipeline.frame_dataset
  return dataset_fn(examples, per_process_batch, shard_index=shard_index, shard_count=shard_count,
                    num_workers=config.run.num_workers, num_examples=num_examples,
                    read_threads=int(config.run.get("read_threads", 0)))
