"""A moving textured box on a noisy background, in memory: for tracker tests and parity runs."""

from __future__ import annotations

import numpy as np


def moving_box_sequence(num_frames: int = 20, size: tuple[int, int] = (160, 120), seed: int = 0):
  """Returns `(frames [N, H, W, 3] uint8 RGB, boxes [N, 4] float64 x, y, w, h)`."""
  rng = np.random.default_rng(seed)
  width, height = size
  background = rng.integers(0, 120, (height, width, 3)).astype(np.uint8)
  texture = rng.integers(120, 256, (64, 64, 3)).astype(np.uint8)
  w0, h0 = width * rng.uniform(0.15, 0.25), height * rng.uniform(0.2, 0.3)
  cx0, cy0 = width * rng.uniform(0.35, 0.65), height * rng.uniform(0.35, 0.65)
  vx, vy = rng.uniform(-1.5, 1.5, 2)
  frames, boxes = [], []
  for t in range(num_frames):
    scale = 1.0 + 0.1 * np.sin(t / 7.0)
    w, h = w0 * scale, h0 * scale
    cx = np.clip(cx0 + vx * t + 4 * np.sin(t / 5.0), w / 2, width - w / 2)
    cy = np.clip(cy0 + vy * t + 3 * np.cos(t / 6.0), h / 2, height - h / 2)
    x0, y0 = int(round(cx - w / 2)), int(round(cy - h / 2))
    x1, y1 = int(round(cx + w / 2)), int(round(cy + h / 2))
    frame = background.copy()
    frame[y0:y1, x0:x1] = texture[:y1 - y0, :x1 - x0] if (y1 - y0) <= 64 and (x1 - x0) <= 64 else 200
    frames.append(frame)
    boxes.append([x0, y0, x1 - x0, y1 - y0])
  return np.stack(frames), np.asarray(boxes, np.float64)
