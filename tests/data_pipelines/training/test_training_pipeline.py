"""The grain frame pipeline: determinism, worker count, per-host shards, resume, bad data."""

import os

import numpy as np
import pytest

from data_pipelines.training import pipeline
from tests.conftest import ROOT
from tests import pipeline_fakes


def _examples(tmp_path, seed=0, corrupt=()):
  data = pipeline_fakes.make_video_dataset(str(tmp_path), corrupt=corrupt)
  return pipeline.FrameExamples([data], [1.0], num_templates=3, max_gap=10,
                                process=pipeline_fakes.process, seed=seed)


_take = pipeline_fakes.take
_equal = pipeline_fakes.assert_batches_equal


def test_same_seed_same_batches_and_another_seed_differs(tmp_path):
  examples = _examples(tmp_path)
  a = _take(iter(pipeline.frame_dataset(examples, 4)), 3)
  b = _take(iter(pipeline.frame_dataset(examples, 4)), 3)
  _equal(a, b)
  assert a[0]["templates"].shape == (4, 3) and a[0]["skips"].shape == (4, len(pipeline.SKIP_REASONS))
  other = _take(iter(pipeline.frame_dataset(_examples(tmp_path, seed=1), 4)), 1)
  assert not np.array_equal(other[0]["draw"], a[0]["draw"])


def test_host_shards_interleave_to_the_single_host_stream(tmp_path):
  examples = _examples(tmp_path)
  whole = np.concatenate([b["draw"] for b in _take(iter(pipeline.frame_dataset(examples, 2)), 4)])
  host0 = np.concatenate([b["draw"] for b in _take(iter(pipeline.frame_dataset(examples, 2, 0, 2)), 2)])
  host1 = np.concatenate([b["draw"] for b in _take(iter(pipeline.frame_dataset(examples, 2, 1, 2)), 2)])
  np.testing.assert_array_equal(whole[0::2], host0)
  np.testing.assert_array_equal(whole[1::2], host1)


def test_resume_from_iterator_state_continues_with_the_next_batch(tmp_path):
  examples = _examples(tmp_path)
  it = iter(pipeline.frame_dataset(examples, 3))
  _take(it, 2)
  state = it.get_state()
  expected = _take(it, 3)
  resumed = iter(pipeline.frame_dataset(examples, 3))
  resumed.set_state(state)
  _equal(_take(resumed, 3), expected)


@pytest.mark.slow
def test_worker_count_does_not_change_the_data(tmp_path, monkeypatch):
  # Workers import tests.pipeline_fakes by name: put the repository root on their path.
  monkeypatch.setenv("PYTHONPATH", ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  examples = _examples(tmp_path)
  serial = _take(iter(pipeline.frame_dataset(examples, 2)), 3)
  it = iter(pipeline.frame_dataset(examples, 2, num_workers=2))
  parallel = _take(it, 3)
  _equal(serial, parallel)
  # Resume with workers too.
  state = it.get_state()
  expected = _take(it, 2)
  resumed = iter(pipeline.frame_dataset(examples, 2, num_workers=2))
  resumed.set_state(state)
  _equal(_take(resumed, 2), expected)


def test_read_threads_is_what_grain_reads_with_and_does_not_change_the_data(tmp_path, monkeypatch):
  """`run.read_threads` (the quick start sets 1) reaches grain's ReadOptions; 0 keeps the default."""
  examples = _examples(tmp_path)
  default = _take(iter(pipeline.frame_dataset(examples, 2)), 3)
  asked = []
  read_options = pipeline.grain.ReadOptions

  def recording(**kwargs):
    asked.append(kwargs["num_threads"])
    return read_options(**kwargs)

  monkeypatch.setattr(pipeline.grain, "ReadOptions", recording)
  _equal(_take(iter(pipeline.frame_dataset(examples, 2, read_threads=1)), 3), default)
  pipeline.frame_dataset(examples, 2)
  assert asked == [1, pipeline.FRAME_READ_THREADS]


def test_corrupt_images_are_redrawn_and_counted(tmp_path):
  corrupt = {(s, f) for s in range(3) for f in range(0, 24, 2)}  # half of every sequence unreadable
  examples = _examples(tmp_path, corrupt=corrupt)
  batches = _take(iter(pipeline.frame_dataset(examples, 8)), 4)
  skips = np.sum([b["skips"] for b in batches], axis=(0, 1))
  assert skips[pipeline.SKIP_REASONS.index("unreadable_image")] > 0
  for b in batches:  # every delivered example was made of readable frames (odd frame indices)
    assert np.all(b["search"] % 2 == 1)


def test_bad_boxes_are_redrawn_and_a_hopeless_dataset_fails_clearly(tmp_path):
  data = pipeline_fakes.make_video_dataset(str(tmp_path))
  for seq in data.seqs:
    seq.boxes[:12] = [0, 0, 0, 5]   # empty boxes in the first half
  examples = pipeline.FrameExamples([data], [1.0], 3, 10, pipeline_fakes.process)
  batch = next(iter(pipeline.frame_dataset(examples, 8)))
  assert batch["skips"][:, pipeline.SKIP_REASONS.index("bad_box")].sum() > 0
  for seq in data.seqs:
    seq.boxes[:] = [100, 100, 5, 5]  # outside every 32x24 frame
  with pytest.raises(Exception, match="unusable"):
    next(iter(pipeline.frame_dataset(examples, 2)))
