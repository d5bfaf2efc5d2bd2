"""Tiny synthetic evaluation datasets in the real ones' on-disk layouts.

`make_synthetic_dataset(layout, root)` writes a few short videos of one textured rectangle moving smoothly
(with a slight scale change) over a noisy gradient, as JPEG frames (quality 90), with the annotation files
the benchmark ships, so that `data_pipelines.evaluation.load_dataset` and everything downstream (tracker
loop, result files, scoring) can run end to end without the real data.

Layouts (the benchmark names `load_dataset` reads them as) and the sequences each makes:
- `got10k` (got10k_val, got10k_test): `GOT-10k_Val_000001..` and `GOT-10k_Test_000001..`, num_sequences
  each, with `list.txt` per split and a `meta_info.ini` giving the resolution.
- `lasot`, `lasot_ext`: the first num_sequences names of the 280 / 150 name tables.
- `trackingnet`: YouTube-id-like names, frames from `0.jpg`.
- `nfs`, `uav123`, `otb`: the first table entries, skipping any whose frame folder an earlier one already
  uses (UAV123's `bird1_2`, OTB's `Jogging_2`, ...): one synthetic video cannot stand for two annotated
  parts.

Besides the native files:
- `<root>/_synthetic_sequences.txt`: `<name> <num frames>` per sequence made. For the table-driven
  benchmarks (LaSOT, LaSOT_ext, NFS, UAV123, OTB) `load_dataset` reads it instead of the full table.
- `<root>/_synthetic_full_gt/<name>.txt`: every sequence's true boxes, one per frame `load_dataset`
  returns (after OTB's init_omit), so test splits, which ship only the first box, can be scored.

Boxes are integers and pixel-exact in the coordinates the tracker sees: the target covers columns
x..x+w-1 and rows y..y+h-1 of the image array. Where the target is marked hidden (GOT-10k val's
absence.label/cover.label, LaSOT's full_occlusion.txt: one short stretch mid-sequence) an occluder is
drawn over it and the files still give its true box (real LaSOT may give an arbitrary box there,
such as 1,1,-1,-1).

Annotations and the lists are written atomically (temporary file, then rename), after the frames.
"""

from __future__ import annotations

import math
import os
import string

import cv2
import numpy as np

from data_pipelines.evaluation import readers
from data_pipelines.annotation_files import format_boxes
from data_pipelines.annotation_files import write_text_atomic

LAYOUTS = ("got10k", "lasot", "lasot_ext", "trackingnet", "nfs", "uav123", "otb")
FULL_GT_DIR = "_synthetic_full_gt"
JPEG_QUALITY = 90
_TEXTURE_SIZE = 32


def _texture(rng: np.random.Generator) -> np.ndarray:
  """[32, 32, 3] uint8 two-colour pattern (checker, stripes or blobs) with noise."""
  colour_a = rng.integers(0, 256, 3)
  colour_b = rng.integers(0, 256, 3)
  if np.abs(colour_a - colour_b).sum() < 200:
    colour_b = 255 - colour_a
  yy, xx = np.mgrid[0:_TEXTURE_SIZE, 0:_TEXTURE_SIZE].astype(np.float64)
  period = rng.uniform(5, 12)
  kind = rng.integers(3)
  if kind == 0:
    mask = ((xx // period + yy // period) % 2) > 0
  elif kind == 1:
    angle = rng.uniform(0, math.pi)
    mask = np.sin(2 * math.pi * (xx * math.cos(angle) + yy * math.sin(angle)) / period) > 0
  else:
    coarse = rng.random((5, 5)).astype(np.float32)
    mask = cv2.resize(coarse, (_TEXTURE_SIZE, _TEXTURE_SIZE), interpolation=cv2.INTER_CUBIC) > 0.5
  texture = np.where(mask[..., None], colour_a, colour_b) + rng.normal(0, 12, (_TEXTURE_SIZE,) * 2 + (3,))
  return np.clip(texture, 0, 255).astype(np.uint8)


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
  """[H, W, 3] float32 gradient between two muted colours plus coarse and fine noise."""
  start, end = rng.uniform(40, 200, (2, 3))
  angle = rng.uniform(0, 2 * math.pi)
  yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
  ramp = xx / max(width - 1, 1) * math.cos(angle) + yy / max(height - 1, 1) * math.sin(angle)
  ramp = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1e-6)
  image = start + (end - start) * ramp[..., None]
  coarse = rng.normal(0, 25, (max(height // 8, 2), max(width // 8, 2), 3)).astype(np.float32)
  image = image + cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
  return (image + rng.normal(0, 6, image.shape)).astype(np.float32)


def _hidden_stretch(num_frames: int) -> range:
  """One short stretch in the middle of the sequence (never frame 0); empty for very short ones."""
  if num_frames < 4:
    return range(0)
  start = num_frames // 2
  return range(start, start + max(1, num_frames // 10))


def render_sequence(rng: np.random.Generator, num_frames: int, size: tuple[int, int],
                    hidden: range = range(0)) -> tuple[list[np.ndarray], np.ndarray]:
  """Frames ([H, W, 3] uint8 BGR each) and boxes ([N, 4] float64 x, y, w, h, integer valued) of one
  target moving on a smooth sinusoidal path; in `hidden` frames an occluder covers it."""
  width, height = size
  background = _background(rng, width, height)
  texture = _texture(rng)
  occluder = _texture(rng)
  base_w = rng.uniform(0.15, 0.30) * width
  base_h = rng.uniform(0.15, 0.30) * height
  # Amplitudes keep the largest (scale 1.1) box inside the frame; periods of 30..60 frames give a few
  # pixels of motion per frame at any sequence length.
  amp_x = rng.uniform(0.3, 1.0) * max(width - 1.1 * base_w, 0) / 2
  amp_y = rng.uniform(0.3, 1.0) * max(height - 1.1 * base_h, 0) / 2
  omega_x, omega_y, omega_s = (2 * math.pi / rng.uniform(lo, hi) for lo, hi in ((30, 60), (30, 60), (40, 80)))
  phase_x, phase_y, phase_s = rng.uniform(0, 2 * math.pi, 3)
  frames, boxes = [], []
  for t in range(num_frames):
    scale = 1 + 0.1 * math.sin(omega_s * t + phase_s)
    w = int(np.clip(round(base_w * scale), 2, width))
    h = int(np.clip(round(base_h * scale), 2, height))
    cx = width / 2 + amp_x * math.sin(omega_x * t + phase_x)
    cy = height / 2 + amp_y * math.sin(omega_y * t + phase_y)
    x = int(np.clip(round(cx - w / 2), 0, width - w))
    y = int(np.clip(round(cy - h / 2), 0, height - h))
    image = background + rng.normal(0, 3, background.shape)
    image[y:y + h, x:x + w] = cv2.resize(texture, (w, h), interpolation=cv2.INTER_LINEAR)
    if t in hidden:
      x0, y0 = max(x - 2, 0), max(y - 2, 0)
      x1, y1 = min(x + w + 2, width), min(y + h + 2, height)
      image[y0:y1, x0:x1] = cv2.resize(occluder, (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST)
    frames.append(np.clip(image, 0, 255).astype(np.uint8))
    boxes.append((x, y, w, h))
  return frames, np.asarray(boxes, dtype=np.float64)


def write_frames(paths: list[str], frames: list[np.ndarray]) -> None:
  """Writes each frame (BGR uint8) as a JPEG at its path, making the folders; OSError naming a path OpenCV
  could not write."""
  for path, frame in zip(paths, frames):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if not cv2.imwrite(path, frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
      raise OSError(f"cv2.imwrite could not write {path}")


def one_per_line(values: np.ndarray) -> str:
  """An integer label file: one value a line."""
  return "".join(f"{int(v)}\n" for v in values)


class _Writer:
  """Renders sequences with per-sequence random streams and records what was made."""

  def __init__(self, layout: str, root: str, num_frames: int, size: tuple[int, int], seed: int,
               total: int):
    self.layout, self.root, self.num_frames, self.size = layout, root, num_frames, size
    self.seed, self.total = seed, total
    self.made: list[tuple[str, int]] = []

  def render(self, name: str, num_frames: int | None = None, with_hidden: bool = False):
    num_frames = num_frames or self.num_frames
    rng = np.random.default_rng([self.seed, LAYOUTS.index(self.layout), len(self.made)])
    hidden = _hidden_stretch(num_frames) if with_hidden else range(0)
    frames, boxes = render_sequence(rng, num_frames, self.size, hidden)
    print(f"[{len(self.made) + 1}/{self.total}] {self.layout} {name}: {num_frames} frames", flush=True)
    return frames, boxes, hidden

  def finish_sequence(self, name: str, boxes: np.ndarray, num_frames: int) -> None:
    """boxes: one per frame the reader returns; num_frames: frames written (OTB's init_omit included)."""
    write_text_atomic(os.path.join(self.root, FULL_GT_DIR, f"{name}.txt"), format_boxes(boxes))
    self.made.append((name, num_frames))

  def write_list(self) -> None:
    write_text_atomic(os.path.join(self.root, readers.SYNTHETIC_LIST),
                      "".join(f"{name} {count}\n" for name, count in self.made))


def _trackingnet_name(rng: np.random.Generator) -> str:
  alphabet = string.ascii_letters + string.digits + "-_"
  return "".join(rng.choice(list(alphabet), 11)) + "_0"


def make_synthetic_dataset(layout: str, root: str, num_sequences: int = 3, num_frames: int = 20,
                           size: tuple[int, int] = (160, 120), seed: int = 0) -> list[str]:
  """Writes `num_sequences` synthetic sequences of `num_frames` frames of `size` (width, height) pixels
  in `layout`'s native layout under `root`; returns their names (for got10k: the val names, then the
  test names). Table-driven layouts cap num_frames at the real sequence's length."""
  if layout not in LAYOUTS:
    raise ValueError(f"unknown layout {layout!r}; one of {', '.join(LAYOUTS)}")
  if num_sequences < 1 or num_frames < 2:
    raise ValueError(f"need num_sequences >= 1 and num_frames >= 2, got {num_sequences}, {num_frames}")
  width, height = size
  if width < 16 or height < 16:
    raise ValueError(f"frame size {width}x{height} is too small (16x16 at least)")
  root = os.path.abspath(root)
  os.makedirs(root, exist_ok=True)
  total = 2 * num_sequences if layout == "got10k" else num_sequences
  writer = _Writer(layout, root, num_frames, (width, height), seed, total)

  if layout == "got10k":
    for split, prefix in (("val", "GOT-10k_Val"), ("test", "GOT-10k_Test")):
      names = [f"{prefix}_{i:06d}" for i in range(1, num_sequences + 1)]
      for name in names:
        seq_dir = os.path.join(root, split, name)
        frames, boxes, hidden = writer.render(name, with_hidden=split == "val")
        write_frames([os.path.join(seq_dir, f"{i:08d}.jpg") for i in range(1, num_frames + 1)], frames)
        if split == "val":
          absent = np.isin(np.arange(num_frames), hidden)
          write_text_atomic(os.path.join(seq_dir, "absence.label"), one_per_line(absent))
          # cover.label bins the visible fraction 0..8; the synthetic target is either whole or hidden.
          write_text_atomic(os.path.join(seq_dir, "cover.label"), one_per_line(8 * ~absent))
        # The GOT-10k toolkit clips boxes to this resolution when scoring.
        write_text_atomic(os.path.join(seq_dir, "meta_info.ini"),
                          f"[METAINFO]\nobject_class: synthetic rectangle\nmotion_class: sinusoidal\n"
                          f"resolution: ({width}, {height})\n")
        write_text_atomic(os.path.join(seq_dir, "groundtruth.txt"),
                          format_boxes(boxes if split == "val" else boxes[:1]))
        writer.finish_sequence(name, boxes, num_frames)
      write_text_atomic(os.path.join(root, split, "list.txt"), "".join(f"{n}\n" for n in names))

  elif layout == "trackingnet":
    name_rng = np.random.default_rng([seed, LAYOUTS.index(layout)])
    names = []
    while len(names) < num_sequences:
      name = _trackingnet_name(name_rng)
      if name not in names:
        names.append(name)
    for name in names:
      frames, boxes, _ = writer.render(name)
      write_frames([os.path.join(root, "TEST", "frames", name, f"{i}.jpg") for i in range(num_frames)],
                    frames)
      write_text_atomic(os.path.join(root, "TEST", "anno", f"{name}.txt"), format_boxes(boxes[:1]))
      writer.finish_sequence(name, boxes, num_frames)

  elif layout in ("lasot", "lasot_ext"):
    entries = readers.table_entries(layout)
    if num_sequences > len(entries):
      raise ValueError(f"{layout} has {len(entries)} sequences, asked for {num_sequences}")
    for entry in entries[:num_sequences]:
      seq_dir = os.path.join(root, os.path.dirname(entry.annotation))
      frames, boxes, hidden = writer.render(entry.name, with_hidden=True)
      write_frames([os.path.join(seq_dir, "img", f"{i:08d}.jpg") for i in range(1, num_frames + 1)], frames)
      occluded = np.isin(np.arange(num_frames), hidden).astype(int)
      # LaSOT keeps each per-frame flag file on one comma-separated line.
      write_text_atomic(os.path.join(seq_dir, "full_occlusion.txt"), ",".join(map(str, occluded)) + "\n")
      write_text_atomic(os.path.join(seq_dir, "out_of_view.txt"), ",".join(["0"] * num_frames) + "\n")
      write_text_atomic(os.path.join(seq_dir, "groundtruth.txt"), format_boxes(boxes))
      writer.finish_sequence(entry.name, boxes, num_frames)

  else:  # nfs, uav123, otb: fixed tables of folders and frame ranges.
    chosen, folders = [], set()
    for entry in readers.table_entries(layout):
      # One synthetic video cannot stand for two annotated parts (UAV123's group1_1..4, OTB's Jogging_1/2).
      if entry.frame_dir not in folders:
        chosen.append(entry)
        folders.add(entry.frame_dir)
      if len(chosen) == num_sequences:
        break
    if len(chosen) < num_sequences:
      raise ValueError(f"{layout} has {len(chosen)} sequences with their own folder, asked for "
                       f"{num_sequences}")
    for index, entry in enumerate(chosen):
      count = min(num_frames, entry.last_frame - entry.first_frame + 1)
      if count <= entry.init_omit + 1:
        raise ValueError(f"{entry.name} drops its first {entry.init_omit} frames; need num_frames > "
                         f"{entry.init_omit + 1}")
      frames, boxes, _ = writer.render(entry.name, count)
      numbers = range(entry.first_frame, entry.first_frame + count)
      write_frames([os.path.join(root, entry.frame_dir, f"{i:0{entry.zero_pad}d}.jpg") for i in numbers],
                    frames)
      text = format_boxes(boxes)
      if layout == "nfs":
        text = text.replace(",", "\t")  # the original reads NFS annotations tab-separated
      elif layout == "otb" and index % 2:
        text = text.replace(",", "\t")  # OTB's files mix commas and tabs/spaces
      write_text_atomic(os.path.join(root, entry.annotation), text)
      writer.finish_sequence(entry.name, boxes[entry.init_omit:], count)

  writer.write_list()
  print(f"wrote {len(writer.made)} {layout} sequences under {root}", flush=True)
  return [name for name, _ in writer.made]
