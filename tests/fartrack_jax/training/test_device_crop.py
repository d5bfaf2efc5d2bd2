"""On-device search/template crops and box mappings (`fartrack_jax/training/device_crop.py`).

The crops are checked against a numpy/OpenCV reference written here from the original's `get_subwindow`
(pad with the truncated channel mean, slice the window, `cv2.resize` INTER_LINEAR on uint8), and, with
FARTRACK_TORCH_REPO set, against the original actor's own `get_subwindow`, `_bbox_clip` and `batch_track`.

Tolerances: the original resizes uint8 patches with OpenCV's fixed-point bilinear (11-bit weights,
truncating shifts), which lands up to ~0.8 grey levels from exact bilinear values. The crops here
reproduce that arithmetic, so they must lie within 1 grey level of OpenCV everywhere, with a mean absolute
difference <= 0.02 (a few per cent of pixels off by one), which leaves room for an OpenCV build that rounds
differently (on the build in the dev venv they agree exactly). The float path is checked against OpenCV's
float32 resize at 1e-3 (float32 rounding of the sampling positions and weights).
"""

import math
import os
import sys
import types

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fartrack_jax.training import device_crop as dc

MAX_ABS_TOLERANCE = 1.0
MEAN_ABS_TOLERANCE = 0.02
FLOAT_TOLERANCE = 1e-3
CANVAS = 64


def reference_subwindow(image: np.ndarray, center_xy, s, output_size: int, float_resize: bool = False):
  """The original's crop, written out: window of side floor(s) from floor(c - (s + 1) / 2 + 0.5), the
  outside filled with the channel mean stored in uint8, then OpenCV INTER_LINEAR unless the side equals
  the output size."""
  height, width = image.shape[:2]
  side = int(math.floor(s))
  x0 = int(math.floor(center_xy[0] - (s + 1) / 2 + 0.5))
  y0 = int(math.floor(center_xy[1] - (s + 1) / 2 + 0.5))
  left, top = max(0, -x0), max(0, -y0)
  right, bottom = max(0, x0 + side - width), max(0, y0 + side - height)
  padded = np.zeros((height + top + bottom, width + left + right, 3), np.uint8)
  padded[:] = image.mean(axis=(0, 1))  # float64 into uint8: truncated, as in the original
  padded[top:top + height, left:left + width] = image
  patch = padded[y0 + top:y0 + top + side, x0 + left:x0 + left + side]
  if float_resize:
    patch = patch.astype(np.float32)
  if side != output_size:
    patch = cv2.resize(patch, (output_size, output_size))
  return patch.astype(np.float32)


def _image(rng, height, width, smooth):
  image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
  return cv2.GaussianBlur(image, (5, 5), 2.0) if smooth else image


def _canvas(image, fill=0):
  canvas = np.full((CANVAS, CANVAS, 3), fill, np.uint8)
  canvas[:image.shape[0], :image.shape[1]] = image
  return canvas


_crop = jax.jit(dc.get_subwindow, static_argnames=("output_size", "uint8_arithmetic"))

# (name, centre as fractions of (w, h) plus a pixel offset, side s, output size); the image is 40 x 52.
_WINDOWS = [
    ("inside_upscale", (0.5, 0.5), (0, 0), 20, 32),
    ("inside_downscale", (0.5, 0.5), (0, 0), 30, 16),
    ("inside_same_size", (0.5, 0.5), (0, 0), 24, 24),
    ("out_left", (0.0, 0.5), (3, 0), 24, 16),
    ("out_right", (1.0, 0.5), (-3, 0), 24, 32),
    ("out_top", (0.5, 0.0), (0, 2), 26, 16),
    ("out_bottom", (0.5, 1.0), (0, -2), 26, 32),
    ("out_corner", (1.0, 1.0), (5, 5), 31, 16),
    ("larger_than_image", (0.5, 0.5), (0, 0), 90, 32),
    ("far_outside", (0.0, 0.0), (-200, -150), 20, 16),
    ("one_pixel_side", (0.5, 0.5), (0, 0), 1, 8),
    ("fractional_side", (0.3, 0.6), (0, 0), 23.6, 16),
    ("downscale_past_2x", (0.4, 0.5), (0, 0), 75, 16),
]


def _window_inputs(rng, frac, offset, height=40, width=52):
  jitter = rng.uniform(-0.5, 0.5, 2)
  return np.array([frac[0] * width + offset[0] + jitter[0], frac[1] * height + offset[1] + jitter[1]])


@pytest.mark.parametrize("name,frac,offset,side,out", _WINDOWS, ids=[w[0] for w in _WINDOWS])
def test_crop_matches_opencv_reference(name, frac, offset, side, out):
  del name
  rng = np.random.default_rng(abs(hash((side, out, frac))) % 2**32)
  for trial in range(4):
    image = _image(rng, 40, 52, smooth=trial % 2 == 1)
    center = _window_inputs(rng, frac, offset)
    expected = reference_subwindow(image, center, side, out)
    got = np.asarray(_crop(_canvas(image), np.array([40, 52]), center, side, output_size=out))
    assert got.shape == (out, out, 3) and got.dtype == np.float32
    diff = np.abs(got - expected)
    assert diff.max() <= MAX_ABS_TOLERANCE, (center, diff.max())
    assert diff.mean() <= MEAN_ABS_TOLERANCE, (center, diff.mean())
    # The float path pins the sampling geometry with no fixed point in the way.
    expected = reference_subwindow(image, center, side, out, float_resize=True)
    got = np.asarray(_crop(_canvas(image), np.array([40, 52]), center, side, output_size=out,
                           uint8_arithmetic=False))
    np.testing.assert_allclose(got, expected, atol=FLOAT_TOLERANCE)


def test_crop_matches_opencv_on_random_frames_and_windows():
  rng = np.random.default_rng(7)
  worst, means = 0.0, []
  for _ in range(30):
    height, width = (int(v) for v in rng.integers(8, CANVAS + 1, 2))
    image = _image(rng, height, width, smooth=bool(rng.integers(2)))
    center = rng.uniform(-15, max(height, width) + 15, 2)
    side, out = int(rng.integers(1, 130)), int(rng.choice([8, 16, 24, 40]))
    diff = np.abs(np.asarray(_crop(_canvas(image, 255), np.array([height, width]), center, side,
                                   output_size=out)) - reference_subwindow(image, center, side, out))
    worst = max(worst, float(diff.max()))
    means.append(float(diff.mean()))
  assert worst <= MAX_ABS_TOLERANCE
  assert max(means) <= MEAN_ABS_TOLERANCE


def test_hand_computed_crop_geometry_and_fill():
  # Channel 0 is 10 x column, channel 1 is 5 x row; s = 4 around (10, 10): window columns/rows 8..11
  # (xmin = floor(10 - 2.5 + 0.5)); upscaled to 8, output pixel d samples 8 + clamp(d / 2 - 0.25, 0, 3).
  image = np.zeros((20, 20, 3), np.uint8)
  image[:, :, 0] = 10 * np.arange(20)[None, :]
  image[:, :, 1] = 5 * np.arange(20)[:, None]
  canvas = _canvas(image, 255)
  got = np.asarray(_crop(canvas, np.array([20, 20]), np.array([10.0, 10.0]), 4, output_size=8,
                         uint8_arithmetic=False))
  samples = 8 + np.clip(np.arange(8) / 2 - 0.25, 0, 3)
  np.testing.assert_allclose(got[0, :, 0], 10 * samples, atol=1e-4)
  np.testing.assert_allclose(got[:, 0, 1], 5 * samples, atol=1e-4)
  # OpenCV's fixed point gives 82 at d = 1 (82.5 exactly in float): (512 * 10560 >> 16) +
  # (1536 * 10560 >> 16) = 82 + 247, then (329 + 2) >> 2.
  got = np.asarray(_crop(canvas, np.array([20, 20]), np.array([10.0, 10.0]), 4, output_size=8))
  assert got[0, 1, 0] == 82.0

  # Fill: channel 0 holds 0..15 (mean 7.5): the original stores 7 (uint8 truncation), not 8. Centre x = 0
  # puts the window at columns -2..1; s = out = 4, so no resize.
  image = np.zeros((4, 4, 3), np.uint8)
  image[:, :, 0] = np.arange(16).reshape(4, 4)
  got = np.asarray(_crop(_canvas(image, 255), np.array([4, 4]), np.array([0.0, 1.5]), 4, output_size=4))
  # ymin = floor(1.5 - 2.5 + 0.5) = -1: row 0 is fill, rows 1..3 are image rows 0..2.
  np.testing.assert_array_equal(got[:, :2, 0], 7.0)
  np.testing.assert_array_equal(got[0, :, 0], 7.0)
  np.testing.assert_array_equal(got[1:, 2:, 0], image[:3, :2, 0])


def test_canvas_beyond_the_real_image_never_leaks_in():
  rng = np.random.default_rng(3)
  image = _image(rng, 23, 37, smooth=False)
  size = np.array([23, 37])
  np.testing.assert_allclose(np.asarray(dc.channel_mean(_canvas(image, 255), size)),
                             image.reshape(-1, 3).mean(axis=0), rtol=1e-6)
  for center, side, out in [((30.0, 20.0), 30, 16), ((18.0, 11.0), 80, 24), ((36.5, 22.5), 9, 16)]:
    white = np.asarray(_crop(_canvas(image, 255), size, np.array(center), side, output_size=out))
    black = np.asarray(_crop(_canvas(image, 0), size, np.array(center), side, output_size=out))
    np.testing.assert_array_equal(white, black)
    diff = np.abs(white - reference_subwindow(image, center, side, out))
    assert diff.max() <= MAX_ABS_TOLERANCE and diff.mean() <= MEAN_ABS_TOLERANCE


def test_channel_mean_counts_only_the_real_pixels():
  canvas = np.full((8, 8, 3), 255, np.uint8)
  canvas[:2, :3] = [[[0, 10, 20]] * 3, [[6, 10, 21]] * 3]
  np.testing.assert_allclose(np.asarray(dc.channel_mean(canvas, [2, 3])), [3.0, 10.0, 20.5])


def test_explicit_channel_average_is_truncated_like_the_original():
  image = np.full((6, 6, 3), 50, np.uint8)
  got = np.asarray(_crop(_canvas(image), np.array([6, 6]), np.array([0.0, 0.0]), 6, output_size=6,
                         channel_average=np.array([99.9, 0.2, 300.0])))
  np.testing.assert_array_equal(got[0, 0], [99.0, 0.0, 255.0])
  np.testing.assert_array_equal(got[5, 5], [50.0, 50.0, 50.0])


@pytest.mark.slow
def test_jit_and_vmap_match_the_eager_call():
  rng = np.random.default_rng(11)
  sizes = np.array([[40, 52], [64, 30], [17, 64]], np.int32)
  canvases = np.stack([_canvas(_image(rng, h, w, smooth=False), 200) for h, w in sizes])
  centers = np.array([[10.3, 5.8], [28.0, 60.2], [70.0, -3.0]], np.float32)
  sides = np.array([33.0, 12.0, 57.0], np.float32)
  for uint8_arithmetic in (True, False):
    eager = np.stack([np.asarray(dc.get_subwindow(canvases[i], sizes[i], centers[i], sides[i], 24,
                                                  uint8_arithmetic=uint8_arithmetic)) for i in range(3)])
    batched = jax.jit(jax.vmap(lambda c, s, p, k, u=uint8_arithmetic: dc.get_subwindow(
        c, s, p, k, 24, uint8_arithmetic=u)))(canvases, sizes, centers, sides)
    np.testing.assert_allclose(np.asarray(batched), eager, atol=0 if uint8_arithmetic else 1e-4)
    for i in range(3):
      diff = np.abs(eager[i] - reference_subwindow(canvases[i, :sizes[i, 0], :sizes[i, 1]], centers[i],
                                                   sides[i], 24, float_resize=not uint8_arithmetic))
      assert diff.max() <= MAX_ABS_TOLERANCE


def test_crop_cost_does_not_grow_with_canvas_or_window():
  # With the fill given, no intermediate may exceed the 2 x 2 taps of every output pixel: [out, 2, out, 2, 3].
  out = 8
  jaxpr = jax.make_jaxpr(lambda c, p, s: dc.get_subwindow(c, [500, 500], p, s, out,
                                                          channel_average=[1.0, 2.0, 3.0]))(
      jnp.zeros((512, 512, 3), jnp.uint8), jnp.zeros(2), jnp.float32(400.0))
  sizes = [math.prod(v.aval.shape) for eqn in jaxpr.jaxpr.eqns for v in eqn.outvars]
  assert max(sizes) <= 4 * out * out * 3


def test_bad_inputs_name_the_field():
  with pytest.raises(ValueError, match="canvas"):
    dc.get_subwindow(np.zeros((8, 9, 3), np.uint8), [8, 8], [1.0, 1.0], 4, 4)
  with pytest.raises(ValueError, match="canvas"):
    dc.get_subwindow(np.zeros((8, 8, 3), np.float32), [8, 8], [1.0, 1.0], 4, 4)
  with pytest.raises(ValueError, match="output_size"):
    dc.get_subwindow(np.zeros((8, 8, 3), np.uint8), [8, 8], [1.0, 1.0], 4, 0)
  with pytest.raises(ValueError, match="center_xy"):
    dc.get_subwindow(np.zeros((8, 8, 3), np.uint8), [8, 8], [1.0, 1.0, 1.0], 4, 4)
  with pytest.raises(ValueError, match="size_hw"):
    dc.channel_mean(np.zeros((8, 8, 3), np.uint8), [8, 8, 3])


def test_context_side_by_hand():
  np.testing.assert_array_equal(np.asarray(dc.context_side([10.0, 10.0], 4.0)), 40.0)
  # sqrt((3 * 2) * (5 * 2)) = 7.746 -> 8
  np.testing.assert_array_equal(np.asarray(dc.context_side([[3.0, 5.0], [0.5, 2.0]], 2.0)), [8.0, 2.0])


def test_box_to_search_crop_by_hand():
  # Corners (10, 20, 40, 60) - centre (25, 40) = (-15, -20, 15, 20); x 200 / 100 + 100 = (70, 60, 130, 140).
  np.testing.assert_allclose(np.asarray(dc.crop_box_to_search([10, 20, 30, 40], [25, 40], 100, 200)),
                             [70, 60, 60, 80])
  # The original's missing-box test: corner coordinates summing to <= 10 map to zeros.
  np.testing.assert_array_equal(np.asarray(dc.crop_box_to_search([0, 0, 0, 0], [25, 40], 100, 200)), 0)
  np.testing.assert_array_equal(np.asarray(dc.crop_box_to_search([1, 1, 2, 2], [25, 40], 100, 200)), 0)
  assert bool(dc.box_is_annotated([1, 1, 4, 3])) and not bool(dc.box_is_annotated([1, 1, 2, 2]))


def test_previous_boxes_to_search_by_hand():
  # (cx, cy, w, h) = (25, 40, 30, 40) centred in a 100-pixel window: corners at +-15, +-20 around the
  # centre -> (35, 30, 65, 70) of 100 crop pixels when out = 100.
  got = np.asarray(dc.previous_boxes_to_search([[25, 40, 30, 40], [75, 40, 10, 10]], [25, 40], 100, 100))
  np.testing.assert_allclose(got, [[0.35, 0.30, 0.65, 0.70], [0.5 + 0.45, 0.45, 0.5 + 0.55, 0.55]],
                             atol=1e-6)


def test_search_bins_to_image_by_hand():
  bins, coord_range = 300, 2
  # Bin b -> b / 299 - 0.5 crop units: choose bins for (0.25, 0.25, 0.75, 0.75) -> (25, 25, 75, 75) in a
  # 100-pixel window, i.e. a 50 x 50 box centred in the window.
  pred = 299 * (np.array([0.25, 0.25, 0.75, 0.75]) + 0.5)
  center, size = dc.search_bins_to_image(pred, [200, 100], 100, [300, 400], bins=bins,
                                         coord_range=coord_range)
  np.testing.assert_allclose(np.asarray(center), [200, 100], atol=1e-3)
  np.testing.assert_allclose(np.asarray(size), [50, 50], atol=1e-3)
  np.testing.assert_allclose(np.asarray(dc.center_size_to_xywh(center, size)), [175, 75, 50, 50], atol=1e-3)
  # Near the right edge the centre is clipped to x = W; a 2-pixel-wide box grows to the 10-pixel minimum.
  pred = 299 * (np.array([0.74, 0.25, 0.76, 0.75]) + 0.5)
  center, size = dc.search_bins_to_image(pred, [390, 100], 100, [300, 400], bins=bins,
                                         coord_range=coord_range)
  np.testing.assert_allclose(np.asarray(center), [400, 100], atol=1e-3)
  np.testing.assert_allclose(np.asarray(size), [10, 50], atol=1e-3)


def test_clip_center_size_by_hand():
  center, size = dc.clip_center_size([[-5, 50], [30, 90]], [[500, 3], [6, 20]], [[60, 80], [60, 8]])
  np.testing.assert_array_equal(np.asarray(center), [[0, 50], [8, 60]])
  # Size capped at the image side first, then raised to 10: an 8-pixel-wide image still gets 10.
  np.testing.assert_array_equal(np.asarray(size), [[80, 10], [10, 20]])


# --- Against the original (FARTRACK_TORCH_REPO) -------------------------------------------------------

_REPO = os.environ.get("FARTRACK_TORCH_REPO")
_needs_repo = pytest.mark.skipif(not _REPO, reason="set FARTRACK_TORCH_REPO to a checkout of the original "
                                 "FARTrack code (plus torch)")


@pytest.fixture(scope="module")
def original_actor():
  from fartrack_jax import parity  # pylint: disable=g-import-not-at-top
  parity.prepare_cpu_runtime()  # among others: torch.Tensor.cuda -> identity
  if _REPO not in sys.path:
    sys.path.insert(0, _REPO)
  import importlib  # pylint: disable=g-import-not-at-top
  return importlib.import_module("lib.train.actors.fartrack_sparse")


@_needs_repo
def test_crop_matches_the_original_get_subwindow(original_actor):
  actor = original_actor.FARTrackSparseActor
  rng = np.random.default_rng(5)
  worst, means = 0.0, []
  cases = [(w[1], w[2], w[3], w[4]) for w in _WINDOWS if w[3] >= 1]
  for trial, (frac, offset, side, out) in enumerate(cases * 2):
    image = _image(rng, 40, 52, smooth=trial % 2 == 1)
    center = _window_inputs(rng, frac, offset)
    expected = actor.get_subwindow(None, image, center, out, side, image.mean(axis=(0, 1)))
    expected = expected[0].numpy().transpose(1, 2, 0)
    got = np.asarray(_crop(_canvas(image, 255), np.array([40, 52]), center, side, output_size=out))
    diff = np.abs(got - expected)
    worst = max(worst, float(diff.max()))
    means.append(float(diff.mean()))
  print(f"original get_subwindow: max abs diff {worst}, worst mean abs diff {max(means)}")
  assert worst <= MAX_ABS_TOLERANCE
  assert max(means) <= MEAN_ABS_TOLERANCE


@_needs_repo
def test_bbox_clip_matches_the_original(original_actor):
  actor = original_actor.FARTrackSparseActor
  rng = np.random.default_rng(2)
  for _ in range(20):
    cx, cy = rng.uniform(-50, 150, 2)
    width, height = rng.uniform(0, 200, 2)
    image_hw = tuple(int(v) for v in rng.integers(5, 120, 2))
    expected = actor._bbox_clip(None, cx, cy, width, height, image_hw)  # pylint: disable=protected-access
    center, size = dc.clip_center_size([cx, cy], [width, height], image_hw)
    np.testing.assert_allclose(np.concatenate([np.asarray(center), np.asarray(size)]), expected, rtol=1e-6)


@_needs_repo
def test_batch_track_mappings_match_the_original(original_actor):
  """One `batch_track` step of the original (a stand-in network returns chosen bins) against ours: the
  normalised search crops, `gt_in_crop`, the previous-box sequence and the next predicted boxes."""
  import torch  # pylint: disable=g-import-not-at-top
  module = original_actor
  actor = module.FARTrackSparseActor
  search_size, search_factor, bins, coord_range, prenum = 32, 4.0, 300, 2, 3
  mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
  rng = np.random.default_rng(9)
  sizes = [(40, 52), (64, 33)]
  images = [_image(rng, h, w, smooth=True) for h, w in sizes]
  gt_boxes = np.array([[14.0, 9.5, 12.0, 9.0], [0.0, 0.0, 0.0, 0.0]])  # the second frame has no box
  center_pos = np.array([[20.3, 14.2], [5.0, 60.0]])
  box_size = np.array([[11.0, 8.5], [6.2, 9.7]])
  pre_bbox = rng.uniform(5, 40, (2, 4 * prenum))
  pred_bins = rng.uniform(200, 420, (2, 4))
  pred_bins[:, 2:] += 60  # x2 > x1, y2 > y1

  def normalize(tensor, mean_, std_, inplace):
    del inplace
    return (tensor - torch.tensor(mean_)[:, None, None]) / torch.tensor(std_)[:, None, None]

  data = types.SimpleNamespace
  net = lambda *args, **kwargs: {"mask": torch.ones(2, 4, 4) > 0, "seqs": torch.tensor(pred_bins),
                                 "x_feat": torch.zeros(2, 1)}
  state = data(
      cfg=data(DATA=data(SEARCH=data(FACTOR=search_factor, SIZE=search_size), TEMPLATE=data(FACTOR=2.0))),
      size=box_size.copy(), center_pos=center_pos.copy(), pre_bbox=pre_bbox.copy(), pre_num=prenum,
      bins=bins, range=coord_range, mask=torch.ones(2, 4, 4) > 0, mean=list(mean), std=list(std),
      inplace=False, net=net)
  state.get_subwindow = lambda *args: actor.get_subwindow(state, *args)
  state._bbox_clip = lambda *args: actor._bbox_clip(state, *args)  # pylint: disable=protected-access
  saved = module.tvisf
  module.tvisf = types.SimpleNamespace(normalize=normalize)  # torchvision is a stub in the dev venv
  try:
    expected = actor.batch_track(state, images, gt_boxes, template=None)
  finally:
    module.tvisf = saved

  for i, (height, width) in enumerate(sizes):
    side = dc.context_side(box_size[i], search_factor)
    crop = dc.get_subwindow(_canvas(images[i], 255), [height, width], center_pos[i], side, search_size)
    crop = (np.clip(np.asarray(crop) / 255.0, 0.0, 1.0) - mean) / std
    np.testing.assert_allclose(crop, expected["search_images"][i].numpy().transpose(1, 2, 0),
                               atol=1.0 / 255 / std.min() + 1e-5)
    np.testing.assert_allclose(np.asarray(dc.crop_box_to_search(gt_boxes[i], center_pos[i], side,
                                                                search_size)),
                               expected["gt_in_crop"][i].numpy(), atol=1e-3)
    previous = np.asarray(dc.previous_boxes_to_search(pre_bbox[i].reshape(prenum, 4), center_pos[i], side,
                                                      search_size)).reshape(-1)
    previous = previous * np.asarray(dc.box_is_annotated(gt_boxes[i]))
    np.testing.assert_allclose(previous, expected["pre_seq"][i].numpy(), atol=1e-5)
    center, size = dc.search_bins_to_image(pred_bins[i], center_pos[i], side, [height, width], bins=bins,
                                           coord_range=coord_range)
    np.testing.assert_allclose(np.asarray(dc.center_size_to_xywh(center, size)), expected["pred_bboxes"][i],
                               atol=1e-3)
