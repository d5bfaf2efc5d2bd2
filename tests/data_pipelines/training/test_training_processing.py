"""Frame-level training processing (`data_pipelines/training/processing.py`) against hand-computed cases and,
with FARTRACK_TORCH_REPO set, against the original's `processing_utils`, transforms, `STARKProcessing` and
actor on the same inputs and the same random draws."""

import math
import os
import random
import sys

import cv2
import numpy as np
import pytest

from data_pipelines import crops
from data_pipelines.training import processing
from tests.conftest import load_config

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class ScriptedRng:
  """A Generator stand-in: real draws from `seed`, except that `scalars` / `pairs` / `normals` replace the
  first `random()` / `random(2)` / `standard_normal(2)` draws. Records every draw by the original's stream
  it stands for."""

  def __init__(self, seed, scalars=(), pairs=(), normals=()):
    self._rng = np.random.default_rng(seed)
    self._scalars, self._pairs, self._normals = list(scalars), list(pairs), list(normals)
    self.draws = {"torch.randn": [], "torch.rand": [], "random.random": [], "np.random.uniform": []}

  def standard_normal(self, size, dtype=np.float64):
    if self._normals:
      value = np.asarray(self._normals.pop(0), dtype)
    else:
      value = self._rng.standard_normal(size, dtype=dtype)
    self.draws["torch.randn"].append(value)
    return value

  def random(self, size=None, dtype=np.float64):
    if size is None:
      value = self._scalars.pop(0) if self._scalars else self._rng.random()
      self.draws["random.random"].append(value)
    else:
      value = np.asarray(self._pairs.pop(0), dtype) if self._pairs else self._rng.random(size, dtype=dtype)
      self.draws["torch.rand"].append(value)
    return value

  def uniform(self, low, high):
    value = self._rng.uniform(low, high)
    self.draws["np.random.uniform"].append(value)
    return value


def _image(height, width, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _processor(num_templates=2, template_size=32, search_size=64, bins=300, search_jitter=(3.5, 0.5)):
  return processing.FrameProcessing(
      template=processing.CropSpec(2.0, template_size, 0.0, 0.0),
      search=processing.CropSpec(4.0, search_size, *search_jitter),
      num_templates=num_templates, mean=MEAN, std=STD, bins=bins, coord_range=2)


# --- crops and boxes -------------------------------------------------------------------------------------

def test_crop_puts_the_target_where_the_original_does():
  image = _image(100, 100)
  # A 10x10 box at (20, 10), factor 2: side ceil(10 * 2) = 20, top-left round(25 - 10) = 15, round(15 - 10) = 5;
  # output 20 means no resize. Centre of the crop at (20 - 1) / 2 = 9.5.
  crop, box, mask = processing.crop_and_box(image, [20, 10, 10, 10], [20, 10, 10, 10], 2.0, 20)
  np.testing.assert_array_equal(crop, image[5:25, 15:35])
  np.testing.assert_allclose(box, np.array([4.5, 4.5, 10, 10]) / 20, atol=1e-7)
  assert not mask.any()
  # Another box in the same crop: centre (25, 16) is 1 px below the crop centre.
  _, box, _ = processing.crop_and_box(image, [20, 10, 10, 10], [22, 12, 6, 8], 2.0, 20)
  np.testing.assert_allclose(box, np.array([6.5, 6.5, 6, 8]) / 20, atol=1e-7)


def test_crop_off_the_image_is_zero_padded_and_masked():
  image = _image(30, 40)
  # Box (0, 0, 10, 10): window [-5, 15) on both axes, 5 px of padding top and left.
  crop, _, mask = processing.crop_and_box(image, [0, 0, 10, 10], [0, 0, 10, 10], 2.0, 20)
  assert not crop[:5].any() and not crop[:, :5].any()
  np.testing.assert_array_equal(crop[5:, 5:], image[:15, :15])
  expected = np.ones((20, 20), bool)
  expected[5:, 5:] = False
  np.testing.assert_array_equal(mask, expected)
  # Window [20, 40) ends exactly at the right edge: the original pads x2 - W + 1 = 1 column there, so the
  # image's last column is replaced by zeros (and masked).
  crop, _, mask = processing.crop_and_box(image, [25, 5, 10, 10], [25, 5, 10, 10], 2.0, 20)
  np.testing.assert_array_equal(crop[:, :19], image[0:20, 20:39])
  assert not crop[:, 19].any() and mask[:, 19].all() and not mask[:, :19].any()


def test_transform_image_to_crop_by_hand():
  # Extract box centre (25, 25), box centre (25, 40): out centre 49.5 + (0, 15) * 2, size (60, 80).
  box = processing.transform_image_to_crop([10, 20, 30, 40], [0, 0, 50, 50], 2.0, 100)
  np.testing.assert_allclose(box, [19.5, 39.5, 60, 80], atol=1e-5)
  normalized = processing.transform_image_to_crop([10, 20, 30, 40], [0, 0, 50, 50], 2.0, 100, normalize=True)
  np.testing.assert_allclose(normalized, [0.195, 0.395, 0.6, 0.8], atol=1e-7)


def test_padding_mask_equals_resizing_the_full_mask():
  """The separable mask against the original's construction (ones, zeros where the image is, cv2.resize,
  bool) on random windows, many partly or wholly off the image, some at exact 2x/3x scales."""
  rng = np.random.default_rng(0)
  unpadded_axes = 0
  for i in range(400):
    height, width = (int(v) for v in rng.integers(5, 300, 2))
    output_size = int(rng.choice([7, 16, 32, 112, 224]))
    if i % 3 == 0:
      side = output_size * int(rng.choice([1, 2, 3]))
      w = h = side / 2.0
      factor = 2.0
    else:
      w, h = rng.uniform(0.5, 200, 2)
      factor = float(rng.choice([1.0, 2.0, 4.0, 0.37]))
    box = np.float32([rng.uniform(-1.5 * w, width + 0.5 * w), rng.uniform(-1.5 * h, height + 0.5 * h), w, h])
    side = crops.crop_side(box, factor)
    x1 = round(float(box[0]) + 0.5 * float(box[2]) - side * 0.5)
    y1 = round(float(box[1]) + 0.5 * float(box[3]) - side * 0.5)
    pads = [max(0, -y1), max(y1 + side - height + 1, 0), max(0, -x1), max(x1 + side - width + 1, 0)]
    valid_region = np.zeros((height, width, 1), np.uint8)[y1 + pads[0]:y1 + side - pads[1],
                                                          x1 + pads[2]:x1 + side - pads[3]]
    full = cv2.copyMakeBorder(valid_region, *pads, cv2.BORDER_CONSTANT, value=1).astype(np.float64)
    expected = cv2.resize(full, (output_size, output_size)).astype(bool)
    np.testing.assert_array_equal(processing.padding_mask(box, (height, width), factor, output_size), expected,
                                  err_msg=f"box {box.tolist()} image {height}x{width} factor {factor}")
    unpadded_axes += (pads[0] == pads[1] == 0) + (pads[2] == pads[3] == 0)
  assert unpadded_axes >= 20  # the shortcut for an axis without padding was compared too


def test_crop_validity_from_the_masks_rows_and_columns_equals_validity_from_the_mask():
  """`axes_are_valid(rows, cols)` (what the pipeline checks) against `crop_is_valid` of the full mask
  `rows | cols`, on random axes with padding at either end, in the middle, or none."""
  rng = np.random.default_rng(1)
  outcomes = set()
  for _ in range(3000):
    size = int(rng.choice([16, 32, 50, 112, 224]))
    rows, cols = (rng.random(size) < rng.choice([0.0, 0.3, 0.9, 1.0]) for _ in range(2))
    if rng.random() < 0.5:  # padding as a crop has it: a run at one end
      start = int(rng.integers(0, size + 1))
      rows = np.arange(size) >= start if rng.random() < 0.5 else np.arange(size) < start
    expected = processing.crop_is_valid(rows[:, None] | cols[None, :])
    assert processing.axes_are_valid(rows, cols) == expected, (size, rows.tolist(), cols.tolist())
    outcomes.add(expected)
  assert outcomes == {True, False}


def test_crop_validity_samples_the_mask_every_16_pixels():
  mask = np.ones((32, 32), bool)
  assert not processing.crop_is_valid(mask)
  mask[5, 5] = False  # not a sampled point (0 and 16 on each axis)
  assert not processing.crop_is_valid(mask)
  mask[16, 0] = False
  assert processing.crop_is_valid(mask)


# --- targets ---------------------------------------------------------------------------------------------

def test_tokens_by_hand_and_clamped_at_both_ends():
  # bins 300, range 2: token = int((corner + 0.5) * 299).
  corners, tokens = processing.box_to_tokens([0.25, 0.5, 0.5, 0.25], 300, 2)
  np.testing.assert_allclose(corners, [0.25, 0.5, 0.75, 0.75])
  np.testing.assert_array_equal(tokens, [224, 299, 373, 373])  # 224.25, 299, 373.75, 373.75
  assert tokens.dtype == np.int32
  # x0 = -0.9 -> -0.5 (token 0), x1 = 2.1 -> 1.5 (token 598 = 2 * 299), y's inside: 1.7 * 299, 1.8 * 299.
  corners, tokens = processing.box_to_tokens([-0.9, 1.2, 3.0, 0.1], 300, 2)
  np.testing.assert_allclose(corners, [-0.5, 1.2, 1.5, 1.3], atol=1e-6)
  np.testing.assert_array_equal(tokens, [0, 508, 598, 538])


# --- randomness ------------------------------------------------------------------------------------------

def test_jitter_statistics():
  rng = np.random.default_rng(0)
  box = np.float32([100, 50, 40, 20])
  jittered = np.stack([processing.jitter_box(box, rng, 3.5, 0.5) for _ in range(10_000)])
  log_scale = np.log(jittered[:, 2:] / box[2:])
  # Standard errors over 10k draws: mean 0.005, std 0.0035; the bounds are ~4 of them.
  np.testing.assert_allclose(log_scale.mean(0), 0, atol=0.02)
  np.testing.assert_allclose(log_scale.std(0), 0.5, atol=0.015)
  assert abs(np.corrcoef(log_scale.T)[0, 1]) < 0.05  # w and h scaled independently
  offset = jittered[:, :2] + 0.5 * jittered[:, 2:] - (box[:2] + 0.5 * box[2:])
  relative = offset / (np.sqrt(jittered[:, 2] * jittered[:, 3]) * 3.5)[:, None]  # U[-0.5, 0.5)
  np.testing.assert_allclose(relative.mean(0), 0, atol=0.012)  # standard error 0.0029
  np.testing.assert_allclose(relative.std(0), math.sqrt(1 / 12), atol=0.01)
  assert relative.min() >= -0.5 and relative.max() < 0.5 + 1e-6
  # No jitter configured: the box comes back unchanged (the draws are still made).
  np.testing.assert_array_equal(processing.jitter_box(box, rng, 0.0, 0.0), box)


def _frames(num_templates, seed=0):
  frames = [_image(90, 120, seed + i) for i in range(num_templates + 1)]
  boxes = [np.array([40 + 2 * i, 30 + i, 24, 18], np.float64) for i in range(num_templates + 1)]
  return frames[:-1], boxes[:-1], frames[-1], boxes[-1]


def test_sample_is_deterministic_given_the_generator():
  config = load_config("fartrack")
  templates, template_boxes, search, search_box = _frames(config.data.template.number)
  make = lambda seed: processing.make_frame_sample(templates, template_boxes, search, search_box, config,
                                                   np.random.default_rng(seed))
  first, again, other = make(3), make(3), make(4)
  for key in first:
    np.testing.assert_array_equal(first[key], again[key])
  assert not np.array_equal(first["search"], other["search"])
  t, s = config.data.template.size, config.data.search.size
  assert first["templates"].shape == (config.data.template.number, t, t, 3)
  assert first["templates"].dtype == first["search"].dtype == first["search_box"].dtype == np.float32
  assert first["search"].shape == (s, s, 3) and first["search_box"].shape == (4,)
  assert first["target_tokens"].dtype == np.int32 and bool(first["valid"])


def test_crop_flip_mirrors_the_image_and_the_box():
  process = _processor()
  templates, template_boxes, search, search_box = _frames(2)
  # Scalar draws: grayscale, joint flip, then one flip per template crop and the search crop.
  # Brightness and jitter come from the same seed in both runs.
  plain = process(templates, template_boxes, search, search_box, ScriptedRng(0, [0.99, 0.99, 0.99, 0.99, 0.99]))
  flipped = process(templates, template_boxes, search, search_box, ScriptedRng(0, [0.99, 0.99, 0.99, 0.99, 0.0]))
  np.testing.assert_array_equal(flipped["templates"], plain["templates"])
  np.testing.assert_array_equal(flipped["search"], plain["search"][:, ::-1])
  x0, y0, x1, y1 = plain["search_box"]
  np.testing.assert_allclose(flipped["search_box"], [1 - x1, y0, 1 - x0, y1], atol=1e-6)
  # The joint flip mirrors boxes in pixels about width - 1, as the original's RandomHorizontalFlip.
  np.testing.assert_array_equal(processing.flip_box([10, 5, 20, 8], True, 119), [89, 5, 20, 8])


def test_grayscale_keeps_three_equal_channels():
  gray = processing.to_grayscale(_image(20, 30))
  assert gray.shape == (20, 30, 3)
  np.testing.assert_array_equal(gray[..., 0], gray[..., 1])
  np.testing.assert_array_equal(gray[..., 0], gray[..., 2])
  process = _processor()
  templates, template_boxes, search, search_box = _frames(2)
  sample = process(templates, template_boxes, search, search_box, ScriptedRng(0, [0.0]))
  unnormalized = sample["search"] * np.float32(STD) + np.float32(MEAN)
  np.testing.assert_allclose(unnormalized[..., 0], unnormalized[..., 1], atol=1e-6)  # fp32 round trip
  np.testing.assert_allclose(unnormalized[..., 0], unnormalized[..., 2], atol=1e-6)


def test_normalization_by_hand():
  pixels = np.array([[[255, 0, 51]]], np.uint8)
  expected = [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (0.2 - 0.406) / 0.225]
  np.testing.assert_allclose(processing.normalize(pixels, MEAN, STD)[0, 0], expected, rtol=1e-6)
  # Brightness 1.2 on 250 clips to 1.0; 0.8 on 100 gives 80 / 255.
  bright = processing.to_unit_range(np.array([[[250, 100, 0]]], np.uint8), 1.2)
  np.testing.assert_allclose(bright[0, 0], [1.0, 120 / 255, 0.0], rtol=1e-6)
  assert processing.normalize(bright, MEAN, STD).dtype == np.float32


def test_sample_with_an_all_padding_search_crop_is_invalid():
  process = _processor()
  templates, template_boxes, search, _ = _frames(2)
  height, width = search.shape[:2]
  # The 20 px box pokes 2 px into the image's corner. No grayscale or joint flip, no scale jitter, and centre
  # draws of ~1 move the centre from W + 8 by 0.4999 * 3.5 * 20 = 35 px: the 80 px crop starts at
  # round(W + 43 - 40) = W + 3 on both axes and holds no image pixel.
  corner_box = [width - 2, height - 2, 20, 20]
  rng = ScriptedRng(0, scalars=[0.99, 0.99], pairs=[[0.5, 0.5]] * 2 + [[0.9999, 0.9999]], normals=[[0, 0]] * 3)
  sample = process(templates, template_boxes, search, corner_box, rng)
  assert not bool(sample["valid"])
  assert sample["search"].shape == (64, 64, 3) and not sample["search"].any()
  # A zero-area box cannot be cropped at all.
  assert not bool(process(templates, template_boxes, search, [10, 10, 0, 5], np.random.default_rng(0))["valid"])


# --- the original ----------------------------------------------------------------------------------------

_REPO = os.environ.get("FARTRACK_TORCH_REPO")
_needs_repo = pytest.mark.skipif(not _REPO, reason="set FARTRACK_TORCH_REPO to a checkout of the original "
                                 "FARTrack code (plus torch)")


@pytest.fixture(scope="module")
def original():
  from fartrack_jax import parity  # pylint: disable=g-import-not-at-top
  parity.prepare_cpu_runtime()
  if _REPO not in sys.path:
    sys.path.insert(0, _REPO)
  import importlib  # pylint: disable=g-import-not-at-top
  return {name: importlib.import_module(f"lib.train.{name}")
          for name in ("data.processing_utils", "data.transforms", "data.processing", "actors.fartrack")}


@_needs_repo
def test_crops_and_boxes_equal_the_originals(original):
  import torch  # pylint: disable=g-import-not-at-top
  utils = original["data.processing_utils"]
  rng = np.random.default_rng(1)
  for i in range(200):
    height, width = (int(v) for v in rng.integers(20, 200, 2))
    image = _image(height, width, i)
    w, h = rng.uniform(2, 80, 2)
    gt = np.float32([rng.uniform(-0.5 * w, width - 0.5 * w), rng.uniform(-0.5 * h, height - 0.5 * h), w, h])
    extract = processing.jitter_box(gt, rng, 3.5, 0.5)
    factor, size = float(rng.choice([2.0, 4.0])), int(rng.choice([32, 112, 224]))
    ours_crop, ours_box, ours_mask = processing.crop_and_box(image, extract, gt, factor, size)
    crops, boxes, masks, _ = utils.jittered_center_crop([image], [torch.from_numpy(extract)],
                                                         [torch.from_numpy(gt)], factor, size)
    np.testing.assert_array_equal(ours_crop, crops[0])
    np.testing.assert_array_equal(ours_mask, masks[0])
    np.testing.assert_allclose(ours_box, boxes[0].numpy(), atol=1e-5)  # both float32, same op order
    _, resize_factor, _ = utils.sample_target(image, torch.from_numpy(extract), factor, size)
    pixel_box = processing.transform_image_to_crop(gt, extract, resize_factor, size)
    theirs = utils.transform_image_to_crop(torch.from_numpy(gt), torch.from_numpy(extract), resize_factor,
                                           torch.Tensor([size, size]))
    np.testing.assert_allclose(pixel_box, theirs.numpy(), rtol=1e-6, atol=1e-5)


@_needs_repo
def test_transforms_equal_the_originals(original):
  import torch  # pylint: disable=g-import-not-at-top
  tfm = original["data.transforms"]
  image = _image(24, 32)
  np.testing.assert_array_equal(processing.to_grayscale(image),
                                tfm.ToGrayscale().transform_image(image, True))
  for brightness in (0.8, 1.0, 1.13, 1.2):
    theirs = tfm.ToTensorAndJitter(0.2).transform_image(image, brightness).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(processing.to_unit_range(image, brightness), theirs)
  box = torch.tensor([0.1, 0.2, 0.3, 0.4])
  for flip in (False, True):
    np.testing.assert_array_equal(processing.flip_box(box.numpy(), flip, 1.0),
                                  tfm.RandomHorizontalFlip_Norm().transform_bbox(box, None, flip).numpy())
    np.testing.assert_array_equal(processing.flip_box([10.5, 3, 7.25, 9], flip, 31),
                                  tfm.RandomHorizontalFlip().transform_bbox(
                                      torch.tensor([10.5, 3, 7.25, 9]), (24, 32), flip).numpy())


def _torchvision_normalize(tensor, mean, std, inplace=False):
  """torchvision.transforms.functional.normalize on a [3, H, W] float tensor (torchvision is not installed)."""
  import torch  # pylint: disable=g-import-not-at-top
  mean = torch.as_tensor(mean, dtype=tensor.dtype)[:, None, None]
  std = torch.as_tensor(std, dtype=tensor.dtype)[:, None, None]
  return (tensor if inplace else tensor.clone()).sub_(mean).div_(std)


def _run_original(original, monkeypatch, config, frames, draws):
  """The original's STARKProcessing with the stage 1/2 transforms (`build_dataloaders`) on `frames`, its
  torch / random / numpy draws replaced by `draws` (a ScriptedRng's record), in their order."""
  import types  # pylint: disable=g-import-not-at-top

  import torch  # pylint: disable=g-import-not-at-top
  from lib.utils import TensorDict  # pylint: disable=g-import-not-at-top
  templates, template_boxes, search, search_box = frames
  queues = {k: list(v) for k, v in draws.items()}
  # The original also rolls brightness and flip for the never-used "target in search" crop; we do not.
  monkeypatch.setattr(torch, "randn", lambda n: torch.from_numpy(queues["torch.randn"].pop(0)))
  monkeypatch.setattr(torch, "rand", lambda n: torch.from_numpy(queues["torch.rand"].pop(0)))
  monkeypatch.setattr(random, "random", lambda: queues["random.random"].pop(0) if queues["random.random"] else 0.99)
  monkeypatch.setattr(np.random, "uniform",
                      lambda lo, hi: queues["np.random.uniform"].pop(0) if queues["np.random.uniform"] else 1.0)
  tfm = original["data.transforms"]
  monkeypatch.setattr(tfm, "tvisf", types.SimpleNamespace(normalize=_torchvision_normalize))
  data = config.data
  per_kind = lambda key: {"template": float(data.template[key]), "search": float(data.search[key])}
  stark = original["data.processing"].STARKProcessing(
      search_area_factor=per_kind("factor"), output_sz={"template": data.template.size, "search": data.search.size},
      center_jitter_factor=per_kind("center_jitter"), scale_jitter_factor=per_kind("scale_jitter"),
      mode="sequence",
      transform=tfm.Transform(tfm.ToTensorAndJitter(0.2), tfm.RandomHorizontalFlip_Norm(probability=0.5),
                              tfm.Normalize(mean=list(data.mean), std=list(data.std))),
      joint_transform=tfm.Transform(tfm.ToGrayscale(probability=0.05), tfm.RandomHorizontalFlip(probability=0.5)))
  as_anno = lambda boxes: [torch.tensor(np.float32(b)) for b in boxes]
  theirs = stark(TensorDict({
      "template_images": list(templates), "template_anno": as_anno(template_boxes),
      "template_masks": [torch.zeros(templates[0].shape[:2])] * len(templates),
      "search_images": [search], "search_anno": as_anno([search_box]),
      "search_masks": [torch.zeros(search.shape[:2])]}))
  return theirs, queues


@_needs_repo
@pytest.mark.parametrize("scalars", [(), (0.0,) * 7, (0.99, 0.0, 0.99, 0.0, 0.99, 0.0, 0.0)],
                         ids=["drawn", "grayscale_and_all_flips", "mixed_flips"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sample_equals_the_originals_processing_and_actor(original, monkeypatch, seed, scalars):
  """The original's STARKProcessing and FARTrackActor.forward_pass fed the same draws our generator made:
  same pixels, boxes and tokens."""
  import types  # pylint: disable=g-import-not-at-top
  config = load_config("fartrack", "variant=tiny")
  num_templates = config.data.template.number
  frames = _frames(num_templates, seed)
  rng = ScriptedRng(seed, scalars)
  ours = processing.make_frame_sample(*frames, config, rng)
  theirs, queues = _run_original(original, monkeypatch, config, frames, rng.draws)
  assert bool(ours["valid"]) and theirs["valid"]
  assert not queues["torch.randn"] and not queues["torch.rand"]

  # float32 ops in the same order on both sides: equal to the bit, so no tolerance.
  np.testing.assert_array_equal(ours["templates"], theirs["template_images"].permute(0, 2, 3, 1).numpy())
  np.testing.assert_array_equal(ours["search"], theirs["search_images"][0].permute(1, 2, 0).numpy())

  actor = object.__new__(original["actors.fartrack"].FARTrackActor)
  actor.settings = types.SimpleNamespace(num_template=num_templates)
  actor.cfg = types.SimpleNamespace(MODEL=types.SimpleNamespace(BACKBONE=types.SimpleNamespace(CE_LOC=[])))
  actor.bins, actor.range = config.model.bins, config.model.range
  actor.net = lambda **kwargs: {}
  batch = {key: theirs[key].unsqueeze(1) for key in ("template_images", "search_images",
                                                     "target_in_search_images", "search_anno")}
  actor.forward_pass(batch)
  # The jittered box goes through exp, which numpy and torch may round an ulp apart (see `jitter_box`):
  # boxes to 1e-6; tokens equal unless a corner lies within an ulp of a bin edge (not in these cases).
  np.testing.assert_allclose(ours["search_box"], batch["real_bbox"][0].numpy(), rtol=0, atol=1e-6)
  np.testing.assert_array_equal(ours["target_tokens"], batch["seq_output"][0].numpy().astype(np.int32))


@_needs_repo
def test_the_original_rejects_the_same_all_padding_crop(original, monkeypatch):
  config = load_config("fartrack", "variant=tiny")
  templates, template_boxes, search, _ = _frames(config.data.template.number)
  height, width = search.shape[:2]
  frames = (templates, template_boxes, search, [width - 2, height - 2, 20, 20])
  # As in test_sample_with_an_all_padding_search_crop_is_invalid, with 5 templates.
  rng = ScriptedRng(0, scalars=[0.99, 0.99], pairs=[[0.5, 0.5]] * 5 + [[0.9999, 0.9999]], normals=[[0, 0]] * 6)
  assert not bool(processing.make_frame_sample(*frames, config, rng)["valid"])
  theirs, _ = _run_original(original, monkeypatch, config, frames, rng.draws)
  assert theirs["valid"] is False
