"""Tracking one object through a video file or an image folder, with an annotated mp4."""

from __future__ import annotations

import glob
import os

import cv2
import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


class VideoFrames:
  """RGB frames of a video file, decoded in order on demand (the tracker reads frames sequentially), so a
  long video never sits in memory whole."""

  def __init__(self, path: str):
    self.path = path
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
      raise ValueError(f"cannot open video {path}")
    count = 0
    while capture.grab():
      count += 1
    capture.release()
    if count == 0:
      raise ValueError(f"no decodable frame in video {path}")
    self._len = count
    self._capture = None
    self._next = 0
    self._last = None

  def __len__(self):
    return self._len

  def __getitem__(self, index: int) -> np.ndarray:
    if self._last is not None and index == self._next - 1:
      return self._last
    if self._capture is None or index < self._next:
      if self._capture is not None:
        self._capture.release()
      self._capture, self._next = cv2.VideoCapture(self.path), 0
    while self._next <= index:
      ok, frame = self._capture.read()
      if not ok:
        raise ValueError(f"{self.path}: cannot decode frame {self._next}")
      self._next += 1
    self._last = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    return self._last

  def fps(self) -> float:
    capture = cv2.VideoCapture(self.path)
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    capture.release()
    return fps


def open_frames(source: str):
  """An image folder (sorted file names) -> list of paths; a video file -> `VideoFrames`."""
  if os.path.isdir(source):
    paths = sorted(p for p in glob.glob(os.path.join(source, "*")) if p.lower().endswith(IMAGE_EXTENSIONS))
    if not paths:
      raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in folder {source}")
    return paths
  if not os.path.isfile(source):
    raise FileNotFoundError(f"no such video or folder: {source}")
  return VideoFrames(source)


def parse_box(text: str) -> list[float]:
  try:
    box = [float(v) for v in text.split(",")]
  except ValueError:
    box = []
  if len(box) != 4:
    raise ValueError(f"--init-box must be x,y,w,h (4 numbers), got {text!r}")
  return box


def check_box_in_frame(box, height: int, width: int) -> None:
  x, y, w, h = box
  if w <= 0 or h <= 0:
    raise ValueError(f"initial box {box} has a non-positive width or height")
  if x < 0 or y < 0 or x + w > width or y + h > height:
    raise ValueError(f"initial box {box} (x,y,w,h) is not inside the {width}x{height} first frame")


def _bgr(frame) -> np.ndarray:
  """An image path (read as BGR) or an RGB array -> a BGR array cv2 can draw on."""
  if isinstance(frame, str):
    image = cv2.imread(frame)
    if image is None:
      raise ValueError(f"cannot read image {frame}")
    return image
  return cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)


def draw_video(frames, boxes, output_path: str, fps: float) -> None:
  """Writes the frames (RGB arrays, or image paths as `open_frames` gives for a folder) with their boxes
  drawn as an mp4 (write to a temporary name, then rename)."""
  height, width = _bgr(frames[0]).shape[:2]
  tmp = output_path + ".tmp.mp4"
  writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
  if not writer.isOpened():
    raise RuntimeError(f"cannot write video {output_path}")
  try:
    for i, box in enumerate(boxes):
      frame = _bgr(frames[i])
      x, y, w, h = (int(round(v)) for v in box)
      cv2.rectangle(frame, (x, y), (x + w, y + h), (0, 0, 255), 2)
      cv2.putText(frame, f"{i}", (5, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1)
      writer.write(frame)
  finally:
    writer.release()
  os.replace(tmp, output_path)
