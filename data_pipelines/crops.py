"""Square crops around a box, exactly as the original makes them (OpenCV on uint8 frames), and the box
arithmetic that goes with them: one copy for the tracker (`fartrack_jax.tracking`), the training examples
(`training/processing.py`) and the pre-cropped sets (`training/precropped.py`).

The crops stay on the host on purpose: `cv2.resize` on uint8 images uses fixed-point bilinear weights, and
reproducing the original's boxes bit for bit means using the same routine. Per frame, the tracker sends two
uint8 crops to the device and gets the box back.
"""

from __future__ import annotations

import math

import cv2
import numpy as np


def crop_side(box_xywh, factor: float) -> int:
  """Side of the square crop `sample_target` takes around `box_xywh`: `ceil(sqrt(w * h) * factor)`; < 1 means
  the box is too small to crop."""
  _, _, w, h = (float(v) for v in box_xywh)
  return math.ceil(math.sqrt(w * h) * factor)


def crop_window(box_xywh, factor: float) -> tuple[int, int, int]:
  """`(x1, y1, side)`: the image pixel of the crop's top-left corner and its side, centred on the box as the
  original rounds it (`round(centre - side / 2)`, Python's round half to even)."""
  x, y, w, h = (float(v) for v in box_xywh)
  side = crop_side(box_xywh, factor)
  return round(x + 0.5 * w - side * 0.5), round(y + 0.5 * h - side * 0.5), side


def check_croppable(box_xywh, side: int) -> None:
  """ValueError for a box whose crop would have no pixel (`crop_side` < 1)."""
  if side < 1:
    raise ValueError(f"box {list(box_xywh)} is too small to crop (side {side})")


def sample_target(image: np.ndarray, box, factor: float, output_size: int) -> tuple[np.ndarray, float]:
  """A square crop of side `ceil(sqrt(w * h) * factor)` centred on `box` (x, y, w, h), zero-padded where it
  leaves the image, resized to `output_size` (bilinear).

  Reproduces the original's `sample_target`, including its padding arithmetic: on the right and bottom it
  pads `x2 - W + 1` pixels, so a crop that reaches past the image drops the image's last column/row.

  Returns `(crop [output_size, output_size, 3] uint8, resize_factor = output_size / crop_side)`.
  """
  x1, y1, side = crop_window(box, factor)
  check_croppable(box, side)
  x2, y2 = x1 + side, y1 + side
  height, width = image.shape[:2]
  x1_pad, y1_pad = max(0, -x1), max(0, -y1)
  x2_pad, y2_pad = max(x2 - width + 1, 0), max(y2 - height + 1, 0)
  crop = image[y1 + y1_pad:y2 - y2_pad, x1 + x1_pad:x2 - x2_pad, :]
  crop = cv2.copyMakeBorder(crop, y1_pad, y2_pad, x1_pad, x2_pad, cv2.BORDER_CONSTANT)
  resize_factor = output_size / side
  return cv2.resize(crop, (output_size, output_size)), resize_factor


def map_box_back(crop_box, previous_box, resize_factor: float, search_size: int) -> list[float]:
  """A (cx, cy, w, h) box in search-crop pixels scaled to image units (`* search_size / resize_factor`)
  -> (x, y, w, h) in the image, the crop having been centred on `previous_box`."""
  cx_prev = previous_box[0] + 0.5 * previous_box[2]
  cy_prev = previous_box[1] + 0.5 * previous_box[3]
  cx, cy, w, h = (float(v) for v in crop_box)
  half_side = 0.5 * search_size / resize_factor
  cx_real = cx + (cx_prev - half_side)
  cy_real = cy + (cy_prev - half_side)
  return [cx_real - 0.5 * w, cy_real - 0.5 * h, w, h]


def clip_box(box, height: int, width: int, margin: float = 0) -> list[float]:
  """Keeps an (x, y, w, h) box inside the image with at least `margin` pixels of it visible."""
  x1, y1, w, h = box
  x2, y2 = x1 + w, y1 + h
  x1 = min(max(0, x1), width - margin)
  x2 = min(max(margin, x2), width)
  y1 = min(max(0, y1), height - margin)
  y2 = min(max(margin, y2), height)
  return [x1, y1, max(margin, x2 - x1), max(margin, y2 - y1)]
