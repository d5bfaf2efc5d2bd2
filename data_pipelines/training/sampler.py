"""Which frames make a training example: the original's `TrackingSampler` ("causal" mode), in numpy.

All randomness comes from the `np.random.Generator` passed in, so an example is a pure function of its seed
(the grain pipeline seeds one generator per example index). The distributions are the original's; the
random streams are numpy's, not Python's `random`.

Rules reproduced (`lib/train/data/sampler.py`):
  - a dataset is drawn with the configured ratios, then a sequence uniformly; a video sequence is redrawn
    until it has more than 2 * (templates + searches) visible frames and at least 20 frames;
  - causal mode: a base frame is drawn among the visible frames in [T - 1, N - S); the other T - 1 template
    frames among the visible frames in [base - max_gap - g, base); the S search frames among the visible
    frames in (template[0], template[0] + max_gap + g), where template[0] is the base frame; draws are with
    replacement; when a range has no visible frame, `g` grows by 5 and the base is drawn again;
  - an image dataset (COCO) uses its one frame for every template and search.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol, Sequence

import numpy as np

# A sampler that finds nothing after this many redraws reports the dataset instead of looping forever.
MAX_ATTEMPTS = 1000


class SamplingError(RuntimeError):
  """No usable sequence or frame could be drawn: names the dataset and the rule that failed."""


class SequenceLike(Protocol):
  frames: tuple
  visible: np.ndarray
  is_video: bool


class DatasetLike(Protocol):
  name: str

  def __len__(self) -> int: ...

  def sequence(self, index: int) -> SequenceLike: ...


@dataclasses.dataclass(frozen=True)
class FramePick:
  """Indices into `datasets[dataset].sequence(sequence).frames`."""
  dataset: int
  sequence: int
  template_ids: tuple[int, ...]
  search_ids: tuple[int, ...]


def sample_visible_ids(visible: np.ndarray, rng: np.random.Generator, num_ids: int, min_id: int | None = None,
                       max_id: int | None = None) -> list[int] | None:
  """`num_ids` draws with replacement among the visible frames in [min_id, max_id), or None if there is
  none (the original's `_sample_visible_ids`: bounds clamped to [0, len])."""
  if num_ids == 0:
    return []
  lo = 0 if min_id is None or min_id < 0 else min_id
  hi = len(visible) if max_id is None or max_id > len(visible) else max_id
  candidates = np.flatnonzero(np.asarray(visible[lo:hi], bool)) + lo if hi > lo else np.zeros(0, int)
  if candidates.size == 0:
    return None
  return [int(i) for i in rng.choice(candidates, size=num_ids, replace=True)]


def causal_frame_ids(visible: np.ndarray, rng: np.random.Generator, num_templates: int, num_searches: int,
                     max_gap: int) -> tuple[list[int], list[int]]:
  """Template and search frame indices of one video sequence, causal mode (see the module docstring)."""
  gap_increase = 0
  for _ in range(MAX_ATTEMPTS):
    base = sample_visible_ids(visible, rng, 1, num_templates - 1, len(visible) - num_searches)
    if base is None:
      break
    previous = sample_visible_ids(visible, rng, num_templates - 1, base[0] - max_gap - gap_increase, base[0])
    if previous is None:
      gap_increase += 5
      continue
    templates = base + previous
    searches = sample_visible_ids(visible, rng, num_searches, templates[0] + 1,
                                  templates[0] + max_gap + gap_increase)
    gap_increase += 5
    if searches is not None:
      return templates, searches
  raise SamplingError(f"no causal template/search frames in a sequence of {len(visible)} frames with "
                      f"{int(np.sum(visible))} visible")


def sample_sequence(dataset: DatasetLike, rng: np.random.Generator, num_templates: int,
                    num_searches: int) -> tuple[int, SequenceLike]:
  """A sequence drawn uniformly, redrawn while a video one has too few visible frames."""
  if len(dataset) == 0:
    raise SamplingError(f"dataset {dataset.name} has no sequence")
  for _ in range(MAX_ATTEMPTS):
    index = int(rng.integers(len(dataset)))
    seq = dataset.sequence(index)
    if not seq.is_video:
      return index, seq
    visible = np.asarray(seq.visible, bool)
    if visible.sum() > 2 * (num_searches + num_templates) and len(visible) >= 20:
      return index, seq
  raise SamplingError(f"no sequence of {dataset.name} with more than {2 * (num_searches + num_templates)} "
                      f"visible frames and at least 20 frames in {MAX_ATTEMPTS} draws")


def dataset_probabilities(ratios: Sequence[float]) -> np.ndarray:
  p = np.asarray(ratios, np.float64)
  if p.ndim != 1 or p.size == 0 or np.any(p < 0) or p.sum() <= 0:
    raise ValueError(f"dataset ratios must be non-negative with a positive sum, got {list(ratios)}")
  return p / p.sum()


def sample_frames(datasets: Sequence[DatasetLike], probabilities: np.ndarray, rng: np.random.Generator,
                  num_templates: int, num_searches: int, max_gap: int) -> tuple[FramePick, SequenceLike]:
  """One training example's frames: the original's `TrackingSampler.getitem` up to the processing."""
  d = int(rng.choice(len(datasets), p=probabilities))
  index, seq = sample_sequence(datasets[d], rng, num_templates, num_searches)
  if seq.is_video:
    templates, searches = causal_frame_ids(np.asarray(seq.visible, bool), rng, num_templates, num_searches,
                                           max_gap)
  else:
    templates, searches = [0] * num_templates, [0] * num_searches
  return FramePick(d, index, tuple(templates), tuple(searches)), seq
