"""Clips for the sparse (third) training stage: the original's `SequenceSampler` (sequence_sampler_v3.py) in
numpy, and the grain examples that read a clip's frames onto one fixed-size canvas.

A clip is T template frames and S search frames of one video (`data.template.number`, `data.search.number`).
All randomness comes from the `np.random.Generator` passed in (one per example index in the pipeline), so
a clip is a pure function of its seed; draws among frame ids are with replacement, as the original's
`random.choices`. The distributions are the original's; the random streams are numpy's.

Rules reproduced (`lib/train/data/sequence_sampler_v3.py`, N = frames in the sequence):
  - `sample_clip` (`__getitem__`): a dataset is drawn with the configured ratios, then a sequence uniformly;
    a video sequence is redrawn until more than 2 * (S + T) of its frames are visible and it has at least
    S + T frames. For a video, a coin is drawn every time: below `interval_prob` the clip is
    `random_interval`, else `sequential` (the trainer builds the sampler in 'random_interval' mode with
    prob=DATA.INTERVAL_PROB). An image dataset (COCO) uses its one frame for every id (the original passes
    id 1 to a reader that ignores it) and draws no coin.
  - `sequential_frame_ids` (`_sequential_sample`): each of the T templates is one draw among the visible
    frames in [0, N - S); the templates are sorted. The search run starts at `left`: the last template
    when max_gap == -1, else one draw among the visible frames in [last template, min(N - S, last
    template + max_gap)). The searches are the first S visible frames from `left` on (invisible frames
    are skipped). When fewer than S remain, the original steps `last` forward looking for another
    visible frame, finds none (all of them are already in the run) and appends N - 1, the video's last
    frame, until there are S: so the padding repeats N - 1, which is not a visible frame unless it is
    the run's own last frame.
  - `random_interval_frame_ids` (`_random_interval_sample`): `avg_interval` starts at max_interval and
    shrinks by one while avg_interval * (S - 1) > N (never below 1). One template is drawn among the
    visible frames in [0, N - avg_interval * (S - 1)); while there is none, avg_interval shrinks by one,
    and when it reaches 0 the first visible frame is the template. The first search frame: the template
    when max_gap == -1; else, with avg_interval shrunk afresh, one draw among the visible frames in
    [template, min(max(N - avg_interval * (S - 1), template + 1), template + max_gap)), shrinking
    avg_interval while there is none, down to -1, where the template itself is taken. Then, until there
    are S, one draw among the visible frames in [last, min(last + max_interval + 1, N)), `last` being the
    newest search frame (so a frame may repeat, and the clip stalls before a run of more than
    max_interval invisible frames). Consecutive searches are at most max_interval apart. The original
    also has steps for an empty draw (`last` jumps by max_interval; then extra draws among the later
    visible frames, sorted; then padding with the last id); they cannot run, because `last` is always a
    visible frame inside its own range, so they are left out.

Choices made where the original cannot be followed:
  - The original's random_interval clip has one template frame whatever T is (its sparse actor would then
    fail on the batch; no released config uses the mode: DATA.INTERVAL_PROB is 0). A clip here has a fixed
    shape, so that one template id is repeated T times.
  - With max_gap == -1 (or max_gap <= 0 making avg_interval reach -1), the original's search list *is* its
    template list (the same Python object), so appending searches grows the templates too. Here the
    search run starts at the template but the templates stay as drawn.
  - Where the original would crash or spin forever, `sampler.SamplingError` names the sequence length and
    its visible count instead: no visible frame at all, no visible frame in [0, N - S) for the templates
    (impossible after `sample_clip`'s redraw rule), max_gap <= 0 or < -1 in sequential mode (empty range
    for `left`), S - 1 > N in random_interval mode (its shrink loop never ends). A negative max_interval
    (empty draw ranges; the original's loops would never end) is a ValueError.

`ClipExamples` turns a clip into fixed-shape arrays: it reads only the sampled frames (each distinct id
once), checks every frame's box with `pipeline.check_box` (the original passes invisible padding frames'
boxes on; here a missing or out-of-frame box, e.g. LaSOT's 0,0,0,0 when out of view, redraws the clip and
is counted as `bad_box`), and places each frame at the top-left of a zeroed `canvas` x `canvas` image:
frames larger than the canvas are downscaled by s = canvas / max(h, w) (cv2.INTER_AREA), smaller ones
are left at s = 1, and boxes are scaled by s. The training step crops the search regions from these
canvases on device, which needs one static shape per clip.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import cv2
import grain
import numpy as np

from data_pipelines.training import pipeline
from data_pipelines.training import sampler

# Threads making clip batches in each process (cv2 releases the GIL), and batches read ahead per process:
# a 640-canvas clip of 5 + 32 frames is 45 MB of uint8 (a batch of 8: 360 MB), and grain's default buffer
# of 500 elements per process would hold far more than a host has.
CLIP_READ_THREADS = 2
CLIP_READ_AHEAD = 2


def _describe(visible: np.ndarray) -> str:
  return f"a sequence of {len(visible)} frames with {int(np.sum(visible))} visible"


def _check_counts(num_templates: int, num_searches: int) -> None:
  if num_templates < 1 or num_searches < 1:
    raise ValueError(f"need num_templates >= 1 and num_searches >= 1, got {num_templates}, {num_searches}")


def sequential_frame_ids(visible: np.ndarray, rng: np.random.Generator, num_templates: int, num_searches: int,
                         max_gap: int) -> tuple[list[int], list[int]]:
  """T sorted template ids and S search ids of one video, the original's `_sequential_sample` (see the
  module docstring). `visible`: [N] bool."""
  _check_counts(num_templates, num_searches)
  visible = np.asarray(visible, bool)
  n = len(visible)
  templates = []
  for _ in range(num_templates):
    drawn = sampler.sample_visible_ids(visible, rng, 1, 0, n - num_searches)
    if drawn is None:
      raise sampler.SamplingError(f"no visible frame in [0, {n - num_searches}) for the templates of "
                                  f"{_describe(visible)} (S={num_searches})")
    templates.append(drawn[0])
  templates.sort()
  if max_gap == -1:
    left = templates[-1]
  else:
    left_max = min(n - num_searches, templates[-1] + max_gap)
    drawn = sampler.sample_visible_ids(visible, rng, 1, templates[-1], left_max)
    if drawn is None:
      raise sampler.SamplingError(f"no visible frame in [{templates[-1]}, {left_max}) for the first search "
                                  f"frame of {_describe(visible)} (max_gap={max_gap})")
    left = drawn[0]
  searches = [int(i) for i in np.flatnonzero(visible[left:])[:num_searches] + left]
  # The original's padding loop: every visible frame from `left` on is already in the run, so its
  # forward scan ends at N - 1 and appends that.
  searches += [n - 1] * (num_searches - len(searches))
  return templates, searches


def _shrunk_interval(max_interval: int, num_searches: int, visible: np.ndarray) -> int:
  """The original's `while avg_interval * (S - 1) > N: avg_interval = max(avg_interval - 1, 1)`."""
  n = len(visible)
  if max_interval * (num_searches - 1) <= n:
    return max_interval
  if num_searches - 1 > n:  # the original's loop would stop at 1 and spin
    raise sampler.SamplingError(f"{num_searches} search frames at interval >= 1 do not fit "
                                f"{_describe(visible)}")
  return n // (num_searches - 1)


def random_interval_frame_ids(visible: np.ndarray, rng: np.random.Generator, num_templates: int,
                              num_searches: int, max_gap: int,
                              max_interval: int) -> tuple[list[int], list[int]]:
  """T template ids (one drawn id, repeated) and S search ids, the original's `_random_interval_sample`
  (see the module docstring). `visible`: [N] bool."""
  _check_counts(num_templates, num_searches)
  if max_interval < 0:
    raise ValueError(f"max_interval must be >= 0, got {max_interval}")
  visible = np.asarray(visible, bool)
  n = len(visible)
  visible_ids = np.flatnonzero(visible)
  if visible_ids.size == 0:
    raise sampler.SamplingError(f"no visible frame in {_describe(visible)}")
  steps = num_searches - 1

  interval = _shrunk_interval(max_interval, num_searches, visible)
  while True:  # ends: at interval <= 0 the range is [0, N), which holds a visible frame
    drawn = sampler.sample_visible_ids(visible, rng, 1, 0, n - interval * steps)
    if drawn is not None:
      break
    interval -= 1
    if interval == 0:
      drawn = [int(visible_ids[0])]
      break
  template = drawn[0]

  if max_gap == -1:
    searches = [template]
  else:
    interval = _shrunk_interval(max_interval, num_searches, visible)
    while True:  # ends: interval >= 0 here, so it reaches -1 unless a frame is found first
      left_max = min(max(n - interval * steps, template + 1), template + max_gap)
      drawn = sampler.sample_visible_ids(visible, rng, 1, template, left_max)
      if drawn is not None:
        searches = drawn
        break
      interval -= 1
      if interval == -1:
        searches = [template]
        break

  last = searches[0]
  while len(searches) < num_searches:
    # `last` is always a visible frame (drawn, or the template) and the range starts at it, so this draw
    # never comes back empty: the original's jump over an empty range, its extra draws among the later
    # frames and its final padding never run.
    last = sampler.sample_visible_ids(visible, rng, 1, last, min(last + max_interval + 1, n))[0]
    searches.append(last)
  return [template] * num_templates, searches


def sample_clip_sequence(dataset: sampler.DatasetLike, rng: np.random.Generator, num_templates: int,
                         num_searches: int) -> tuple[int, sampler.SequenceLike]:
  """A sequence drawn uniformly, redrawn while a video one has <= 2 * (S + T) visible or < S + T frames."""
  if len(dataset) == 0:
    raise sampler.SamplingError(f"dataset {dataset.name} has no sequence")
  need = num_searches + num_templates
  for _ in range(sampler.MAX_ATTEMPTS):
    index = int(rng.integers(len(dataset)))
    seq = dataset.sequence(index)
    if not seq.is_video:
      return index, seq
    visible = np.asarray(seq.visible, bool)
    if visible.sum() > 2 * need and len(visible) >= need:
      return index, seq
  raise sampler.SamplingError(f"no sequence of {dataset.name} with more than {2 * need} visible frames and "
                              f"at least {need} frames in {sampler.MAX_ATTEMPTS} draws")


def sample_clip(datasets: Sequence[sampler.DatasetLike], probabilities: np.ndarray, rng: np.random.Generator,
                num_templates: int, num_searches: int, max_gap: int, max_interval: int,
                interval_prob: float) -> tuple[sampler.FramePick, sampler.SequenceLike]:
  """One clip's frames: the original's `SequenceSampler.__getitem__` up to reading them."""
  d = int(rng.choice(len(datasets), p=probabilities))
  index, seq = sample_clip_sequence(datasets[d], rng, num_templates, num_searches)
  if seq.is_video:
    visible = np.asarray(seq.visible, bool)
    if rng.random() < interval_prob:
      templates, searches = random_interval_frame_ids(visible, rng, num_templates, num_searches, max_gap,
                                                      max_interval)
    else:
      templates, searches = sequential_frame_ids(visible, rng, num_templates, num_searches, max_gap)
  else:
    templates, searches = [0] * num_templates, [0] * num_searches
  return sampler.FramePick(d, index, tuple(templates), tuple(searches)), seq


def fit_to_canvas(image: np.ndarray, canvas: int) -> tuple[np.ndarray, float]:
  """`image` [h, w, 3] downscaled by s = canvas / max(h, w) (cv2.INTER_AREA) when larger than `canvas`,
  else as is (s = 1). Returns (image [round(h * s), round(w * s), 3], at least 1 pixel a side; s)."""
  height, width = image.shape[:2]
  scale = min(1.0, canvas / max(height, width))
  if scale < 1.0:
    size = (min(canvas, max(1, round(width * scale))), min(canvas, max(1, round(height * scale))))
    image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
  return image, scale


@dataclasses.dataclass
class ClipExamples:
  """Picklable `index -> clip` for grain workers; example i is a pure function of (seed, i).

  Returns numpy arrays (C = canvas): `template_frames` [T, C, C, 3] uint8, `template_boxes` [T, 4] float32
  (x, y, w, h in canvas pixels: the annotation times the frame's scale), `template_sizes` [T, 2] int32
  (h, w of the placed image), `template_scales` [T] float32, the same four for `search_*` with S frames,
  and `skips` [len(pipeline.SKIP_REASONS)] int32 (redraws this clip took, by reason).
  """
  datasets: Sequence[sampler.DatasetLike]
  ratios: Sequence[float]
  num_templates: int
  num_searches: int
  max_gap: int
  max_interval: int
  interval_prob: float
  canvas: int
  seed: int = 0

  def _frames(self, pick: sampler.FramePick, seq, ids: Sequence[int], fitted: dict) -> dict:
    """The frames `ids` of `seq` on zeroed canvases; `fitted` caches each distinct frame across calls."""
    frames = np.zeros((len(ids), self.canvas, self.canvas, 3), np.uint8)
    boxes = np.zeros((len(ids), 4), np.float32)
    sizes = np.zeros((len(ids), 2), np.int32)
    scales = np.zeros(len(ids), np.float32)
    for k, i in enumerate(ids):
      if i not in fitted:
        image = pipeline.read_image(seq.frames[i])
        where = f"{self.datasets[pick.dataset].name}/{getattr(seq, 'name', pick.sequence)} frame {i}"
        box = pipeline.check_box(seq.boxes[i], image, where)
        image, scale = fit_to_canvas(image, self.canvas)
        fitted[i] = (image, box * scale, scale)
      image, boxes[k], scales[k] = fitted[i]
      sizes[k] = image.shape[:2]
      frames[k, :image.shape[0], :image.shape[1]] = image
    return {"frames": frames, "boxes": boxes, "sizes": sizes, "scales": scales}

  def __call__(self, index: int) -> dict:
    rng = np.random.default_rng([self.seed, int(index)])
    probabilities = sampler.dataset_probabilities(self.ratios)
    skips = np.zeros(len(pipeline.SKIP_REASONS), np.int32)
    last = None
    for _ in range(pipeline.MAX_REDRAWS):
      pick, seq = sample_clip(self.datasets, probabilities, rng, self.num_templates, self.num_searches,
                              self.max_gap, self.max_interval, self.interval_prob)
      fitted = {}  # each distinct frame read once
      try:
        parts = {"template": self._frames(pick, seq, pick.template_ids, fitted),
                 "search": self._frames(pick, seq, pick.search_ids, fitted)}
      except pipeline.BadSample as e:
        skips[pipeline.SKIP_REASONS.index(e.reason)] += 1
        last = e
        continue
      example = {f"{part}_{key}": value for part, arrays in parts.items() for key, value in arrays.items()}
      example["skips"] = skips
      return example
    raise sampler.SamplingError(f"clip {index}: {pipeline.MAX_REDRAWS} draws in a row were unusable "
                                f"(last: {last})")


def clip_dataset(examples: ClipExamples, batch_size: int, shard_index: int = 0, shard_count: int = 1,
                 num_workers: int = 0, num_examples: int | None = None,
                 read_threads: int = 0) -> grain.IterDataset:
  """Batches of clips for this host, as `pipeline.frame_dataset` does for frame examples: `[batch_size,
  ...]` numpy arrays, indices `shard_index::shard_count`, the same batches for any worker count, resumable
  from the iterator state. At most CLIP_READ_AHEAD batches are read ahead per process, by `read_threads`
  threads (0: CLIP_READ_THREADS)."""
  read_options = grain.ReadOptions(num_threads=read_threads or CLIP_READ_THREADS,
                                   prefetch_buffer_size=CLIP_READ_AHEAD)
  return pipeline.example_dataset(examples, batch_size, shard_index, shard_count, num_workers, num_examples,
                                  read_options=read_options)
