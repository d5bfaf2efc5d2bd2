"""Frame-pair sampling rules (the original's causal TrackingSampler) on hand-made visibility."""

import dataclasses

import numpy as np
import pytest

from data_pipelines.training import sampler
from tests import pipeline_fakes


@dataclasses.dataclass
class _Seq:
  visible: np.ndarray
  is_video: bool = True

  @property
  def frames(self):
    return tuple(f"{i}.jpg" for i in range(len(self.visible)))


_Dataset = pipeline_fakes.FakeDataset


def test_sample_visible_ids_respects_bounds_and_visibility():
  visible = np.array([0, 1, 1, 0, 1, 0, 0, 1], bool)
  rng = np.random.default_rng(0)
  draws = {i for _ in range(200) for i in sampler.sample_visible_ids(visible, rng, 3, 2, 7)}
  assert draws == {2, 4}  # visible frames in [2, 7)
  assert sampler.sample_visible_ids(visible, rng, 1, 5, 7) is None
  assert sampler.sample_visible_ids(visible, rng, 0) == []
  # Negative min and a max past the end are clamped, as the original does.
  assert set(sampler.sample_visible_ids(visible, rng, 50, -10, 100)) == {1, 2, 4, 7}


def test_causal_ids_put_templates_before_the_base_and_searches_after():
  rng = np.random.default_rng(1)
  visible = np.ones(100, bool)
  visible[40:60] = False
  for _ in range(300):
    templates, searches = sampler.causal_frame_ids(visible, rng, num_templates=5, num_searches=1, max_gap=10)
    assert len(templates) == 5 and len(searches) == 1
    base = templates[0]
    assert 4 <= base < 99 and visible[base]
    # The other templates come from [base - 10 - g, base): with gap increases g is a multiple of 5.
    assert all(t < base and visible[t] for t in templates[1:])
    assert all(base < s and visible[s] for s in searches)


def test_causal_gap_grows_until_frames_are_found():
  # Visible only at 0, 50 and 99: the base must be 50, and both the earlier template (0) and the search
  # frame (99) lie beyond max_gap=5 until the gap has grown by 45 (9 steps of 5).
  visible = np.zeros(100, bool)
  visible[[0, 50, 99]] = True
  templates, searches = sampler.causal_frame_ids(visible, np.random.default_rng(2), num_templates=2,
                                                 num_searches=1, max_gap=5)
  assert templates == [50, 0] and searches == [99]


def test_sequences_with_too_few_visible_frames_are_redrawn():
  good = _Seq(np.ones(30, bool))
  short = _Seq(np.ones(19, bool))          # fewer than 20 frames
  hidden = _Seq(np.r_[np.ones(4), np.zeros(40)].astype(bool))  # 4 visible <= 2 * (1 + 2)
  data = _Dataset("toy", [short, hidden, good])
  rng = np.random.default_rng(3)
  picked = {sampler.sample_sequence(data, rng, num_templates=2, num_searches=1)[0] for _ in range(100)}
  assert picked == {2}
  with pytest.raises(sampler.SamplingError, match="no sequence of bad"):
    sampler.sample_sequence(_Dataset("bad", [short, hidden]), rng, 2, 1)


def test_datasets_are_drawn_by_ratio_and_images_use_their_one_frame():
  videos = _Dataset("videos", [_Seq(np.ones(40, bool))])
  images = _Dataset("images", [_Seq(np.ones(1, bool), is_video=False)])
  p = sampler.dataset_probabilities([1, 3])
  rng = np.random.default_rng(4)
  picks = [sampler.sample_frames([videos, images], p, rng, 3, 1, 50)[0] for _ in range(2000)]
  share = np.mean([pk.dataset == 1 for pk in picks])
  assert abs(share - 0.75) < 0.04
  image_pick = next(pk for pk in picks if pk.dataset == 1)
  assert image_pick.template_ids == (0, 0, 0) and image_pick.search_ids == (0,)
  with pytest.raises(ValueError, match="ratios"):
    sampler.dataset_probabilities([0, 0])


def test_same_seed_same_frames():
  data = [_Dataset("v", [_Seq(np.ones(60, bool)), _Seq(np.ones(80, bool))])]
  p = sampler.dataset_probabilities([1])
  a = [sampler.sample_frames(data, p, np.random.default_rng(s), 5, 1, 20)[0] for s in range(20)]
  b = [sampler.sample_frames(data, p, np.random.default_rng(s), 5, 1, 20)[0] for s in range(20)]
  assert a == b and len(set(a)) > 10
