"""Sparse-stage clips: the original's sequence-sampler rules on hand-made visibility, the canvas, and the grain
clip pipeline (determinism, workers, resume, bad data); with FARTRACK_TORCH_REPO set, the original's
`SequenceSampler` replaying our draws gives the same frame ids."""

import dataclasses
import os
import sys
import threading

import cv2
import numpy as np
import pytest

from data_pipelines.training import build
from data_pipelines.training import clips
from data_pipelines.training import pipeline
from data_pipelines.training import sampler
from data_pipelines.training import synthetic_train
from tests.conftest import ROOT, load_config
from tests import pipeline_fakes


def _visible(n, ids):
  v = np.zeros(n, bool)
  v[list(ids)] = True
  return v


def _rngs(count, seed=0):
  return [np.random.default_rng([seed, i]) for i in range(count)]


# --- sequential --------------------------------------------------------------------------------------------

def test_sequential_search_run_skips_invisible_frames_and_pads_with_the_last_frame():
  # N=12, S=4: templates come from [0, 8), where only frame 5 is visible; max_gap=-1 starts the run there.
  # Visible from 5 on: 5, 9, 11 -> the run is [5, 9, 11] and the padding repeats N - 1 = 11.
  templates, searches = clips.sequential_frame_ids(_visible(12, [5, 9, 11]), np.random.default_rng(0), 3, 4, -1)
  assert templates == [5, 5, 5] and searches == [5, 9, 11, 11]
  # Invisible tail: the original's scan still ends at N - 1 = 11 and pads with it, though it is not visible.
  _, searches = clips.sequential_frame_ids(_visible(12, [5, 8, 9]), np.random.default_rng(0), 2, 4, -1)
  assert searches == [5, 8, 9, 11]


def test_sequential_templates_sorted_before_the_search_run():
  n, num_searches, max_gap = 60, 8, 6
  visible = np.ones(n, bool)
  visible[[3, 10, 11, 12, 30, 31, 50, 51, 52, 57]] = False
  lefts, paddings = set(), 0
  for rng in _rngs(300):
    templates, searches = clips.sequential_frame_ids(visible, rng, 5, num_searches, max_gap)
    assert templates == sorted(templates) and len(searches) == num_searches
    assert all(0 <= t < n - num_searches and visible[t] for t in templates)
    left = searches[0]
    assert templates[-1] <= left < min(n - num_searches, templates[-1] + max_gap) and visible[left]
    lefts.add(left - templates[-1])
    # Consecutive visible frames (strictly increasing, none visible skipped in between) up to the end of
    # the video; then the padding, N - 1 repeated.
    run = [i for i in searches if i != n - 1]
    for a, b in zip(run, run[1:]):
      assert a < b and visible[b] and not visible[a + 1:b].any()
    padding = searches[len(run):]
    assert padding == [n - 1] * len(padding)
    if padding:
      assert not visible[run[-1] + 1:n - 1].any()
      paddings += 1
  assert lefts == set(range(max_gap))  # every offset in [0, max_gap) occurs (visible permitting)
  assert 0 < paddings < 300


def test_sequential_impossible_ranges_raise_sampling_error():
  with pytest.raises(sampler.SamplingError, match="20 frames with 4 visible"):
    clips.sequential_frame_ids(_visible(20, [16, 17, 18, 19]), np.random.default_rng(0), 2, 4, 5)
  with pytest.raises(sampler.SamplingError, match="max_gap=0"):  # the original crashes on None[0]
    clips.sequential_frame_ids(np.ones(20, bool), np.random.default_rng(0), 2, 4, 0)


# --- random interval ---------------------------------------------------------------------------------------

def test_random_interval_one_template_and_gaps_at_most_max_interval():
  n, num_searches, max_gap, max_interval = 100, 8, 10, 5
  visible = np.ones(n, bool)
  visible[40:43] = False
  for rng in _rngs(300):
    templates, searches = clips.random_interval_frame_ids(visible, rng, 4, num_searches, max_gap, max_interval)
    assert len(set(templates)) == 1 and len(templates) == 4
    t = templates[0]
    assert 0 <= t < n - max_interval * (num_searches - 1) and visible[t]   # [0, 65)
    assert t <= searches[0] < min(max(65, t + 1), t + max_gap)
    assert len(searches) == num_searches and all(visible[s] for s in searches)
    gaps = np.diff(searches)
    assert np.all(gaps >= 0) and np.all(gaps <= max_interval)


def test_random_interval_shrinks_the_interval_to_fit_the_sequence():
  # N=20, S=8, max_interval=5: 5 * 7 > 20, so avg_interval = 2 and the template range is [0, 20 - 14).
  drawn = {clips.random_interval_frame_ids(np.ones(20, bool), rng, 1, 8, 50, 5)[0][0] for rng in _rngs(200)}
  assert drawn == set(range(6))
  # Visible only from 12 on (N=20, S=4, max_interval=5): ranges [0, 5), [0, 8), [0, 11) are empty,
  # [0, 14) holds 12 and 13.
  drawn = {clips.random_interval_frame_ids(_visible(20, range(12, 20)), rng, 1, 4, 5, 5)[0][0]
           for rng in _rngs(100)}
  assert drawn == {12, 13}
  # Visible only at 18 and 19: empty down to avg_interval 0, where the first visible frame is taken.
  templates, _ = clips.random_interval_frame_ids(_visible(20, [18, 19]), np.random.default_rng(0), 2, 4, 5, 5)
  assert templates == [18, 18]


def test_random_interval_stalls_before_a_long_invisible_run():
  # Frames 10..29 invisible (longer than max_interval=3): from a template before 10 the clip cannot cross.
  visible = np.ones(40, bool)
  visible[10:30] = False
  for rng in _rngs(100):
    templates, searches = clips.random_interval_frame_ids(visible, rng, 1, 10, 1, 3)
    if templates[0] < 10:
      assert searches[0] == templates[0] and max(searches) <= 9  # max_gap=1: the run starts at the template


def test_random_interval_bad_arguments():
  with pytest.raises(sampler.SamplingError, match="5 frames with 5 visible"):  # S - 1 > N: the original spins
    clips.random_interval_frame_ids(np.ones(5, bool), np.random.default_rng(0), 1, 8, 5, 5)
  with pytest.raises(sampler.SamplingError, match="no visible frame"):
    clips.random_interval_frame_ids(np.zeros(30, bool), np.random.default_rng(0), 1, 4, 5, 5)
  with pytest.raises(ValueError, match="max_interval"):
    clips.random_interval_frame_ids(np.ones(30, bool), np.random.default_rng(0), 1, 4, 5, -1)


# --- sample_clip -------------------------------------------------------------------------------------------

@dataclasses.dataclass
class _Seq:
  visible: np.ndarray
  is_video: bool = True


_Dataset = pipeline_fakes.FakeDataset


def test_sample_clip_redraws_short_sequences_and_flips_the_mode_coin():
  num_templates, num_searches = 2, 4  # need > 12 visible frames and >= 6 frames
  good = _Seq(np.ones(30, bool))
  few_visible = _Seq(_visible(30, range(12)))  # 12 visible: not more than 12
  data = [_Dataset("v", [few_visible, good])]
  p = sampler.dataset_probabilities([1])
  args = (num_templates, num_searches, 3, 2)
  picks = [clips.sample_clip(data, p, rng, *args, 0.0)[0] for rng in _rngs(100)]
  assert {pk.sequence for pk in picks} == {1}
  # interval_prob=0: always sequential (distinct sorted templates occur); 1: always one repeated template.
  assert any(len(set(pk.template_ids)) > 1 for pk in picks)
  picks = [clips.sample_clip(data, p, rng, *args, 1.0)[0] for rng in _rngs(100)]
  assert all(len(set(pk.template_ids)) == 1 for pk in picks)
  images = _Dataset("images", [_Seq(np.ones(1, bool), is_video=False)])
  pick, _ = clips.sample_clip([images], p, np.random.default_rng(0), *args, 0.5)
  assert pick.template_ids == (0, 0) and pick.search_ids == (0, 0, 0, 0)
  with pytest.raises(sampler.SamplingError, match="no sequence of v"):
    clips.sample_clip([_Dataset("v", [few_visible])], p, np.random.default_rng(0), *args, 0.0)


# --- canvas ------------------------------------------------------------------------------------------------

def _sequence_of(tmp_path, name, height, width, value, box, num_frames=8):
  frames = []
  for f in range(num_frames):
    path = str(tmp_path / f"{name}_{f}.png")
    cv2.imwrite(path, np.full((height, width, 3), value, np.uint8))
    frames.append(path)
  return pipeline_fakes.FakeSequence(name, tuple(frames), np.tile(np.float32(box), (num_frames, 1)),
                                     np.ones(num_frames, bool))


@pytest.mark.parametrize("height,width,canvas,box,scale,placed,scaled_box", [
    (50, 80, 40, [10, 6, 20, 12], 0.5, (25, 40), [5, 3, 10, 6]),           # larger: halved
    (64, 100, 48, [10, 10, 20, 20], 0.48, (31, 48), [4.8, 4.8, 9.6, 9.6]),  # 64 * 0.48 = 30.72 -> 31 rows
    (20, 30, 40, [2, 3, 4, 5], 1.0, (20, 30), [2, 3, 4, 5]),                # smaller: not upscaled
])
def test_frames_are_placed_top_left_and_boxes_scaled(tmp_path, height, width, canvas, box, scale, placed,
                                                     scaled_box):
  data = pipeline_fakes.FakeDataset("one", [_sequence_of(tmp_path, "a", height, width, 200, box)])
  clip = clips.ClipExamples([data], [1.0], num_templates=1, num_searches=2, max_gap=3, max_interval=2,
                            interval_prob=0.0, canvas=canvas)(0)
  assert clip["template_frames"].shape == (1, canvas, canvas, 3)
  assert clip["search_frames"].shape == (2, canvas, canvas, 3) and clip["search_frames"].dtype == np.uint8
  for part in ("template", "search"):
    frames = clip[f"{part}_frames"]
    assert np.all(frames[:, :placed[0], :placed[1]] == 200)  # INTER_AREA keeps a flat colour flat
    assert not frames[:, placed[0]:].any() and not frames[:, :, placed[1]:].any()
    np.testing.assert_array_equal(clip[f"{part}_sizes"], np.tile(placed, (len(frames), 1)))
    np.testing.assert_allclose(clip[f"{part}_scales"], scale, rtol=1e-7)
    np.testing.assert_allclose(clip[f"{part}_boxes"], np.tile(scaled_box, (len(frames), 1)), rtol=1e-6)
  assert clip["template_boxes"].dtype == np.float32 and clip["search_sizes"].dtype == np.int32
  assert not clip["skips"].any()


# --- the grain clip pipeline -------------------------------------------------------------------------------

def _fake_examples(tmp_path, seed=0, corrupt=()):
  data = pipeline_fakes.make_video_dataset(str(tmp_path), corrupt=corrupt)  # 3 x 24 frames of 24x32
  return clips.ClipExamples([data], [1.0], num_templates=2, num_searches=4, max_gap=5, max_interval=2,
                            interval_prob=0.5, canvas=32, seed=seed)


def _frame_codes(batch):
  """[B, T + S] the (sequence, frame) code each placed frame carries (pipeline_fakes: s * 50 + f)."""
  return np.concatenate([batch["template_frames"][:, :, 0, 0, 0], batch["search_frames"][:, :, 0, 0, 0]], 1)


_take = pipeline_fakes.take
_equal = pipeline_fakes.assert_batches_equal


def test_same_seed_same_clips_and_another_seed_differs(tmp_path):
  examples = _fake_examples(tmp_path)
  a = _take(iter(clips.clip_dataset(examples, 3)), 2)
  b = _take(iter(clips.clip_dataset(examples, 3)), 2)
  _equal(a, b)
  assert a[0]["search_frames"].shape == (3, 4, 32, 32, 3) and a[0]["template_boxes"].shape == (3, 2, 4)
  assert a[0]["skips"].shape == (3, len(pipeline.SKIP_REASONS))
  other = _take(iter(clips.clip_dataset(_fake_examples(tmp_path, seed=1), 3)), 2)
  assert not np.array_equal(_frame_codes(other[0]), _frame_codes(a[0]))


def test_only_the_sampled_frames_are_read(tmp_path, monkeypatch):
  examples = _fake_examples(tmp_path)
  read = []
  real_read = pipeline.read_image
  me = threading.get_ident()  # grain reader threads left by earlier tests' iterators may still be reading

  def recording_read(path):
    if threading.get_ident() == me:
      read.append(path)
    return real_read(path)

  monkeypatch.setattr(pipeline, "read_image", recording_read)
  probabilities = sampler.dataset_probabilities([1.0])
  for index in range(5):
    read.clear()
    clip = examples(index)
    assert not clip["skips"].any()
    pick, seq = clips.sample_clip(examples.datasets, probabilities, np.random.default_rng([0, index]), 2, 4, 5,
                                  2, 0.5)
    expected = {seq.frames[i] for i in pick.template_ids + pick.search_ids}
    assert sorted(read) == sorted(expected)  # each distinct frame once, nothing else
    np.testing.assert_array_equal(_frame_codes({k: v[None] for k, v in clip.items()})[0],
                                  [pick.sequence * 50 + i for i in pick.template_ids + pick.search_ids])


def test_resume_from_iterator_state_continues_with_the_next_batch(tmp_path):
  examples = _fake_examples(tmp_path)
  it = iter(clips.clip_dataset(examples, 2))
  _take(it, 2)
  state = it.get_state()
  expected = _take(it, 2)
  resumed = iter(clips.clip_dataset(examples, 2))
  resumed.set_state(state)
  _equal(_take(resumed, 2), expected)


def test_worker_count_does_not_change_the_clips(tmp_path, monkeypatch):
  # Workers import tests.pipeline_fakes by name: put the repository root on their path.
  monkeypatch.setenv("PYTHONPATH", ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  examples = _fake_examples(tmp_path)
  serial = _take(iter(clips.clip_dataset(examples, 2, shard_index=1, shard_count=2)), 3)
  parallel = _take(iter(clips.clip_dataset(examples, 2, shard_index=1, shard_count=2, num_workers=2)), 3)
  _equal(serial, parallel)
  whole = _take(iter(clips.clip_dataset(examples, 2)), 6)
  np.testing.assert_array_equal(np.concatenate([_frame_codes(b) for b in whole])[1::2],
                                np.concatenate([_frame_codes(b) for b in serial]))


def test_corrupt_frames_are_redrawn_and_counted(tmp_path):
  corrupt = {(s, f) for s in range(3) for f in (8, 9, 10)}
  examples = _fake_examples(tmp_path, corrupt=corrupt)
  batches = _take(iter(clips.clip_dataset(examples, 8)), 2)
  skips = np.sum([b["skips"] for b in batches], axis=(0, 1))
  assert skips[pipeline.SKIP_REASONS.index("unreadable_image")] > 0
  codes = np.concatenate([_frame_codes(b) for b in batches])
  assert not np.isin(codes, [s * 50 + f for s, f in corrupt]).any()


def test_invisible_padding_frame_without_a_box_is_redrawn(tmp_path):
  # Visible 0..13, then 14..19 gone with a 0,0,0,0 box (LaSOT out of view). S=4, max_gap=-1: a run
  # starting at 12 or 13 is padded with frame 19, whose box is not usable.
  data = pipeline_fakes.make_video_dataset(str(tmp_path), num_sequences=1, num_frames=20)
  seq = data.seqs[0]
  seq.visible[14:] = False
  seq.boxes[14:] = 0
  examples = clips.ClipExamples([data], [1.0], num_templates=1, num_searches=4, max_gap=-1, max_interval=2,
                                interval_prob=0.0, canvas=32)
  batches = _take(iter(clips.clip_dataset(examples, 8)), 2)
  skips = np.sum([b["skips"] for b in batches], axis=(0, 1))
  assert skips[pipeline.SKIP_REASONS.index("bad_box")] > 0
  assert np.concatenate([_frame_codes(b) for b in batches]).max() <= 13


def test_builders_read_the_config_and_make_synthetic_clips(tmp_path):
  config = load_config("fartrack_sparse")  # smoke: T=2, S=4, canvas 96
  made = synthetic_train.make_synthetic_train_dataset("got10k_train", str(tmp_path / "got10k"), num_sequences=2,
                                                      num_frames=30, size=(160, 120))
  datasets = build.train_datasets_from_config(config, {"synthetic": str(tmp_path / "got10k")},
                                              str(tmp_path / "cache"))
  examples = build.clip_examples_from_config(config, datasets, seed=3)
  assert (examples.num_templates, examples.num_searches, examples.canvas) == (2, 4, 96)
  assert (examples.max_gap, examples.max_interval, examples.seed) == (300, 5, 3)
  clip = examples(0)
  assert clip["search_frames"].shape == (4, 96, 96, 3) and clip["template_frames"].shape == (2, 96, 96, 3)
  np.testing.assert_allclose(clip["search_scales"], 0.6)  # 96 / 160
  np.testing.assert_array_equal(clip["search_sizes"], [[72, 96]] * 4)
  pick, seq = clips.sample_clip(datasets, np.ones(1), np.random.default_rng([3, 0]), 2, 4, 300, 5, 0.0)
  truth = made[pick.sequence]
  np.testing.assert_allclose(clip["search_boxes"], truth.boxes[list(pick.search_ids)] * 0.6, rtol=1e-6)
  frame_config = load_config("fartrack")
  frames = build.frame_examples_from_config(frame_config, datasets, seed=1)
  assert (frames.num_templates, frames.max_gap, frames.ratios) == (2, 300, (1.0,))
  assert frames(0)["templates"].shape == (2, 32, 32, 3)
  with pytest.raises(ValueError, match=r"data\.max_interval"):
    build.clip_examples_from_config(frame_config, datasets, seed=0)
  with pytest.raises(ValueError, match="split"):
    build.train_datasets_from_config(config, {}, None, split="test")
  with pytest.raises(ValueError, match=r"data\.train\.datasets_ratio"):
    build.clip_examples_from_config(config, datasets * 2, seed=0)


# --- the original ------------------------------------------------------------------------------------------

_REPO = os.environ.get("FARTRACK_TORCH_REPO")
_needs_repo = pytest.mark.skipif(not _REPO, reason="set FARTRACK_TORCH_REPO to a checkout of the original "
                                 "FARTrack code (plus torch)")


class _RecordingRng:
  """A numpy Generator that logs every draw, for the original's `random` calls to replay."""

  def __init__(self, seed):
    self._rng = np.random.default_rng(seed)
    self.log = []

  def choice(self, a, size=None, replace=True, p=None):
    out = self._rng.choice(a, size=size, replace=replace, p=p)
    self.log.append(("choice", a, size, p, out))
    return out

  def integers(self, high):
    out = self._rng.integers(high)
    self.log.append(("integers", high, out))
    return out

  def random(self):
    out = self._rng.random()
    self.log.append(("random", out))
    return out


def _replay(monkeypatch, random_module, log):
  """Patches `random.choices/randint/random` to hand back `log`'s draws in order, checking that the
  original asks for the same thing (same candidate ids, same count, same range)."""
  log = list(log)

  def next_draw(kind):
    assert log, f"the original draws more than we did (a {kind})"
    entry = log.pop(0)
    assert entry[0] == kind, f"the original draws a {kind} where we drew a {entry[0]}"
    return entry

  def choices(population, weights=None, *, cum_weights=None, k=1):
    _, a, size, p, out = next_draw("choice")
    if np.ndim(a) == 0:  # our dataset draw: rng.choice(len(datasets), p=probabilities)
      assert len(population) == a and np.allclose(np.asarray(weights) / np.sum(weights), p) and k == 1
      return [population[int(out)]]
    assert list(population) == [int(i) for i in a] and k == size
    return [int(i) for i in out]

  def randint(low, high):
    _, n, out = next_draw("integers")
    assert (low, high) == (0, n - 1)
    return low + int(out)

  def random():
    return next_draw("random")[1]

  monkeypatch.setattr(random_module, "choices", choices)
  monkeypatch.setattr(random_module, "randint", randint)
  monkeypatch.setattr(random_module, "random", random)
  return log


@pytest.fixture(scope="module")
def original():
  from fartrack_jax import parity  # pylint: disable=g-import-not-at-top
  parity.prepare_cpu_runtime()
  if _REPO not in sys.path:
    sys.path.insert(0, _REPO)
  import importlib  # pylint: disable=g-import-not-at-top
  return importlib.import_module("lib.train.data.sequence_sampler_v3")


def _random_visible(rng, num_searches):
  n = int(rng.integers(num_searches + 1, 90))
  visible = rng.random(n) < rng.uniform(0.3, 1.0)
  if rng.random() < 0.5:  # an invisible stretch, possibly at the end
    start = int(rng.integers(n))
    visible[start:start + int(rng.integers(1, 25))] = False
  visible[int(rng.integers(n - num_searches))] = True  # the templates' range is never empty
  return visible


@_needs_repo
def test_frame_ids_equal_the_originals_on_replayed_draws(original, monkeypatch):
  cases = np.random.default_rng(7)
  for case in range(400):
    num_searches = int(cases.integers(1, 16))
    max_gap = int(cases.choice([-1, 1, 2, 5, 30, 300]))
    max_interval = int(cases.choice([0, 1, 2, 5, 10]))
    visible = _random_visible(cases, num_searches)
    theirs = original.SequenceSampler([], [1], 1, max_gap, num_searches, max_interval=max_interval)
    for mode in ("sequential", "random_interval"):
      rng = _RecordingRng([7, case])
      if mode == "sequential":
        ours = clips.sequential_frame_ids(visible, rng, 5, num_searches, max_gap)
      else:
        ours = clips.random_interval_frame_ids(visible, rng, 5, num_searches, max_gap, max_interval)
      left = _replay(monkeypatch, original.random, rng.log)
      templates, searches = getattr(theirs, f"_{mode}_sample")([bool(v) for v in visible])
      assert not left, f"case {case} {mode}: the original drew less than we did"
      assert list(ours[1]) == list(searches), (case, mode)
      if mode == "sequential":
        assert ours[0] == templates, (case, mode)
      else:  # the original's one template (with max_gap=-1 its list is also the search list)
        assert ours[0] == [templates[0]] * 5, (case, mode)


@_needs_repo
def test_sample_clip_equals_the_originals_getitem_on_replayed_draws(original, monkeypatch):
  import torch  # pylint: disable=g-import-not-at-top
  num_templates, num_searches = 5, 6  # the original hard-codes 5 templates
  cases = np.random.default_rng(8)
  # Some sequences fail the redraw rule (<= 22 visible or < 11 frames); the last two always pass it.
  videos = [_random_visible(cases, num_searches) for _ in range(4)]
  videos += [np.r_[np.ones(30), np.zeros(10), np.ones(5)].astype(bool), np.ones(25, bool)]
  ours_data = [_Dataset("videos", [_Seq(v) for v in videos]),
               _Dataset("images", [_Seq(np.ones(1, bool), is_video=False)])]

  class TheirDataset:
    def __init__(self, data):
      self.data = data

    def get_name(self):
      return self.data.name

    def is_video_sequence(self):
      return self.data.seqs[0].is_video

    def get_num_sequences(self):
      return len(self.data)

    def get_sequence_info(self, seq_id):
      return {"visible": torch.from_numpy(self.data.seqs[seq_id].visible)}

    def get_frames(self, seq_id, ids, info):
      return list(ids), {"bbox": [torch.zeros(4)] * len(ids)}, {}

  theirs = original.SequenceSampler([TheirDataset(d) for d in ours_data], [2, 1], 1, max_gap=4,
                                    num_search_frames=num_searches, max_interval=3,
                                    frame_sample_mode="random_interval", prob=0.5)
  probabilities = sampler.dataset_probabilities([2, 1])
  kinds = set()
  for i in range(200):
    rng = _RecordingRng([8, i])
    pick, _ = clips.sample_clip(ours_data, probabilities, rng, num_templates, num_searches, 4, 3, 0.5)
    left = _replay(monkeypatch, original.random, rng.log)
    out = theirs[i]
    assert not left, f"clip {i}: the original drew less than we did"
    assert out["dataset"] == ours_data[pick.dataset].name and out["seq_id"] == pick.sequence
    search = np.atleast_1d(out["search_images"])
    template = np.atleast_1d(out["template_images"])
    if pick.dataset == 1:  # the original passes id 1 to an image reader; ours uses the one frame, 0
      assert set(search) == {1} and set(template) == {1} and set(pick.search_ids) == {0}
      kinds.add("image")
      continue
    assert list(search) == list(pick.search_ids)
    if len(template) == 1:  # random_interval: one template id
      assert pick.template_ids == (int(template[0]),) * num_templates
      kinds.add("random_interval")
    else:
      assert list(template) == list(pick.template_ids)
      kinds.add("sequential")
  assert kinds == {"image", "random_interval", "sequential"}
