"""On-device crops and box mappings for the sparse stage's explore pass, as jit-able functions.

The original explores a clip on the host (`lib/train/actors/fartrack_sparse.py`, `FARTrackSparseActor`:
`explore` -> `batch_init` for the templates, `batch_track` per frame), cropping each frame with OpenCV in
`get_subwindow`. Here the same crops and box mappings are pure JAX with static output shapes, so a whole
clip can be one `jax.lax.scan` (and a batch of clips a `jax.vmap`).

Frames arrive as uint8 canvases `[C, C, 3]`: the real `h x w` image at the top-left, the rest unused
(whatever it holds never reaches a crop, and does not enter the channel mean). Boxes and centres are in
canvas pixels, which are the real image's pixels.

The original's crop (`get_subwindow(im, pos, model_sz, original_sz, avg_chans)`), for a side `s`:
  - context window: `xmin = floor(cx - (s + 1) / 2 + 0.5)`, likewise `ymin`; the patch is rows/columns
    `ymin .. ymin + floor(s) - 1`, `xmin .. xmin + floor(s) - 1` (numpy slicing floors a fractional side;
    in practice `s` is already an integer: `round(s_x)` for the search crop, `s_z = ceil(...)` for
    templates);
  - pixels of the window outside the real image are `avg_chans`, the image's per-channel mean, written into
    a uint8 array, so truncated to an integer;
  - unless `s == model_sz`, `cv2.resize(patch, (model_sz, model_sz))`: bilinear (INTER_LINEAR) with half-
    pixel centres, `src = (dst + 0.5) * s / model_sz - 0.5`, clamped to the patch's border pixels, and no
    area averaging when shrinking, in uint8 fixed point;
  - the caller divides by 255, clamps to [0, 1] and normalises with the ImageNet mean/std.

OpenCV's uint8 bilinear path rounds its weights to 11 bits and truncates in its vertical pass, so exact
float bilinear values differ from it by up to ~0.8 grey levels. `get_subwindow` reproduces that integer
arithmetic by default (`uint8_arithmetic=True`); against the OpenCV build in the dev venv it is bit-exact
on the randomised cases of `tests/test_device_crop.py`, which still only asks for <= 1 grey level (another
OpenCV build, e.g. an IPP or a scalar-only path, may round differently).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# `_bbox_clip` in the original keeps a box at least 10 pixels wide and high.
MIN_BOX_SIZE = 10.0
# The original's test for a missing annotation in `batch_track`: the absolute corner coordinates of the
# ground-truth box sum to at most 10 (an all-zero box, but also any box very close to the origin).
_ANNOTATED_CORNER_SUM = 10.0
# Channel sums are exact int32: the largest canvas whose 255-valued channel sum fits in int32.
_MAX_CANVAS_SIDE = 2901


def _check_canvas(canvas) -> jax.Array:
  canvas = jnp.asarray(canvas)
  if canvas.ndim != 3 or canvas.shape[0] != canvas.shape[1] or canvas.shape[2] != 3:
    raise ValueError(f"canvas: expected a square [C, C, 3] image, got shape {canvas.shape}")
  if canvas.dtype != jnp.uint8:
    raise ValueError(f"canvas: expected uint8 pixels, got {canvas.dtype}")
  if canvas.shape[0] > _MAX_CANVAS_SIDE:
    raise ValueError(f"canvas: side {canvas.shape[0]} exceeds {_MAX_CANVAS_SIDE}, the largest whose "
                     "channel sums fit in int32; downscale frames further")
  return canvas


def _real_size(canvas: jax.Array, size_hw) -> tuple[jax.Array, jax.Array]:
  """(height, width) int32, clamped to the canvas so no read can leave it."""
  size_hw = jnp.asarray(size_hw)
  if size_hw.shape != (2,):
    raise ValueError(f"size_hw: expected [2] (height, width), got shape {size_hw.shape}")
  size_hw = jnp.clip(size_hw.astype(jnp.int32), 0, canvas.shape[0])
  return size_hw[0], size_hw[1]


def _channel_sums(canvas: jax.Array, height: jax.Array, width: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Exact int32 per-channel sums over the real `height x width` region [3], and its pixel count."""
  side = canvas.shape[0]
  rows = jnp.arange(side) < height
  cols = jnp.arange(side) < width
  inside = (rows[:, None] & cols[None, :])[:, :, None]
  sums = jnp.sum(jnp.where(inside, canvas.astype(jnp.int32), 0), axis=(0, 1))
  return sums, jnp.maximum(height * width, 1)


def channel_mean(canvas, size_hw) -> jax.Array:
  """The image's per-channel mean over its real pixels, as the original's `np.mean(img, axis=(0, 1))`.

  Args:
    canvas: [C, C, 3] uint8, the image at the top-left.
    size_hw: [2] int, the real (height, width); canvas pixels beyond it are ignored.
  Returns:
    [3] float32 mean pixel value in [0, 255].
  """
  canvas = _check_canvas(canvas)
  height, width = _real_size(canvas, size_hw)
  sums, count = _channel_sums(canvas, height, width)
  return sums.astype(jnp.float32) / count.astype(jnp.float32)


def context_side(size_wh, factor: float) -> jax.Array:
  """The original's crop side for a box of size (w, h): `ceil(sqrt((w * factor) * (h * factor)))`.

  `s_z` in `batch_init` (template factor) and `s_x` in `batch_track` (search factor, around the previous
  prediction's size). float32 here where the original uses float64: the ceiling can differ only when the
  square root lies within a float32 rounding of an integer (exact for integer products below 2**24).

  Args:
    size_wh: [..., 2] box width and height in pixels.
  Returns:
    [...] float32, integer-valued side in pixels.
  """
  size_wh = jnp.asarray(size_wh, jnp.float32)
  scaled = size_wh * jnp.float32(factor)
  return jnp.ceil(jnp.sqrt(scaled[..., 0] * scaled[..., 1]))


def _source_taps(window_min: jax.Array, side: jax.Array, output_size: int, clamp_fraction: bool):
  """Per output column (or row): the 2 source pixels in image coordinates and the second one's weight.

  OpenCV's INTER_LINEAR samples at `src = (dst + 0.5) * side / out - 0.5`, which it computes in double and
  rounds to float32; here it is the exact fraction `((2 dst + 1) side - out) / (2 out)` of two integers
  below 2**24, divided once in float32: the same correctly rounded value. The weight of the second pixel
  is `src - floor(src)`. Both source pixels are clamped into the patch. Columns (`clamp_fraction`) also
  drop the weight left of the first pixel and at or past the last one, as OpenCV does; rows keep the
  fraction and only clamp their indices, as OpenCV does too (the same value in float, not in its fixed
  point).
  Returns (pixels [out, 2] int32 image coordinates, second-pixel weight [out] float32 in [0, 1)).
  """
  dst = jnp.arange(output_size, dtype=jnp.int32)
  # Exact in float32 while 2 * out * side < 2**24 (out 224: any side below 37449 pixels).
  numerator = (2 * dst + 1) * side - output_size
  src = numerator.astype(jnp.float32) / jnp.float32(2 * output_size)
  first = jnp.floor(src)
  fraction = src - first
  first = first.astype(jnp.int32)
  if clamp_fraction:
    fraction = jnp.where((first < 0) | (first >= side - 1), 0.0, fraction)
  taps = jnp.clip(jnp.stack([first, first + 1], axis=-1), 0, side - 1)
  return window_min + taps, fraction


def _opencv_uint8_weights(fraction: jax.Array) -> jax.Array:
  """OpenCV's 11-bit fixed-point weights (`INTER_RESIZE_COEF_SCALE` 2048): `round((1 - f) * 2048)` and
  `round(f * 2048)` from float32, ties to even as `cvRound`. [out] float32 -> [out, 2] int32."""
  return jnp.round(jnp.stack([1.0 - fraction, fraction], axis=-1) * 2048.0).astype(jnp.int32)


def get_subwindow(canvas, size_hw, center_xy, original_size, output_size: int, *,
                  channel_average=None, uint8_arithmetic: bool = True) -> jax.Array:
  """The original's `get_subwindow`: a square window of side `original_size` around `center_xy`, resized.

  See the module docstring for the original's steps. Each output pixel gathers its 2 x 2 source pixels
  straight from the canvas, so the crop costs O(output_size**2) whatever the canvas size and window side
  (plus one O(C**2) reduction for the channel mean unless `channel_average` is given). Works under
  `jax.jit` (`output_size`, `uint8_arithmetic` static) and `jax.vmap` with traced centre, side and size.

  Args:
    canvas: [C, C, 3] uint8 frame, the real image at the top-left.
    size_hw: [2] int, the real (height, width); pixels of the canvas beyond it count as outside the image.
    center_xy: [2] float, window centre (x, y) in pixels.
    original_size: scalar, the window side s in pixels (the original's `original_sz`); a fractional side
      is floored, as the original's slicing does, but still places the window through `(s + 1) / 2`. A side
      below 1 is taken as 1 (the original's `cv2.resize` fails on the empty patch and the clip is dropped).
    output_size: the output side in pixels (the original's `model_sz`).
    channel_average: optional [3] float, the fill colour before truncation to an integer; by default the
      real image's `channel_mean` (what the original passes for both template and search crops).
    uint8_arithmetic: True reproduces OpenCV's uint8 INTER_LINEAR fixed point (11-bit weights, then its
      vectorised vertical pass `(((b0 * (r0 >> 4)) >> 16) + ((b1 * (r1 >> 4)) >> 16) + 2) >> 2`), so the
      values are the integers the original's uint8 `cv2.resize` returns; False gives the exact float
      bilinear values (OpenCV's float32 path) instead.
  Returns:
    [output_size, output_size, 3] float32 pixel values in [0, 255].
  """
  if not isinstance(output_size, int) or isinstance(output_size, bool) or output_size < 1:
    raise ValueError(f"output_size: expected a positive Python int (static), got {output_size!r}")
  canvas = _check_canvas(canvas)
  height, width = _real_size(canvas, size_hw)
  center_xy = jnp.asarray(center_xy, jnp.float32)
  if center_xy.shape != (2,):
    raise ValueError(f"center_xy: expected [2] (x, y), got shape {center_xy.shape}")
  window = jnp.asarray(original_size, jnp.float32)
  if window.shape != ():
    raise ValueError(f"original_size: expected a scalar window side, got shape {window.shape}")

  if channel_average is None:
    sums, count = _channel_sums(canvas, height, width)
    # The original writes the float mean into a uint8 array: truncation, i.e. floor(sum / count).
    fill = sums // count
  else:
    channel_average = jnp.asarray(channel_average, jnp.float32)
    if channel_average.shape != (3,):
      raise ValueError(f"channel_average: expected [3], got shape {channel_average.shape}")
    fill = jnp.clip(jnp.floor(channel_average), 0.0, 255.0).astype(jnp.int32)

  side = jnp.maximum(jnp.floor(window), 1.0).astype(jnp.int32)
  # float32 where the original has float64: a centre within a float32 rounding of the floor's step can
  # move the window by one pixel.
  corner = jnp.floor(center_xy - (window + 1.0) / 2.0 + 0.5).astype(jnp.int32)
  cols, col_fraction = _source_taps(corner[0], side, output_size, clamp_fraction=True)
  rows, row_fraction = _source_taps(corner[1], side, output_size, clamp_fraction=False)

  last = canvas.shape[0] - 1
  pixels = canvas[jnp.clip(rows, 0, last)[:, :, None, None], jnp.clip(cols, 0, last)[None, None, :, :]]
  inside = (((rows >= 0) & (rows < height))[:, :, None, None]
            & ((cols >= 0) & (cols < width))[None, None, :, :])
  values = jnp.where(inside[..., None], pixels.astype(jnp.int32), fill)  # [out, 2 rows, out, 2 cols, 3]

  if uint8_arithmetic:
    col_weights = _opencv_uint8_weights(col_fraction)
    row_weights = _opencv_uint8_weights(row_fraction)
    # Horizontal pass: exact int32 sums scaled by 2048 (at most 255 * 2048).
    row_sums = jnp.sum(values * col_weights[None, None, :, :, None], axis=3)  # [out, 2, out, 3]
    scaled = (row_weights[:, :, None, None] * (row_sums >> 4)) >> 16
    out = (scaled[:, 0] + scaled[:, 1] + 2) >> 2
    return jnp.clip(out, 0, 255).astype(jnp.float32)

  # Elementwise products, not an einsum: a float32 dot may run at reduced precision on accelerators.
  col_weights = jnp.stack([1.0 - col_fraction, col_fraction], axis=-1)
  row_weights = jnp.stack([1.0 - row_fraction, row_fraction], axis=-1)
  weights = row_weights[:, :, None, None, None] * col_weights[None, None, :, :, None]
  out = jnp.sum(values.astype(jnp.float32) * weights, axis=(1, 3))
  return jnp.clip(out, 0.0, 255.0)


def box_is_annotated(box_xywh) -> jax.Array:
  """The original's test (`batch_track`) for a present ground-truth box: |x1|+|y1|+|x2|+|y2| > 10.

  Args:
    box_xywh: [..., 4] (x, y, w, h) in pixels.
  Returns:
    [...] bool.
  """
  box = jnp.asarray(box_xywh, jnp.float32)
  corners = jnp.concatenate([box[..., :2], box[..., :2] + box[..., 2:]], axis=-1)
  return jnp.sum(jnp.abs(corners), axis=-1) > _ANNOTATED_CORNER_SUM


def _image_to_search(points_xy, center_xy, search_side, output_size: int):
  """Image pixels -> search-crop pixels: `(p - centre) * out / s + out / 2`, as `batch_track` maps."""
  return (points_xy - center_xy) * (jnp.float32(output_size) / search_side) + jnp.float32(output_size) / 2


def crop_box_to_search(box_xywh, center_xy, s, output_size: int) -> jax.Array:
  """A ground-truth box in the image -> the search crop's pixels: `gt_in_crop` of the original's
  `batch_track`.

  The corners are shifted by the crop centre, scaled by `output_size / s` and offset by `output_size / 2`;
  a box that fails `box_is_annotated` maps to all zeros, as in the original. Note the original scales by the
  unrounded `s_x` while the crop used `round(s_x)`; both are the same integer there.

  Args:
    box_xywh: [4] (x, y, w, h) in image pixels.
    center_xy: [2] the search crop's centre (the previous prediction's centre).
    s: scalar, the search window side in pixels (`s_x`).
    output_size: the search crop's side in pixels.
  Returns:
    [4] float32 (x, y, w, h) in search-crop pixels.
  """
  box = jnp.asarray(box_xywh, jnp.float32)
  center_xy = jnp.asarray(center_xy, jnp.float32)
  s = jnp.asarray(s, jnp.float32)
  top_left = _image_to_search(box[:2], center_xy, s, output_size)
  bottom_right = _image_to_search(box[:2] + box[2:], center_xy, s, output_size)
  mapped = jnp.concatenate([top_left, bottom_right - top_left])
  return jnp.where(box_is_annotated(box), mapped, 0.0)


def previous_boxes_to_search(boxes_cxcywh, center_xy, s, output_size: int) -> jax.Array:
  """The previous predictions -> the search crop, normalised by its side: `pre_in` of `batch_track`.

  Each (cx, cy, w, h) box becomes its corners (x1, y1, x2, y2), mapped like `crop_box_to_search` and
  divided by `output_size` (so the crop spans [0, 1]). The original zeroes the whole sequence when the
  frame's ground-truth box fails `box_is_annotated`; that choice is the caller's (it needs the gt box).

  Args:
    boxes_cxcywh: [P, 4] the last P predictions (oldest first), centre and size in image pixels.
    center_xy: [2] the search crop's centre; s: scalar window side; output_size: crop side in pixels.
  Returns:
    [P, 4] float32 normalised corners (x1, y1, x2, y2).
  """
  boxes = jnp.asarray(boxes_cxcywh, jnp.float32)
  center_xy = jnp.asarray(center_xy, jnp.float32)
  s = jnp.asarray(s, jnp.float32)
  top_left = _image_to_search(boxes[..., :2] - 0.5 * boxes[..., 2:], center_xy, s, output_size)
  bottom_right = _image_to_search(boxes[..., :2] + 0.5 * boxes[..., 2:], center_xy, s, output_size)
  return jnp.concatenate([top_left, bottom_right], axis=-1) / jnp.float32(output_size)


def clip_center_size(center_xy, size_wh, image_hw, min_size: float = MIN_BOX_SIZE):
  """The original's `_bbox_clip`: centre into [0, W] x [0, H], size into [min_size, W] x [min_size, H].

  The size is first capped at the image side and then raised to `min_size`, so an image narrower than
  `min_size` still gets a `min_size` box, as in the original.

  Args:
    center_xy: [..., 2]; size_wh: [..., 2]; image_hw: [..., 2] the real (height, width).
  Returns:
    (center_xy [..., 2], size_wh [..., 2]) float32.
  """
  center_xy = jnp.asarray(center_xy, jnp.float32)
  size_wh = jnp.asarray(size_wh, jnp.float32)
  image_wh = jnp.asarray(image_hw, jnp.float32)[..., ::-1]
  center_xy = jnp.maximum(0.0, jnp.minimum(center_xy, image_wh))
  size_wh = jnp.maximum(jnp.float32(min_size), jnp.minimum(size_wh, image_wh))
  return center_xy, size_wh


def search_bins_to_image(pred_bins, center_xy, s, image_hw, *, bins: int, coord_range: float,
                         min_size: float = MIN_BOX_SIZE):
  """A predicted box in coordinate bins -> the next centre and size in the image, as `batch_track` does.

  The original maps the model's (x1, y1, x2, y2) bins to crop units, `(bin / (bins - 1) - (range / 2 -
  0.5)) * s`, moves the crop's top-left corner to `centre - s / 2`, takes the box centre and size, and
  clips them with `_bbox_clip` (`clip_center_size`). The predicted box (x, y, w, h) the original records is
  `(cx - w / 2, cy - h / 2, w, h)` of the result (`center_size_to_xywh`).

  Args:
    pred_bins: [4] (x1, y1, x2, y2) in bins (float; the model's decoded coordinates).
    center_xy: [2] the search crop's centre; s: scalar, the search window side (`s_x`).
    image_hw: [2] the real (height, width).
    bins: coordinate bins per unit (`MODEL.BINS`); coord_range: `MODEL.RANGE`.
  Returns:
    (center_xy [2], size_wh [2]) float32 in image pixels.
  """
  pred = jnp.asarray(pred_bins, jnp.float32)
  center_xy = jnp.asarray(center_xy, jnp.float32)
  s = jnp.asarray(s, jnp.float32)
  box = (pred / jnp.float32(bins - 1) - jnp.float32(coord_range * 0.5 - 0.5)) * s
  size_wh = box[2:] - box[:2]
  new_center = box[:2] + center_xy - s / 2 + size_wh / 2
  return clip_center_size(new_center, size_wh, image_hw, min_size)


def center_size_to_xywh(center_xy, size_wh) -> jax.Array:
  """(cx, cy), (w, h) -> [..., 4] (x, y, w, h) with (x, y) the top-left corner."""
  center_xy = jnp.asarray(center_xy, jnp.float32)
  size_wh = jnp.asarray(size_wh, jnp.float32)
  return jnp.concatenate([center_xy - size_wh / 2, size_wh], axis=-1)
