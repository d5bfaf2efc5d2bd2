"""Frames -> one training example: the original's `STARKProcessing` with the stage 1/2 transforms, in numpy.

Stages 1 and 2 (`fartrack`, `fartrack_distill`) build their data in `lib/train/base_functions.py::
build_dataloaders`: `STARKProcessing(mode='sequence')` with
  joint transform (whole frames; rolled once per example, the search frame reuses the templates' roll):
    ToGrayscale(p=0.05), then RandomHorizontalFlip(p=0.5);
  per-crop transform (rolled independently for every template crop and the search crop):
    ToTensorAndJitter(0.2) (brightness x U(0.8, 1.2), scaled to [0, 1] and clipped),
    RandomHorizontalFlip_Norm(p=0.5), Normalize(mean, std);
and the actor (`lib/train/actors/fartrack.py::forward_pass`) turns the search box into the four target
tokens. (Stage 3 samples sequences and crops inside its trainer; it does not use this.)

For every kind of crop in turn (templates, the search crop, and the "target in search" crop: the search
frame cropped with the template's factor, size and jitter, which the original checks but the model never
reads) the processing jitters each box, crops around the jittered box (`sample_target`, with its padding
quirk), maps the true box into crop coordinates, applies the per-crop transform, and rejects the example
(`valid = False`) when a jittered box is too small to crop (side `ceil(sqrt(w * h) * factor) < 1`) or a
crop's padding mask, sampled every 16 px, is all padding (`crop_is_valid`).

Everything is float32 where the original computes in torch float32: given the same random draws, the crops
equal the original's to the bit and the boxes to an ulp (`tests/test_training_processing.py`, with
FARTRACK_TORCH_REPO set, feeds the original our draws). All randomness comes from the `np.random.Generator` passed in. The original draws
from three global streams: torch (`randn(2)` then `rand(2)` per jittered box), Python's `random`
(grayscale, joint flip, per-crop flips) and numpy's (brightness). Here one Generator makes the same draws,
with the same distributions, in the order the original makes them (grayscale, joint flip; then per kind:
the jitter of every box, then per crop brightness and flip). The values differ from the original's for any
seed (different generators: PCG64 and numpy's ziggurat normals against torch's MT19937), and the "target
in search" crop draws no brightness or flip since its pixels are never made.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import cv2
import numpy as np

from data_pipelines import crops

GRAYSCALE_PROBABILITY = 0.05
FLIP_PROBABILITY = 0.5
BRIGHTNESS_JITTER = 0.2
# `processing.py` checks the attention mask at `output_sz // 16`: 16 is hard-coded, whatever the backbone.
VALIDITY_STRIDE = 16


def jitter_box(box_xywh, rng: np.random.Generator, center_jitter: float, scale_jitter: float) -> np.ndarray:
  """The original's `STARKProcessing._get_jittered_box`, float32 like its torch tensors.

  size = (w, h) * exp(n * scale_jitter), centre = box centre + (u - 0.5) * sqrt(size_w * size_h) *
  center_jitter, with n a pair of N(0, 1) and u a pair of U[0, 1) draws, drawn in that order and drawn even
  when both factors are 0, as the original.
  Returns the jittered (x, y, w, h) [4] float32.
  """
  box = np.asarray(box_xywh, np.float32)
  log_scale = rng.standard_normal(2, dtype=np.float32) * np.float32(scale_jitter)
  # numpy's float32 exp is off by an ulp for ~40% of inputs where torch's is almost always correctly
  # rounded; exp in float64 rounded to float32 agrees with torch on ~99% of inputs.
  size = box[2:] * np.exp(log_scale.astype(np.float64)).astype(np.float32)
  max_offset = np.sqrt(np.prod(size)) * np.float32(center_jitter)
  center = box[:2] + np.float32(0.5) * box[2:] + max_offset * (rng.random(2, dtype=np.float32) - np.float32(0.5))
  return np.concatenate([center - np.float32(0.5) * size, size]).astype(np.float32)


def transform_image_to_crop(box_in, box_extract, resize_factor: float, crop_size: int,
                            normalize: bool = False) -> np.ndarray:
  """`processing_utils.transform_image_to_crop`: `box_in` (x, y, w, h) in image pixels -> in the pixels of
  a `crop_size` crop centred on `box_extract` and scaled by `resize_factor`; the crop's centre is at
  `(crop_size - 1) / 2`, as in the original. `normalize` divides by `crop_size`. [4] float32."""
  box_in = np.asarray(box_in, np.float32)
  box_extract = np.asarray(box_extract, np.float32)
  factor = np.float32(resize_factor)
  size = np.float32(crop_size)
  extract_center = box_extract[:2] + np.float32(0.5) * box_extract[2:]
  in_center = box_in[:2] + np.float32(0.5) * box_in[2:]
  out_center = (size - np.float32(1)) / np.float32(2) + (in_center - extract_center) * factor
  out_size = box_in[2:] * factor
  box_out = np.concatenate([out_center - np.float32(0.5) * out_size, out_size])
  return (box_out / size if normalize else box_out).astype(np.float32)


def _axis_window(start: int, side: int, length: int) -> tuple[int, int, int]:
  """Along one axis of `sample_target`'s crop [start, start + side) of an image axis of `length` pixels:
  (padded crop length, first image pixel in it, number of image pixels in it).

  Follows the original's slicing literally: the far pad is `end - length + 1` (it drops the image's last
  pixel when the crop reaches it), and a negative slice end wraps around as numpy slicing does. So the
  padded crop can differ from `side` when the window lies wholly outside the image."""
  end = start + side
  near_pad = max(0, -start)
  far_pad = max(end - length + 1, 0)
  image_pixels = len(range(length)[start + near_pad:end - far_pad])
  return image_pixels + near_pad + far_pad, near_pad, image_pixels


def _resized_padding(padded_length: int, first: int, count: int, output_size: int) -> np.ndarray:
  """Which of `output_size` samples of a padded axis, resized as the original resizes its float 0/1
  attention mask (cv2.resize, bilinear, then cast to bool), touch padding: an output pixel is True when any
  source pixel with a non-zero weight is padding, and "non-zero" includes OpenCV's rounding residues (1e-16
  weights where a sample lands on a pixel). One axis at a time, since resizing a whole float64 mask (up to
  ~4000 px a side) costs 10-100x the crop; OpenCV's weights along an axis depend only on that axis's sizes.
  The strip is two pixels wide because a one-pixel-wide image takes another OpenCV code path (float
  weights, no residues). `test_padding_mask_equals_resizing_the_full_mask` holds this to the 2-D resize.
  [output_size] bool."""
  if first == 0 and count == padded_length:  # no padding on this axis (most crops): nothing to resize
    return np.zeros(output_size, bool)
  is_padding = np.ones((padded_length, 2), np.float64)
  is_padding[first:first + count] = 0
  return cv2.resize(is_padding, (2, output_size))[:, 0] != 0


def padding_mask(box_to_crop_around_xywh, image_shape, factor: float, output_size: int) -> np.ndarray:
  """The original's training `sample_target` attention mask without making the crop: True where the
  resized crop is (or touches) zero padding. Separable (rows | columns): the bilinear weights are
  positive, so a resized pixel of the 2-D mask is non-zero exactly when its row or its column touches
  padding. [output_size, output_size] bool."""
  rows, cols = padding_axes(box_to_crop_around_xywh, image_shape, factor, output_size)
  return rows[:, None] | cols[None, :]


def padding_axes(box_to_crop_around_xywh, image_shape, factor: float,
                 output_size: int) -> tuple[np.ndarray, np.ndarray]:
  """`padding_mask` as its two factors: (rows [output_size] bool, columns [output_size] bool); the mask is
  `rows[:, None] | cols[None, :]`."""
  x1, y1, side = crops.crop_window(box_to_crop_around_xywh, factor)
  return (_resized_padding(*_axis_window(y1, side, image_shape[0]), output_size),
          _resized_padding(*_axis_window(x1, side, image_shape[1]), output_size))


def crop_and_box(image: np.ndarray, box_to_crop_around_xywh, box_to_transform_xywh, factor: float,
                 output_size: int, kind: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """One frame of `processing_utils.jittered_center_crop`.

  The pixels are the test-time crop (`data_pipelines.crops.sample_target`): the training
  `sample_target` makes the same crop and additionally returns the attention mask (True on padding),
  reproduced here by `padding_mask`. The box is normalised by `output_size` (`normalize=True`, as
  `jittered_center_crop` calls it).

  `image` may also be a `precropped.PrecroppedFrame`, which makes the crop from its windows of crop kind
  `kind` ("template" or "search"; unused for an array).

  Returns (crop [S, S, 3] uint8, box_to_transform in the crop (x, y, w, h) / S [4] float32,
  padding mask [S, S] bool), S = output_size.
  """
  crop, box, (rows, cols) = _crop_box_and_padding(image, box_to_crop_around_xywh, box_to_transform_xywh, factor,
                                                   output_size, kind)
  return crop, box, rows[:, None] | cols[None, :]


def _crop_box_and_padding(image, box_to_crop_around_xywh, box_to_transform_xywh, factor: float,
                          output_size: int, kind: str | None) -> tuple[np.ndarray, np.ndarray,
                                                                        tuple[np.ndarray, np.ndarray]]:
  """`crop_and_box` with the padding mask as `padding_axes` gives it (rows, columns)."""
  if hasattr(image, "sample_target"):  # a pre-cropped frame (`precropped.PrecroppedFrame`)
    crop, resize_factor = image.sample_target(box_to_crop_around_xywh, factor, output_size, kind)
  else:
    crop, resize_factor = crops.sample_target(image, box_to_crop_around_xywh, factor, output_size)
  box = transform_image_to_crop(box_to_transform_xywh, box_to_crop_around_xywh, resize_factor, output_size,
                                normalize=True)
  return crop, box, padding_axes(box_to_crop_around_xywh, image.shape, factor, output_size)


def crop_is_valid(mask: np.ndarray, stride: int = VALIDITY_STRIDE) -> bool:
  """The original's attention-mask checks: reject a crop whose mask is all padding, or whose mask sampled
  at `size // stride` points per side (torch `F.interpolate` nearest: index `floor(i * size / n)` in float32)
  is all padding. The second check implies the first."""
  index = _validity_samples(mask.shape[0], stride)
  return not bool(mask[np.ix_(index, index)].all())


def axes_are_valid(rows: np.ndarray, cols: np.ndarray, stride: int = VALIDITY_STRIDE) -> bool:
  """`crop_is_valid(rows[:, None] | cols[None, :])` without making the mask: an OR of a row and a column
  flag is true at every sampled (i, j) exactly when every sampled row or every sampled column is padding."""
  index = _validity_samples(len(rows), stride)
  return not (bool(rows[index].all()) or bool(cols[index].all()))


@functools.lru_cache(maxsize=64)
def _validity_samples(size: int, stride: int) -> np.ndarray:
  """The indices `crop_is_valid` samples along a side of `size` pixels."""
  samples = size // stride
  scale = np.float32(size) / np.float32(samples)
  return np.minimum(np.floor(np.arange(samples, dtype=np.float32) * scale).astype(np.int64), size - 1)


def flip_box(box_xywh, flip: bool, mirror: float) -> np.ndarray:
  """`RandomHorizontalFlip(_Norm).transform_bbox`: the box goes through its corners even when not
  flipped (so w, h become (x + w) - x, (y + h) - y in float32), and x -> mirror - x when flipped
  (mirror = width - 1 for image pixels, 1 for normalised crop coordinates). [4] float32."""
  x, y, w, h = np.asarray(box_xywh, np.float32)
  xs = np.array([x, x + w], np.float32)
  y2 = y + h
  if flip:
    xs = np.float32(mirror) - xs
  return np.array([xs.min(), y, xs.max() - xs.min(), y2 - y], np.float32)


def to_grayscale(image: np.ndarray) -> np.ndarray:
  """`ToGrayscale`: OpenCV's RGB -> gray, repeated over 3 channels. [H, W, 3] uint8."""
  gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
  return np.stack([gray, gray, gray], axis=2)


def to_unit_range(image_u8: np.ndarray, brightness: float = 1.0) -> np.ndarray:
  """`ToTensorAndJitter`: pixels * (brightness / 255), clipped to [0, 1]. [H, W, 3] float32."""
  return np.clip(image_u8.astype(np.float32) * np.float32(brightness / 255.0), 0.0, 1.0)


def normalize(image, mean, std) -> np.ndarray:
  """`Normalize`: (x - mean) / std per channel, float32. A uint8 image is first scaled to [0, 1]
  (`to_unit_range` with brightness 1). [H, W, 3] float32."""
  image = np.asarray(image)
  if image.dtype == np.uint8:
    image = to_unit_range(image)
  return ((image.astype(np.float32) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32))


def normalized_unit_range(image_u8: np.ndarray, brightness: float, mean, std,
                          out: np.ndarray | None = None) -> np.ndarray:
  """`normalize(to_unit_range(image_u8, brightness), mean, std)`, equal to the bit: both are float32
  functions of one uint8 value and its channel, so they are computed for the 256 values once and looked
  up (cv2.LUT, written into `out` when given: a contiguous [H, W, 3] float32 array). [H, W, 3] float32."""
  values = to_unit_range(np.arange(256, dtype=np.uint8).reshape(1, 256, 1).repeat(3, axis=2), brightness)
  table = normalize(values, mean, std)
  if out is None:
    return cv2.LUT(np.ascontiguousarray(image_u8), table)
  result = cv2.LUT(np.ascontiguousarray(image_u8), table, dst=out)
  if result is not out and not np.shares_memory(result, out):  # OpenCV reallocates a mismatched dst
    out[...] = result
  return out


def box_to_tokens(box_xywh, bins: int, coord_range: float) -> tuple[np.ndarray, np.ndarray]:
  """The actor's targets from the normalised search box (x, y, w, h): corners (x0, y0, x1, y1) clamped to
  [0.5 - range / 2, 0.5 + range / 2], and tokens `int((corner + range / 2 - 0.5) * (bins - 1))` (float32
  arithmetic, truncation as torch's `.int()`; the clamp keeps the operand >= 0).
  Returns (clamped corners [4] float32, tokens [4] int32)."""
  x, y, w, h = np.asarray(box_xywh, np.float32)
  corners = np.array([x, y, x + w, y + h], np.float32)
  corners = np.clip(corners, np.float32(-0.5 * coord_range + 0.5), np.float32(0.5 + coord_range * 0.5))
  tokens = (corners + np.float32(coord_range * 0.5 - 0.5)) * np.float32(bins - 1)
  return corners, tokens.astype(np.int32)


@dataclasses.dataclass(frozen=True)
class CropSpec:
  factor: float
  size: int
  center_jitter: float
  scale_jitter: float

  @classmethod
  def from_config(cls, crop_config) -> "CropSpec":
    return cls(float(crop_config.factor), int(crop_config.size), float(crop_config.center_jitter),
               float(crop_config.scale_jitter))


@dataclasses.dataclass(frozen=True)
class FrameProcessing:
  """Picklable `(template_frames, template_boxes, search_frame, search_box, rng) -> example` for grain
  workers (`pipeline.FrameExamples.process`). See `make_frame_sample`."""
  template: CropSpec
  search: CropSpec
  num_templates: int
  mean: tuple[float, float, float]
  std: tuple[float, float, float]
  bins: int
  coord_range: int

  @classmethod
  def from_config(cls, config) -> "FrameProcessing":
    data = config.data
    return cls(CropSpec.from_config(data.template), CropSpec.from_config(data.search),
               int(data.template.number), tuple(float(v) for v in data.mean), tuple(float(v) for v in data.std),
               int(config.model.bins), int(config.model.range))

  def invalid(self) -> dict:
    t, s = self.template.size, self.search.size
    return {"templates": np.zeros((self.num_templates, t, t, 3), np.float32),
            "search": np.zeros((s, s, 3), np.float32),
            "search_box": np.zeros(4, np.float32),
            "target_tokens": np.zeros(4, np.int32),
            "valid": np.bool_(False)}

  def _crops(self, frames, boxes, kind: str, rng, make_pixels: bool = True):
    """Jitter, size check, crop (`kind`: "template" or "search"), per-crop transform, mask checks; None when
    the original rejects."""
    spec = self.template if kind == "template" else self.search
    jittered = [jitter_box(b, rng, spec.center_jitter, spec.scale_jitter) for b in boxes]
    if any(crops.crop_side(j, spec.factor) < 1 for j in jittered):
      return None
    if not make_pixels:
      axes = [padding_axes(j, f.shape, spec.factor, spec.size) for f, j in zip(frames, jittered)]
      return [] if all(axes_are_valid(*a) for a in axes) else None
    out = []
    for frame, box, jittered_box in zip(frames, boxes, jittered):
      crop, crop_box, (rows, cols) = _crop_box_and_padding(frame, jittered_box, box, spec.factor, spec.size, kind)
      brightness = rng.uniform(max(0.0, 1 - BRIGHTNESS_JITTER), 1 + BRIGHTNESS_JITTER)
      flip = rng.random() < FLIP_PROBABILITY
      if flip:
        # The original flips the attention mask too, and its strided check is not mirror-symmetric. Flipping
        # the uint8 crop before the (per-pixel) normalisation gives the same values as flipping after it.
        crop, cols = cv2.flip(crop, 1), cols[::-1]
      out.append((crop, brightness, flip_box(crop_box, flip, 1.0), (rows, cols)))
    if not all(axes_are_valid(*axes) for *_, axes in out):
      return None
    return out  # normalised by __call__ once the example is accepted, into the output arrays

  def __call__(self, template_frames: Sequence[np.ndarray], template_boxes, search_frame: np.ndarray,
               search_box, rng: np.random.Generator) -> dict:
    if len(template_frames) != self.num_templates or len(template_boxes) != self.num_templates:
      raise ValueError(f"expected {self.num_templates} templates, got {len(template_frames)} frames and "
                       f"{len(template_boxes)} boxes")
    grayscale = rng.random() < GRAYSCALE_PROBABILITY
    flip = rng.random() < FLIP_PROBABILITY

    def joint(frame, box):
      # The original flips each box about the first frame's width of its list; frames of one sequence
      # share a size, so each frame's own width is the same thing.
      precropped = hasattr(frame, "sample_target")  # `precropped.PrecroppedFrame`: the same, per crop
      if grayscale:
        frame = frame.to_grayscale() if precropped else to_grayscale(frame)
      if flip:
        frame = frame.mirror() if precropped else np.ascontiguousarray(frame[:, ::-1])
      return frame, flip_box(np.asarray(box, np.float32), flip, frame.shape[1] - 1)

    templates = [joint(f, b) for f, b in zip(template_frames, template_boxes)]
    search_frame, search_box = joint(search_frame, search_box)

    template_crops = self._crops([f for f, _ in templates], [b for _, b in templates], "template", rng)
    if template_crops is None:
      return self.invalid()
    search_crops = self._crops([search_frame], [search_box], "search", rng)
    if search_crops is None:
      return self.invalid()
    if self._crops([search_frame], [search_box], "template", rng, make_pixels=False) is None:
      return self.invalid()

    t, s = self.template.size, self.search.size
    templates = np.empty((self.num_templates, t, t, 3), np.float32)
    for k, (crop, brightness, _, _) in enumerate(template_crops):
      normalized_unit_range(crop, brightness, self.mean, self.std, out=templates[k])
    search_crop, search_brightness, search_crop_box, _ = search_crops[0]
    search = normalized_unit_range(search_crop, search_brightness, self.mean, self.std,
                                   out=np.empty((s, s, 3), np.float32))
    corners, tokens = box_to_tokens(search_crop_box, self.bins, self.coord_range)
    return {"templates": templates,
            "search": search,
            "search_box": corners,
            "target_tokens": tokens,
            "valid": np.bool_(True)}


def make_frame_sample(template_frames: Sequence[np.ndarray], template_boxes, search_frame: np.ndarray,
                      search_box, config, rng: np.random.Generator) -> dict:
  """One training example from its frames (RGB uint8 [H, W, 3]) and boxes (x, y, w, h, pixels).

  Returns numpy arrays: `templates` [T, Hz, Wz, 3] float32 normalised, `search` [Hx, Wx, 3] float32,
  `search_box` [4] float32 (x0, y0, x1, y1 in the search crop / Hx, clamped as the actor does),
  `target_tokens` [4] int32 (the actor's `seq_output`), `valid` bool (False: the original would reject the
  example; the arrays are then zeros). `config` is a full config (`config.data`, `config.model`).
  """
  return FrameProcessing.from_config(config)(template_frames, template_boxes, search_frame, search_box, rng)
