"""The training losses (`fartrack_jax/training/losses.py`) against hand-computed values and numpy references
written from the formulas, gradient sanity, and, with FARTRACK_TORCH_REPO set, the original actors' losses
and gradients on the same logits and targets."""

import functools
import math
import os
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from data_pipelines.training import processing
from fartrack_jax.training import losses
from tests.conftest import load_config


def _config(stage="fartrack", **train):
  """The smoke config of `stage` (bins 16, range 2: V = 37) with `train` fields overridden."""
  config = load_config(stage)
  for key, value in train.items():
    config.train[key] = value
  return config


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _siou_reference(pred, target, theta=4, eps=1e-7):
  """SIoU (Gevorgyan 2022) in float64, written from the formulas: angle cost sin(2 alpha), distance cost
  over the enclosing box with gamma = 2 - angle, shape cost with exponent theta, IoU without epsilon."""
  pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
  out_loss, out_iou = [], []
  for (a0, b0, a1, b1), (c0, d0, c1, d1) in zip(pred, target):
    cxp, cyp, cxt, cyt = (a0 + a1) / 2, (b0 + b1) / 2, (c0 + c1) / 2, (d0 + d1) / 2
    sigma = math.hypot(cxt - cxp, cyt - cyp)
    alpha = math.asin(abs(cyt - cyp) / (sigma + eps))
    angle = 1 - 2 * math.sin(alpha - math.pi / 4) ** 2
    gamma = 2 - angle
    enclose_w, enclose_h = max(a1, c1) - min(a0, c0), max(b1, d1) - min(b0, d0)
    distance = sum(1 - math.exp(-gamma * (d / (c + eps)) ** 2)
                   for d, c in ((cxt - cxp, enclose_w), (cyt - cyp, enclose_h)))
    wp, hp, wt, ht = a1 - a0, b1 - b0, c1 - c0, d1 - d0
    shape = sum((1 - math.exp(-abs(p - t) / (max(p, t) + eps))) ** theta for p, t in ((wp, wt), (hp, ht)))
    overlap = max(min(a1, c1) - max(a0, c0), 0) * max(min(b1, d1) - max(b0, d0), 0)
    iou = overlap / (wp * hp + wt * ht - overlap)
    out_loss.append(1 - iou + (shape + distance) / 2)
    out_iou.append(iou)
  return np.array(out_loss), np.array(out_iou)


def _expectation_reference(logits, bins):
  """Range 2: softmax over the 2*bins coordinate classes, class k worth -0.5 + k / bins."""
  grid = -0.5 + np.arange(2 * bins) / bins
  return (_softmax(np.asarray(logits, np.float64)[..., :2 * bins]) * grid).sum(-1)


def _ce_reference(logits, targets, weights):
  logits = np.asarray(logits, np.float64).reshape(-1, logits.shape[-1])
  targets = np.asarray(targets).reshape(-1)
  log_probs = np.log(_softmax(logits))
  w = weights[targets]
  return -(w * log_probs[np.arange(len(targets)), targets]).sum() / w.sum()


def _kl_reference(lower, upper):
  """KL(softmax(upper) || softmax(lower)) over the coordinate classes, summed, divided by the batch."""
  p = _softmax(np.asarray(upper, np.float64)[..., :-5])
  q = _softmax(np.asarray(lower, np.float64)[..., :-5])
  return (p * (np.log(p) - np.log(q))).sum() / lower.shape[0]


def _random_boxes(rng, n, low=-0.4, high=1.4):
  """[n, 4] well-formed (x0, y0, x1, y1) boxes."""
  xy = rng.uniform(low, high - 0.3, (n, 2))
  wh = rng.uniform(0.02, 0.3, (n, 2))
  return np.concatenate([xy, xy + wh], -1).astype(np.float32)


def _peaked_logits(rng, corners, bins, noise=1.0, width=3.0):
  """[N, 4, 2*bins + 5] float32 logits peaked near `corners` (in grid units), plus noise."""
  grid = -0.5 + np.arange(2 * bins) / bins
  coord = -((grid - corners[..., None]) * bins / width) ** 2
  special = rng.standard_normal(corners.shape + (5,))
  logits = np.concatenate([coord, special], -1) + noise * rng.standard_normal(corners.shape + (2 * bins + 5,))
  return logits.astype(np.float32)


# --- cross-entropy and decoding, by hand --------------------------------------------------------------------

def test_class_weights_are_one_for_coordinates_and_special_weight_for_the_five_tokens():
  weights = np.asarray(losses.class_weights(16, 2, 0.1))
  assert weights.shape == (37,) and weights.dtype == np.float32
  assert (weights[:32] == 1).all()
  np.testing.assert_array_equal(weights[32:], np.float32(0.1))


def test_weighted_cross_entropy_is_the_weighted_mean_of_nll_on_a_three_class_case():
  logits = np.float32([[0.0, 0.0, 0.0], [2.0, 0.0, -1.0], [1.0, 3.0, 0.0]])
  targets = np.int32([2, 0, 1])
  weights = np.float32([1.0, 0.5, 2.0])
  # Row 0: uniform, nll log 3, weight 2. Row 1: nll = log(e^2 + 1 + e^-1) - 2, weight 1. Row 2: nll =
  # log(e + e^3 + 1) - 3, weight 0.5.
  nll = [math.log(3), math.log(math.e ** 2 + 1 + math.e ** -1) - 2, math.log(math.e + math.e ** 3 + 1) - 3]
  expected = (2 * nll[0] + 1 * nll[1] + 0.5 * nll[2]) / (2 + 1 + 0.5)
  got = losses.weighted_cross_entropy(logits, targets, weights)
  np.testing.assert_allclose(got, expected, rtol=1e-6)
  # Batch axes are flattened: the same rows as [3, 1, 3] give the same mean.
  np.testing.assert_allclose(losses.weighted_cross_entropy(logits[:, None], targets[:, None], weights),
                             expected, rtol=1e-6)


def test_coordinate_grid_is_the_inclusive_torch_range_of_the_original():
  grid = losses.coordinate_grid(300, 2)
  # torch.range(-0.5, 1.5 - 1/600, 1/300): floor((2 - 1/600) * 300) + 1 = 600 entries, -0.5 + i/300 in
  # float64 rounded to float32; the end 1.5 - 1/600 itself is not on the grid, the last entry is 1.5 - 1/300.
  assert grid.shape == (600,) and grid.dtype == np.float32
  assert grid[0] == np.float32(-0.5) and grid[300] == np.float32(0.5)
  assert grid[-1] == np.float32(1.5 - 1 / 300)
  np.testing.assert_array_equal(grid[[1, 7, 599]], np.float32([-0.5 + 1 / 300, -0.5 + 7 / 300, 1.5 - 1 / 300]))
  np.testing.assert_array_equal(losses.coordinate_grid(16, 2), np.float32(-0.5 + np.arange(32) / 16))


def test_coordinate_grid_matches_torch_range_exactly():
  torch = pytest.importorskip("torch")
  import warnings  # pylint: disable=g-import-not-at-top
  for bins in (300, 16, 7):
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")  # torch.range is deprecated.
      expected = torch.range(-0.5, 1.5 - 1 / (bins * 2), 2 / (bins * 2)).numpy()
    np.testing.assert_array_equal(losses.coordinate_grid(bins, 2), expected)


def test_coordinate_grid_rejects_ranges_the_original_cannot_decode():
  # range 1: torch.range gives floor((bins - 1) / 2) + 1 entries, not bins: the original fails to broadcast.
  with pytest.raises(ValueError, match=r"model.bins=300, model.range=1.*150 entries"):
    losses.coordinate_grid(300, 1)


def test_expected_coordinates_of_a_peaked_distribution_lands_on_the_grid_value():
  bins = 16
  logits = np.zeros((2, 4, 37), np.float32)
  classes = np.array([[0, 8, 16, 31], [3, 5, 20, 30]])
  for b in range(2):
    for j in range(4):
      logits[b, j, classes[b, j]] = 80.0  # e^-80 ~ 2e-35: the other classes carry no weight in float32
  logits[..., 32:] = 1000.0  # special tokens are dropped before the softmax
  got = np.asarray(losses.expected_coordinates(logits, bins, 2))
  np.testing.assert_allclose(got, -0.5 + classes / 16, rtol=0, atol=1e-6)
  # Two equal peaks: the mean of their grid values.
  two = np.zeros((1, 4, 37), np.float32)
  two[0, :, 4] = two[0, :, 12] = 80.0
  np.testing.assert_allclose(losses.expected_coordinates(two, bins, 2), np.full((1, 4), -0.5 + 8 / 16),
                             atol=1e-6)


def test_expected_coordinates_rejects_a_vocabulary_of_the_wrong_size():
  with pytest.raises(ValueError, match=r"36 classes; model.bins=16 and model.range=2 give 32 \+ 5"):
    losses.expected_coordinates(np.zeros((1, 4, 36), np.float32), 16, 2)


# --- SIoU, by hand --------------------------------------------------------------------------------------------

def test_siou_of_identical_boxes_is_zero_with_iou_one():
  boxes = np.float32([[0.1, 0.2, 0.5, 0.6], [-0.3, 0.0, 1.2, 1.4]])
  loss, iou = losses.siou_loss(boxes, boxes)
  np.testing.assert_allclose(loss, [0, 0], atol=1e-6)
  np.testing.assert_allclose(iou, [1, 1], atol=1e-6)


def test_siou_of_disjoint_boxes_by_hand():
  # Unit squares side by side, 1 apart: centres 2 apart horizontally, so alpha = 0, angle cost
  # 1 - 2 sin^2(-pi/4) = 0, gamma = 2; enclosing width 3, rho_x = (2/3)^2; same shape; IoU 0.
  loss, iou = losses.siou_loss(np.float32([[0, 0, 1, 1]]), np.float32([[2, 0, 3, 1]]))
  np.testing.assert_allclose(iou, [0.0], atol=0)
  np.testing.assert_allclose(loss, [1 + (1 - math.exp(-2 * 4 / 9)) / 2], rtol=1e-6)


def test_siou_of_a_horizontally_shifted_box_by_hand():
  # Target 0.4 x 0.2 box; prediction shifted right by 0.1. Angle 0 (gamma 2); enclosing width 0.5, so
  # rho_x = (0.1/0.5)^2 = 0.04; shapes equal; IoU = 0.3*0.2 / (2*0.08 - 0.06) = 0.6.
  target = np.float32([[0.2, 0.3, 0.6, 0.5]])
  pred = np.float32([[0.3, 0.3, 0.7, 0.5]])
  loss, iou = losses.siou_loss(pred, target)
  np.testing.assert_allclose(iou, [0.6], rtol=1e-5)
  np.testing.assert_allclose(loss, [1 - 0.6 + (1 - math.exp(-2 * 0.04)) / 2], rtol=1e-5)


def test_siou_of_a_diagonally_shifted_box_uses_the_full_angle_cost():
  # Shift (0.1, 0.1): alpha = 45 degrees, angle cost 1 - 2 sin^2(0) = 1, gamma = 1; enclosing 0.5 x 0.5:
  # rho_x = rho_y = 0.04; IoU = 0.3*0.3 / (2*0.16 - 0.09) = 0.09 / 0.23. (eps shifts alpha by ~1e-6.)
  target = np.float32([[0.0, 0.0, 0.4, 0.4]])
  pred = np.float32([[0.1, 0.1, 0.5, 0.5]])
  loss, iou = losses.siou_loss(pred, target)
  np.testing.assert_allclose(iou, [0.09 / 0.23], rtol=1e-5)
  np.testing.assert_allclose(loss, [1 - 0.09 / 0.23 + 2 * (1 - math.exp(-0.04)) / 2], rtol=1e-5)


def test_siou_of_a_resized_box_with_the_same_centre_is_the_shape_cost():
  # Same centre (no distance cost); width 0.4 vs 0.2, heights equal: omega_w = 0.2 / 0.4 = 0.5.
  target = np.float32([[0.3, 0.3, 0.5, 0.5]])
  pred = np.float32([[0.2, 0.3, 0.6, 0.5]])
  loss, iou = losses.siou_loss(pred, target, theta=4)
  np.testing.assert_allclose(iou, [0.5], rtol=1e-5)
  np.testing.assert_allclose(loss, [1 - 0.5 + (1 - math.exp(-0.5)) ** 4 / 2], rtol=1e-5)
  loss2, _ = losses.siou_loss(pred, target, theta=2)
  np.testing.assert_allclose(loss2, [1 - 0.5 + (1 - math.exp(-0.5)) ** 2 / 2], rtol=1e-5)


def test_siou_matches_the_formula_reference_on_random_boxes():
  rng = np.random.default_rng(0)
  pred, target = _random_boxes(rng, 64), _random_boxes(rng, 64)
  loss, iou = losses.siou_loss(pred, target)
  ref_loss, ref_iou = _siou_reference(pred, target)
  # float32 vs float64 on O(1) values.
  np.testing.assert_allclose(loss, ref_loss, rtol=0, atol=2e-6)
  np.testing.assert_allclose(iou, ref_iou, rtol=0, atol=2e-6)


def test_siou_rejects_boxes_of_the_wrong_shape():
  with pytest.raises(ValueError, match=r"must both be \[N, 4\]"):
    losses.siou_loss(np.zeros((2, 4), np.float32), np.zeros((3, 4), np.float32))


# --- stage losses against numpy references ------------------------------------------------------------------

def _tokens_for(rng, n, bins):
  """Pipeline targets of random normalised search boxes, some past the crop (clamped)."""
  boxes = np.concatenate([rng.uniform(-0.7, 1.3, (n, 2)), rng.uniform(0.05, 0.8, (n, 2))], -1)
  return np.stack([processing.box_to_tokens(box, bins, 2)[1] for box in boxes])


def test_frame_loss_is_weighted_siou_plus_weighted_ce_of_the_four_tokens():
  rng = np.random.default_rng(1)
  config = _config("fartrack", l1_weight=0.25)
  tokens = _tokens_for(rng, 6, 16)
  logits = _peaked_logits(rng, tokens / 15 - 0.5, 16)
  loss, metrics = jax.jit(functools.partial(losses.frame_loss, config=config))(logits, tokens)

  weights = np.r_[np.ones(32), np.full(5, 0.1)]
  ce = _ce_reference(logits, tokens, weights)
  pred = _expectation_reference(logits, 16)
  target = tokens / 15.0 - 0.5  # the quantised corners, mapped back with bins - 1
  siou, iou = _siou_reference(pred, target)
  l1 = np.abs(pred - target).mean()
  np.testing.assert_allclose(metrics["ce"], ce, rtol=1e-5)
  np.testing.assert_allclose(metrics["siou"], siou.mean(), rtol=1e-5)
  np.testing.assert_allclose(metrics["iou"], iou.mean(), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(metrics["l1"], l1, rtol=1e-5)
  np.testing.assert_allclose(loss, 2.0 * siou.mean() + 2.0 * ce + 0.25 * l1, rtol=1e-5)


def test_frame_loss_rejects_bad_shapes_naming_the_fields():
  config = _config("fartrack")
  with pytest.raises(ValueError, match=r"coord_logits has shape \(2, 4, 40\).*model.bins \* model.range"):
    losses.frame_loss(np.zeros((2, 4, 40), np.float32), np.zeros((2, 4), np.int32), config)
  with pytest.raises(ValueError, match=r"target_tokens has shape \(2, 4\) and dtype float32"):
    losses.frame_loss(np.zeros((2, 4, 37), np.float32), np.zeros((2, 4), np.float32), config)


def test_inter_layer_kl_of_identical_layers_is_zero():
  logits = np.random.default_rng(2).standard_normal((3, 4, 37)).astype(np.float32)
  np.testing.assert_allclose(losses.inter_layer_kl(logits, logits), 0.0, atol=1e-6)


def test_inter_layer_kl_by_hand_ignores_special_tokens_and_divides_by_the_batch():
  # Two coordinate classes (bins 1, range 2) + 5 special tokens. Token 0 of sample 0: teacher (upper)
  # (3/4, 1/4), student (lower) (1/2, 1/2); everything else identical.
  lower = np.zeros((2, 4, 7), np.float32)
  upper = np.zeros((2, 4, 7), np.float32)
  upper[0, 0, :2] = np.log([0.75, 0.25])
  lower[0, 0, :2] = np.log([0.5, 0.5])
  upper[..., 2:] = 50.0  # special tokens: dropped before both softmaxes
  lower[..., 2:] = -50.0
  expected = (0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)) / 2  # batchmean: / B = 2
  np.testing.assert_allclose(losses.inter_layer_kl(lower, upper), expected, rtol=1e-5)
  # KL(upper || lower), not the reverse.
  reverse = (0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)) / 2
  assert abs(float(losses.inter_layer_kl(upper, lower)) - reverse) < 1e-6


def test_distill_loss_averages_per_layer_losses_and_adjacent_kls():
  rng = np.random.default_rng(3)
  config = _config("fartrack_distill")
  tokens = _tokens_for(rng, 4, 16)
  layers = np.stack([_peaked_logits(rng, tokens / 15 - 0.5, 16, noise=n) for n in (2.0, 1.0, 0.5)])
  loss, metrics = jax.jit(functools.partial(losses.distill_loss, config=config))(layers, tokens)

  weights = np.r_[np.ones(32), np.full(5, 0.1)]
  target = tokens / 15.0 - 0.5
  ces = [_ce_reference(layer, tokens, weights) for layer in layers]
  sious = [_siou_reference(_expectation_reference(layer, 16), target)[0].mean() for layer in layers]
  kls = [_kl_reference(layers[i], layers[i + 1]) for i in range(2)]
  for i in range(3):
    np.testing.assert_allclose(metrics[f"ce_layer_{i}"], ces[i], rtol=1e-5)
    np.testing.assert_allclose(metrics[f"siou_layer_{i}"], sious[i], rtol=1e-5)
  for i in range(2):
    np.testing.assert_allclose(metrics[f"kl_layer_{i}"], kls[i], rtol=1e-4)
  _, final_iou = _siou_reference(_expectation_reference(layers[-1], 16), target)
  np.testing.assert_allclose(metrics["iou"], final_iou.mean(), rtol=1e-5, atol=1e-6)
  expected = 2.0 * np.mean(sious) + 2.0 * np.mean(ces) + 0.01 * np.mean(kls)
  np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_distill_loss_needs_at_least_two_layers():
  config = _config("fartrack_distill")
  with pytest.raises(ValueError, match="model.logit_layers"):
    losses.distill_loss(np.zeros((1, 2, 4, 37), np.float32), np.zeros((2, 4), np.int32), config)


def test_sequence_targets_by_hand_including_the_clamp():
  config = _config("fartrack_sparse")  # search size 64, bins 16
  boxes = np.float32([[16, 32, 16, 8],     # corners (0.25, 0.5, 0.5, 0.625) of the crop
                      [-64, 0, 224, 64]])  # x0 -1 -> (-1 + 0.5) * 15 < 0 -> 0; x1 2.5 -> 45 -> 32 - 1e-4
  corners, tokens = losses.sequence_targets(boxes, config)
  # Token units (c + 0.5) * 15, clamped to [0, 32 - 1e-4], then back with / 15 - 0.5 (not re-quantised).
  top = (32 - 1e-4) / 15 - 0.5
  np.testing.assert_allclose(corners, [[0.25, 0.5, 0.5, 0.625], [-0.5, 0.0, top, 1.0]], atol=1e-6)
  np.testing.assert_array_equal(tokens, [[11, 15, 15, 16], [0, 7, 31, 22]])


def test_sequence_loss_is_giou_weight_times_siou_against_crop_pixel_targets():
  rng = np.random.default_rng(4)
  config = _config("fartrack_sparse", l1_weight=0.5)
  xy = rng.uniform(-10, 60, (8, 2))
  boxes = np.concatenate([xy, rng.uniform(4, 40, (8, 2))], -1).astype(np.float32)
  corners_ref = np.clip((np.c_[boxes[:, :2], boxes[:, :2] + boxes[:, 2:]] / 64 + 0.5) * 15, 0, 32 - 1e-4)
  logits = _peaked_logits(rng, corners_ref / 15 - 0.5, 16)
  loss, metrics = jax.jit(functools.partial(losses.sequence_loss, config=config))(logits, boxes)

  target = corners_ref / 15 - 0.5
  pred = _expectation_reference(logits, 16)
  siou, _ = _siou_reference(pred, target)
  l1 = np.abs(pred - target).mean()
  weights = np.r_[np.ones(32), np.full(5, 0.1)]
  ce = _ce_reference(logits, np.floor(corners_ref).astype(int), weights)
  np.testing.assert_allclose(metrics["siou"], siou.mean(), rtol=1e-5)
  np.testing.assert_allclose(metrics["ce"], ce, rtol=1e-5)  # reported; ce_weight is 0 in this stage
  assert config.train.ce_weight == 0
  np.testing.assert_allclose(loss, 2.0 * siou.mean() + 0.5 * l1, rtol=1e-5)


def test_sequence_loss_rejects_mismatched_frame_counts():
  config = _config("fartrack_sparse")
  with pytest.raises(ValueError, match="search_boxes_px has 3 frames but coord_logits has 2"):
    losses.sequence_loss(np.zeros((2, 4, 37), np.float32), np.ones((3, 4), np.float32), config)


# --- gradients ------------------------------------------------------------------------------------------------

def test_every_loss_has_finite_gradients():
  rng = np.random.default_rng(5)
  tokens = _tokens_for(rng, 4, 16)
  logits = rng.standard_normal((3, 4, 4, 37)).astype(np.float32) * 3
  cases = [
      (functools.partial(losses.frame_loss, target_tokens=tokens, config=_config("fartrack")), logits[0]),
      (functools.partial(losses.distill_loss, target_tokens=tokens, config=_config("fartrack_distill")), logits),
      (functools.partial(losses.sequence_loss, search_boxes_px=rng.uniform(0, 40, (4, 4)).astype(np.float32),
                         config=_config("fartrack_sparse")), logits[0]),
  ]
  for fn, x in cases:
    grad = jax.jit(jax.grad(lambda x, fn=fn: fn(x)[0]))(x)
    assert np.isfinite(np.asarray(grad)).all()
    assert np.abs(np.asarray(grad)).max() > 0


def test_siou_gradient_is_finite_when_the_centres_coincide():
  # The original's (dx^2 + dy^2) ** 0.5 gives NaN gradients here; ours is 0-safe with the same value.
  target = jnp.float32([[0.3, 0.3, 0.5, 0.5]])
  pred = jnp.float32([[0.2, 0.3, 0.6, 0.5]])  # same centre, different width
  grad = jax.jit(jax.grad(lambda p: losses.siou_loss(p, target)[0].sum()))(pred)
  assert np.isfinite(np.asarray(grad)).all()
  # d/dx1 of the shape cost is positive (widening the box further raises it), d/dx0 negative.
  assert grad[0, 2] > 0 and grad[0, 0] < 0


def test_the_kl_teacher_is_the_detached_upper_layer():
  rng = np.random.default_rng(6)
  lower, upper = rng.standard_normal((2, 2, 4, 37)).astype(np.float32)
  grad_lower, grad_upper = jax.jit(jax.grad(losses.inter_layer_kl, argnums=(0, 1)))(lower, upper)
  assert not np.asarray(grad_upper).any()
  assert np.abs(np.asarray(grad_lower[..., :32])).max() > 0
  assert not np.asarray(grad_lower[..., 32:]).any()  # special tokens take no part
  # In the distill loss with only the KL term, the final (teacher-only) layer gets no gradient at all.
  config = _config("fartrack_distill", giou_weight=0.0, ce_weight=0.0, kl_weight=1.0)
  tokens = _tokens_for(rng, 2, 16)
  layers = rng.standard_normal((3, 2, 4, 37)).astype(np.float32)
  grad = jax.jit(jax.grad(lambda x: losses.distill_loss(x, tokens, config)[0]))(layers)
  assert not np.asarray(grad[-1]).any()
  assert np.abs(np.asarray(grad[0])).max() > 0 and np.abs(np.asarray(grad[1])).max() > 0


# --- the original ---------------------------------------------------------------------------------------------

_REPO = os.environ.get("FARTRACK_TORCH_REPO")
_needs_repo = pytest.mark.skipif(not _REPO, reason="set FARTRACK_TORCH_REPO to a checkout of the original "
                                 "FARTrack code (plus torch; PYTHONPATH=/work/shared/reference/stubs for timm)")
# float32 on both sides; sums over up to 605 classes: 1e-5 absolute on O(1)-O(10) losses and gradients.
_ATOL = 1e-5


@pytest.fixture(scope="module")
def original():
  from fartrack_jax import parity  # pylint: disable=g-import-not-at-top
  parity.prepare_cpu_runtime()
  if _REPO not in sys.path:
    sys.path.insert(0, _REPO)
  import importlib  # pylint: disable=g-import-not-at-top
  return {name: importlib.import_module(f"lib.train.actors.{name}")
          for name in ("fartrack", "fartrack_distill", "fartrack_sparse")}


def _actor(cls, config, l1_weight=0.0):
  """An original actor built by its own __init__, with train_script's loss weights and objectives."""
  from torch.nn.functional import l1_loss  # pylint: disable=g-import-not-at-top
  cfg = types.SimpleNamespace(
      MODEL=types.SimpleNamespace(RANGE=config.model.range, PRENUM=3,
                                  BACKBONE=types.SimpleNamespace(CE_LOC=[])),
      DATA=types.SimpleNamespace(SEARCH=types.SimpleNamespace(SIZE=config.data.search.size)))
  settings = types.SimpleNamespace(batchsize=1, num_template=1)
  weights = {"giou": config.train.giou_weight, "l1": l1_weight, "focal": 2.0, "score": 0.0}
  return cls(net=None, objective={"l1": l1_loss}, loss_weight=weights, settings=settings,
             bins=config.model.bins, search_size=config.data.search.size, cfg=cfg)


def _frame_batch(torch, rng, batch):
  """The data dict the stage-1/2 actors' forward_pass reads; search boxes normalised (x, y, w, h)."""
  boxes = np.concatenate([rng.uniform(-0.7, 1.3, (batch, 2)), rng.uniform(0.05, 0.8, (batch, 2))], -1)
  boxes = boxes.astype(np.float32)
  images = torch.zeros((1, batch, 3, 16, 16))
  return boxes, {"template_images": images, "search_images": images, "target_in_search_images": images,
                 "search_anno": torch.from_numpy(boxes.copy())[None]}


def _single_layer_diffs(loss, metrics, grad, theirs_loss, status, feat):
  """|ours - original| of the loss, every logged term and the logits' gradient, for the actors that score
  one layer (stage 1, stage 3). Ours: `[N, 4, V]` gradient; theirs: `feat.grad` `[4, N, V]`."""
  return {"loss": abs(float(loss) - theirs_loss.item()),
          "siou": abs(float(metrics["siou"]) - status["Loss/giou"]),
          "ce": abs(float(metrics["ce"]) - status["Loss/location"]),
          "l1": abs(float(metrics["l1"]) - status["Loss/l1"]),
          "iou": abs(float(metrics["iou"]) - status["IoU"]),
          "grad": np.abs(np.swapaxes(np.asarray(grad), 0, 1) - feat.grad.numpy()).max()}


def _torch_logits(torch, logits):
  """Ours [..., B, 4, V] -> the original's `feat` layout [4, B, V], as a leaf that collects gradients."""
  return torch.from_numpy(np.ascontiguousarray(np.swapaxes(logits, -3, -2))).requires_grad_(True)


@_needs_repo
def test_siou_equals_the_originals_on_random_and_special_boxes(original):
  import torch  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(7)
  pred, target = _random_boxes(rng, 256), _random_boxes(rng, 256)
  # Identical, disjoint, shifted, contained and same-centre pairs.
  pred[:5] = [[0.1, 0.2, 0.5, 0.6], [0, 0, 1, 1], [0.3, 0.3, 0.7, 0.5], [0.2, 0.2, 0.3, 0.3], [0.2, 0.3, 0.6, 0.5]]
  target[:5] = [[0.1, 0.2, 0.5, 0.6], [2, 0, 3, 1], [0.2, 0.3, 0.6, 0.5], [0, 0, 1, 1], [0.3, 0.3, 0.5, 0.5]]
  worst = 0.0
  for module in original.values():
    theirs_loss, theirs_iou = module.SIoU_loss(torch.from_numpy(pred), torch.from_numpy(target), 4)
    ours_loss, ours_iou = losses.siou_loss(pred, target, 4)
    np.testing.assert_allclose(ours_loss, theirs_loss.numpy(), rtol=0, atol=_ATOL)
    np.testing.assert_allclose(ours_iou, theirs_iou.numpy(), rtol=0, atol=_ATOL)
    worst = max(worst, np.abs(np.asarray(ours_loss) - theirs_loss.numpy()).max())
  print(f"SIoU max |ours - original| = {worst:.3g}")


@_needs_repo
def test_frame_loss_and_gradients_equal_the_stage1_actors(original):
  import torch  # pylint: disable=g-import-not-at-top
  config = load_config("fartrack", "variant=tiny")  # bins 300, range 2, V 605
  rng = np.random.default_rng(8)
  boxes, data = _frame_batch(torch, rng, 8)
  actor = _actor(original["fartrack"].FARTrackActor, config)
  tokens = np.stack([processing.box_to_tokens(box, 300, 2)[1] for box in boxes])
  logits = _peaked_logits(rng, tokens / 299 - 0.5, 300, width=20.0)
  logits[4:] = rng.standard_normal(logits[4:].shape) * 3  # half peaked near the target, half noise
  feat = _torch_logits(torch, logits)
  actor.net = lambda **kwargs: {"feat": feat}
  theirs_loss, status = actor.compute_losses(actor.forward_pass(data), data)
  theirs_loss.backward()
  np.testing.assert_array_equal(data["seq_output"].numpy().astype(np.int32), tokens)  # same targets

  (loss, metrics), grad = jax.value_and_grad(
      lambda x: losses.frame_loss(x, tokens, config), has_aux=True)(logits)
  diffs = _single_layer_diffs(loss, metrics, grad, theirs_loss, status, feat)
  print("stage 1 max |ours - original|:", {k: f"{v:.3g}" for k, v in diffs.items()})
  assert all(v < _ATOL for v in diffs.values()), diffs  # NaN fails too


@_needs_repo
def test_distill_loss_and_gradients_equal_the_distill_actors(original):
  import torch  # pylint: disable=g-import-not-at-top
  config = load_config("fartrack_distill", "variant=tiny")
  rng = np.random.default_rng(9)
  boxes, data = _frame_batch(torch, rng, 6)
  actor = _actor(original["fartrack_distill"].FARTrackDistillActor, config)
  tokens = np.stack([processing.box_to_tokens(box, 300, 2)[1] for box in boxes])
  layers = np.stack([_peaked_logits(rng, tokens / 299 - 0.5, 300, noise=n, width=20.0)
                     for n in (3.0, 2.0, 1.0, 0.5)])  # L = 4: three extra layers + the final one
  feats = [_torch_logits(torch, layer) for layer in layers]
  actor.net = lambda **kwargs: {"feat": feats[-1], "extra_list": list(feats[:-1])}
  theirs_loss, status = actor.compute_losses(actor.forward_pass(data), data)
  theirs_loss.backward()

  (loss, metrics), grad = jax.value_and_grad(
      lambda x: losses.distill_loss(x, tokens, config), has_aux=True)(layers)
  diffs = {"loss": abs(float(loss) - theirs_loss.item()),
           "iou": abs(float(metrics["iou"]) - status["IoU"]),
           "l1": abs(float(metrics["l1"]) - status["Loss/l1"]),
           "grad": np.abs(np.swapaxes(np.asarray(grad), 1, 2)
                          - np.stack([f.grad.numpy() for f in feats])).max()}
  for i in range(4):
    diffs[f"siou_{i}"] = abs(float(metrics[f"siou_layer_{i}"]) - status[f"Loss/giou_{i}"])
    diffs[f"ce_{i}"] = abs(float(metrics[f"ce_layer_{i}"]) - status[f"Loss/location_{i}"])
  for i in range(3):
    diffs[f"kl_{i}"] = abs(float(metrics[f"kl_layer_{i}"]) - status[f"Loss/KL_{i}"])
  print("stage 2 max |ours - original|:", {k: f"{v:.3g}" for k, v in diffs.items()})
  assert all(v < _ATOL for v in diffs.values()), diffs  # NaN fails too


@_needs_repo
def test_sequence_loss_and_gradients_equal_the_sparse_actors(original):
  import torch  # pylint: disable=g-import-not-at-top
  config = load_config("fartrack_sparse", "variant=tiny")  # search size 224
  rng = np.random.default_rng(10)
  frames = 12
  xy = rng.uniform(-40, 200, (frames, 2))
  boxes = np.concatenate([xy, rng.uniform(10, 150, (frames, 2))], -1).astype(np.float32)
  # The original's l1 weight is read from the config here; set it non-zero to cover that term too.
  config.train.l1_weight = 0.5
  actor = _actor(original["fartrack_sparse"].FARTrackSparseActor, config, l1_weight=0.5)
  corners = np.c_[boxes[:, :2], boxes[:, :2] + boxes[:, 2:]] / 224
  logits = _peaked_logits(rng, np.clip(corners, -0.5, 1.5), 300, width=20.0)
  feat = _torch_logits(torch, logits)
  actor.net = lambda *args, **kwargs: {"feat": feat}
  one = torch.zeros((frames, 1, 1))
  data = {"template_images_z0": torch.zeros((frames, 1, 3, 16, 16)), "search_images": torch.zeros(
      (frames, 1, 3, 16, 16)), "search_anno": torch.from_numpy(boxes.copy())[:, None],
          "pre_seq": torch.zeros((frames, 1, 12)), "x_feat": one, "mask": one, "epoch": 1}
  theirs_loss, status = actor.compute_sequence_losses(data)
  theirs_loss.backward()

  (loss, metrics), grad = jax.value_and_grad(
      lambda x: losses.sequence_loss(x, boxes, config), has_aux=True)(logits)
  diffs = _single_layer_diffs(loss, metrics, grad, theirs_loss, status, feat)
  print("stage 3 max |ours - original|:", {k: f"{v:.3g}" for k, v in diffs.items()})
  assert all(v < _ATOL for v in diffs.values()), diffs  # NaN fails too
