"""grain input pipeline for frame-level training (stages 1 and 2).

Example `i` is a pure function of `(seed, i)`: its own numpy Generator draws the dataset, sequence, frames,
jitter and augmentations. So the data do not depend on the number of workers, a host reads only its own
indices (`i = shard_index, shard_index + shard_count, ...`), and a run resumed from grain's iterator state
continues with exactly the next batch.

Bad data never stops a run: an unreadable or missing image, a box that is empty, non-finite or outside its
frame, or a crop the processing rejects, makes the example redraw (from the same generator, so still
deterministic); each example carries how many redraws of each kind it took (`skips` [len(SKIP_REASONS)]),
which the trainer sums into metrics and logs. Only a wrong dataset root is an error, raised when the
datasets are built, before training starts.

`example_dataset` is the grain graph itself, shared with the sparse stage's clips (`clips.clip_dataset`).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
from typing import Callable, Sequence

import cv2
import grain
import numpy as np

from data_pipelines import allocator
from data_pipelines import paths
from data_pipelines.training import sampler

SKIP_REASONS = ("unreadable_image", "bad_box", "rejected_crop")
CROP_KINDS = ("template", "search")  # what an example crops out of a frame (`FrameProcessing`)
MAX_REDRAWS = 100
FRAME_READ_AHEAD = 4  # batches in flight per process
FRAME_READ_THREADS = FRAME_READ_AHEAD  # grain uses at most one thread per buffered element


class BadSample(Exception):
  """One drawn example cannot be used; `reason` is one of SKIP_REASONS."""

  def __init__(self, reason: str, detail: str):
    super().__init__(f"{reason}: {detail}")
    self.reason = reason


# The frames of one example are read at once: from a bucket each read waits tens of milliseconds for its
# storage request, so the T + 1 reads of an example cost one wait instead of T + 1 (docs/buckets.md). The
# pool is shared by the process's read threads: 100 samples/s of ~4.5 requests each at 30 ms keep ~14
# requests in flight per core, so 32 covers a process of two cores; idle threads cost nothing.
FRAME_PARALLEL_READS = 32
_read_pool: tuple[int, concurrent.futures.ThreadPoolExecutor] | None = None  # (pid, pool): one per process


def _on_remote_storage(frame) -> bool:
  """Whether reading `frame` waits on a storage request: a path, or a packed set's frame reference
  (`packed.PackedFrame`: its `source.data_dir`), with a scheme such as gs://."""
  where = frame if isinstance(frame, (str, os.PathLike)) else getattr(getattr(frame, "source", None), "data_dir", "")
  return paths.is_remote(where)


def read_images(frames) -> list[np.ndarray]:
  """`read_image` of every frame: concurrently when they are on remote storage (errors as `read_image`
  raises them, the first in order); one after another from a local disk, where a read is Python work on
  a small file and threads would only hand the GIL around (the quick start's stage 1: 7 steps/s with the
  pool, 12 without, over its first 1,600 steps).

  On remote storage, frames of one packed or pre-cropped set (a `source` with `records`, the frames
  `with_record`) have their records read in one call of the set's reader, which sends their requests
  together (tensorstore's futures on a bucket, `remote_records`); other frames go to a pool of
  `FRAME_PARALLEL_READS` threads, a request each."""
  global _read_pool
  if len(frames) < 2 or not any(_on_remote_storage(f) for f in frames):
    return [read_image(f) for f in frames]
  source = getattr(frames[0], "source", None)
  if hasattr(source, "records") and all(getattr(f, "source", None) == source for f in frames):
    records = source.records([f.record_index for f in frames])
    return [read_image(f.with_record(r)) for f, r in zip(frames, records)]
  if _read_pool is None or _read_pool[0] != os.getpid():  # a grain worker does not inherit threads
    _read_pool = (os.getpid(), concurrent.futures.ThreadPoolExecutor(FRAME_PARALLEL_READS,
                                                                       thread_name_prefix="frame_read"))
  return list(_read_pool[1].map(read_image, frames))


def for_crops(frame, kinds):
  """`frame` narrowed to what crops of `kinds` (a subset of CROP_KINDS) need of it: a pre-cropped frame
  (`precropped.PrecroppedFrameRef.for_crops`) drawn only as a template then reads its small template
  record; any other frame is returned as it is."""
  narrow = getattr(frame, "for_crops", None)
  return frame if narrow is None else narrow(kinds)


def read_image(frame) -> np.ndarray:
  """[H, W, 3] RGB uint8 of one frame, read with OpenCV as the original does.

  `frame` is a path (str or os.PathLike; one on a bucket, `gs://...`, is read through etils.epath) or a frame
  reference: an object whose `read_bytes()` returns the encoded image (`packed.PackedFrame`), decoded with
  cv2.imdecode. A missing, unreadable or corrupt image raises BadSample("unreadable_image", the path or the
  reference's `name`). A reference with `read_frame()` (`precropped.PrecroppedFrameRef`) returns what that
  gives (a `PrecroppedFrame`).
  """
  if hasattr(frame, "read_frame"):
    return frame.read_frame()
  if isinstance(frame, str) or hasattr(frame, "__fspath__"):  # os.PathLike's own test
    name = frame if isinstance(frame, str) else frame.__fspath__()
    if paths.is_remote(name):  # a frame of a root on a bucket: its bytes, decoded as a packed frame's
      image = _decode(name, lambda: paths.read_bytes(name))
    else:
      image = cv2.imread(name, cv2.IMREAD_COLOR)
  else:
    name = str(getattr(frame, "name", frame))
    image = _decode(name, frame.read_bytes)
  if image is None:
    raise BadSample("unreadable_image", name)
  return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _decode(name: str, read_bytes: Callable[[], bytes]) -> np.ndarray | None:
  """The BGR image of the encoded bytes `read_bytes()` gives, None when they do not decode; BadSample when
  they cannot be read."""
  try:
    encoded = np.frombuffer(read_bytes(), np.uint8)
  except OSError as e:
    raise BadSample("unreadable_image", f"{name} ({e})") from e
  try:
    return cv2.imdecode(encoded, cv2.IMREAD_COLOR) if encoded.size else None
  except cv2.error:
    return None


def check_box(box, image: np.ndarray, where: str) -> np.ndarray:
  box = np.asarray(box, np.float64)
  height, width = image.shape[:2]
  x, y, w, h = box
  if not np.all(np.isfinite(box)) or w <= 0 or h <= 0:
    raise BadSample("bad_box", f"{where}: box {box.tolist()}")
  if x >= width or y >= height or x + w <= 0 or y + h <= 0:
    raise BadSample("bad_box", f"{where}: box {box.tolist()} outside the {width}x{height} frame")
  return box


@dataclasses.dataclass
class FrameExamples:
  """Picklable `index -> example` for grain workers.

  `process(templates, template_boxes, search, search_box, rng) -> dict` turns the frames into arrays and a
  `valid` flag (the processing's crop check).
  """
  datasets: Sequence[sampler.DatasetLike]
  ratios: Sequence[float]
  num_templates: int
  max_gap: int
  process: object
  seed: int = 0

  def __call__(self, index: int) -> dict:
    rng = np.random.default_rng([self.seed, int(index)])
    probabilities = sampler.dataset_probabilities(self.ratios)
    skips = np.zeros(len(SKIP_REASONS), np.int32)
    last = None
    for _ in range(MAX_REDRAWS):
      pick, seq = sampler.sample_frames(self.datasets, probabilities, rng, self.num_templates, 1, self.max_gap)
      try:
        ids = sorted(set(pick.template_ids + pick.search_ids))
        drawn_as = dict(zip(CROP_KINDS, (pick.template_ids, pick.search_ids)))
        frames = [for_crops(seq.frames[i], [kind for kind, drawn in drawn_as.items() if i in drawn]) for i in ids]
        images = dict(zip(ids, read_images(frames)))
        where = lambda i: f"{self.datasets[pick.dataset].name}/{getattr(seq, 'name', pick.sequence)} frame {i}"
        template_boxes = [check_box(seq.boxes[i], images[i], where(i)) for i in pick.template_ids]
        search_box = check_box(seq.boxes[pick.search_ids[0]], images[pick.search_ids[0]],
                               where(pick.search_ids[0]))
        example = self.process([images[i] for i in pick.template_ids], template_boxes,
                               images[pick.search_ids[0]], search_box, rng)
        if not bool(example.pop("valid", True)):
          raise BadSample("rejected_crop", where(pick.search_ids[0]))
      except BadSample as e:
        skips[SKIP_REASONS.index(e.reason)] += 1
        last = e
        continue
      example["skips"] = skips
      return example
    raise sampler.SamplingError(f"example {index}: {MAX_REDRAWS} draws in a row were unusable (last: {last})")


@dataclasses.dataclass(frozen=True)
class _InTunedProcess:
  """`examples(i)`, made in a process whose malloc keeps freed buffers (`allocator.tune_malloc`: ~2 ms of page
  faults a pre-cropped sample otherwise); grain's workers are new processes, so each tunes its own."""
  examples: Callable[[int], dict]

  def __call__(self, index: int) -> dict:
    allocator.tune_malloc()
    return self.examples(index)


def example_dataset(examples: Callable[[int], dict], batch_size: int, shard_index: int = 0,
                    shard_count: int = 1, num_workers: int = 0, num_examples: int | None = None,
                    read_options: grain.ReadOptions | None = None) -> grain.IterDataset:
  """Batches of `examples(i)` (a picklable pure function of the index, e.g. FrameExamples or
  clips.ClipExamples) for this host: `[batch_size, ...]` numpy arrays, indices `shard_index::shard_count`
  of `range(num_examples)` (default: practically endless). `num_workers > 0` makes the examples in that
  many worker processes (grain multiprocessing); the batches are the same for any worker count.
  `read_options`: grain's threads and read-ahead per process (default: grain's)."""
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"shard_index must be in [0, shard_count={shard_count}), got {shard_index}")
  stop = num_examples if num_examples is not None else 2 ** 62
  # Batched by index before any worker sees it: batch k is examples k*B..(k+1)*B-1 of this host's indices,
  # whoever makes it, so the batches are the same for any worker count; a worker makes whole batches
  # (round-robin over batch indices, re-interleaved in order), which sends one message per batch between
  # processes instead of one per example.
  ds = grain.MapDataset.range(shard_index, stop, shard_count).map(_InTunedProcess(examples)).batch(
      batch_size, drop_remainder=True)
  it = ds.to_iter_dataset(read_options)
  if num_workers > 0:
    from absl import flags  # pylint: disable=g-import-not-at-top
    if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; outside an absl app use defaults
      flags.FLAGS.mark_as_parsed()
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return it


def frame_dataset(examples: FrameExamples, batch_size: int, shard_index: int = 0, shard_count: int = 1,
                  num_workers: int = 0, num_examples: int | None = None,
                  read_threads: int = 0) -> grain.IterDataset:
  """Batches of frame examples for this host (see `example_dataset`), read by `read_threads` threads per
  process (0: FRAME_READ_THREADS). Read-ahead is bounded to a few batches: grain's default (500 elements)
  would hold hundreds of Tiny-sized batches per process."""
  # grain runs at most one thread per buffered batch, so more read threads (a bucket) buffer more batches.
  read_options = grain.ReadOptions(num_threads=read_threads or FRAME_READ_THREADS,
                                   prefetch_buffer_size=max(FRAME_READ_AHEAD, read_threads))
  return example_dataset(examples, batch_size, shard_index, shard_count, num_workers, num_examples,
                         read_options=read_options)
