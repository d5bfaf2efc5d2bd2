"""Tiny synthetic training roots in the real training sets' on-disk layouts.

`make_synthetic_train_dataset(layout, root)` writes a few short videos (`data_pipelines.synthetic`'s
`render_sequence`: one textured rectangle moving over a noisy background, JPEG quality 90) with the files
the training readers (`layouts.py`) read, and returns the `TrainSequence`s a reader should give back, so
tests and the quick start can train without the real data.

Layouts and what each writes under `root`:
- `got10k_train` (read as SYNTHETIC, GOT10K_vottrain, GOT10K_votval, GOT10K_train_full):
  `train/list.txt`, `train/GOT-10k_Train_000001../{00000001.jpg.., groundtruth.txt, absence.label,
  cover.label, meta_info.ini}`. One short hidden stretch mid-sequence (an occluder drawn over the target):
  its first half is marked `absence 0, cover 0` (fully covered), the rest `absence 1, cover 0`; one other
  frame is partly covered (`cover 4`, still visible). Plus `_synthetic_split.txt` (see below).
- `lasot_train` (LASOT): `<class>/<class>-<n>/{img/00000001.jpg.., groundtruth.txt, full_occlusion.txt,
  out_of_view.txt}` for names of the real training split, one class after another. The hidden stretch is
  `full_occlusion` in its first half and `out_of_view` with a `0,0,0,0` box (so not valid) in the rest.
  Plus `_synthetic_split.txt` naming the sequences made.
- `trackingnet_train` (TRACKINGNET): all twelve `TRAIN_<k>/{anno,frames}` folders, sequence i in chunk
  i % 12, named after real training videos of the class map; frames from `0.jpg`; the hidden stretch has
  `0,0,0,0` boxes.
- `coco` (COCO17): `images/train2017/<image id:012d>.jpg` and `annotations/instances_train2017.json`;
  each image holds OBJECTS_PER_IMAGE objects side by side (one `render_sequence` frame per strip) plus one
  crowd annotation, which the reader drops. `num_frames` is not used (one image per sequence).

`_synthetic_split.txt` holds `<split> <entry>` lines (GOT-10k: 0-based positions in `train/list.txt`;
LaSOT: sequence names). The readers use it instead of the packaged split lists of the original when the
root holds one. For GOT-10k: `train_full` every sequence, `vottrain` all but the last, `votval` the last
(with one sequence, it is in both).

Boxes are integers and pixel-exact (the target covers columns x..x+w-1, rows y..y+h-1). Annotations, lists
and the json are written atomically (temporary file, then rename), after the frames.
"""

from __future__ import annotations

import json
import os

import numpy as np

from data_pipelines.annotation_files import format_boxes
from data_pipelines.annotation_files import write_text_atomic
from data_pipelines.synthetic import one_per_line
from data_pipelines.synthetic import render_sequence
from data_pipelines.synthetic import write_frames
from data_pipelines.training import layouts
from data_pipelines.training.datasets import TrainSequence

LAYOUTS = ("got10k_train", "lasot_train", "trackingnet_train", "coco")
READER_NAMES = {"got10k_train": "SYNTHETIC", "lasot_train": "LASOT", "trackingnet_train": "TRACKINGNET",
                "coco": "COCO17"}
OBJECTS_PER_IMAGE = 3
COCO_CATEGORIES = ({"id": 1, "name": "rectangle", "supercategory": "shape"},
                   {"id": 2, "name": "tile", "supercategory": "shape"})
GOT10K_CLASSES = ("rectangle", "tile")


def _hidden_stretch(num_frames: int) -> np.ndarray:
  """[N] bool: a stretch of max(2, N // 8) frames from the middle on (none for N < 6)."""
  hidden = np.zeros(num_frames, bool)
  if num_frames >= 6:
    start = num_frames // 2
    hidden[start:start + max(2, num_frames // 8)] = True
  return hidden


def _one_line(values: np.ndarray) -> str:
  return ",".join(str(int(v)) for v in values) + "\n"


def _sequence(dataset: str, name: str, frames: list[str], boxes: np.ndarray, visible: np.ndarray,
              object_class: str | None) -> TrainSequence:
  boxes = np.asarray(boxes, np.float32)
  valid = (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
  return TrainSequence(dataset=dataset, name=name, frames=tuple(frames), boxes=boxes, valid=valid,
                       visible=np.asarray(visible, bool) & valid, is_video=True, object_class=object_class)


def _render(rng: np.random.Generator, num_frames: int, size: tuple[int, int], hidden: np.ndarray):
  return render_sequence(rng, num_frames, size, range(0) if not hidden.any() else
                         _as_range(np.flatnonzero(hidden)))


def _as_range(frames: np.ndarray) -> range:
  return range(int(frames[0]), int(frames[-1]) + 1)


def _got10k_train(root, rngs, num_sequences, num_frames, size) -> list[TrainSequence]:
  width, height = size
  names = [f"GOT-10k_Train_{i:06d}" for i in range(1, num_sequences + 1)]
  made = []
  for i, name in enumerate(names):
    seq_dir = os.path.join(root, "train", name)
    hidden = _hidden_stretch(num_frames)
    frames, boxes = _render(rngs[i], num_frames, size, hidden)
    paths = [os.path.join(seq_dir, f"{k:08d}.jpg") for k in range(1, num_frames + 1)]
    write_frames(paths, frames)
    hidden_ids = np.flatnonzero(hidden)
    absence = np.zeros(num_frames, int)
    absence[hidden_ids[len(hidden_ids) // 2:]] = 1  # first half fully covered, the rest absent
    cover = np.where(hidden, 0, 8)
    if num_frames > 2 and not hidden[1]:
      cover[1] = 4  # partly covered: still visible
    object_class = GOT10K_CLASSES[i % len(GOT10K_CLASSES)]
    write_text_atomic(os.path.join(seq_dir, "absence.label"), one_per_line(absence))
    write_text_atomic(os.path.join(seq_dir, "cover.label"), one_per_line(cover))
    # The real files' line order (the original reads object_class from line 6 by position).
    write_text_atomic(os.path.join(seq_dir, "meta_info.ini"),
                      f"[METAINFO]\nurl: synthetic\nbegin: 00:00:00\nend: 00:00:{num_frames // 10:02d}\n"
                      f"anno_fps: 10Hz\nobject_class: {object_class}\nmotion_class: sinusoidal\n"
                      f"major_class: shape\nroot_class: object\nmotion_adverb: smoothly\n"
                      f"resolution: ({width}, {height})\n")
    write_text_atomic(os.path.join(seq_dir, "groundtruth.txt"), format_boxes(boxes))
    made.append(_sequence("SYNTHETIC", name, paths, boxes, ~hidden, object_class))
  write_text_atomic(os.path.join(root, "train", "list.txt"), "".join(f"{n}\n" for n in names))
  last = num_sequences - 1
  splits = {"train_full": range(num_sequences), "vottrain": range(max(last, 1)), "votval": [last]}
  write_text_atomic(os.path.join(root, layouts.SYNTHETIC_SPLIT),
                    "# <split> <0-based position in train/list.txt>; replaces the GOT-10k split lists\n"
                    + "".join(f"{split} {i}\n" for split, ids in splits.items() for i in ids))
  return made


def _lasot_names(num_sequences: int) -> list[str]:
  """Names of the real training split, taking one per class in turn."""
  by_class: dict[str, list[str]] = {}
  for name in layouts.packaged_split("lasot_train_split.txt"):
    by_class.setdefault(name.split("-")[0], []).append(name)
  names, turn = [], 0
  while len(names) < num_sequences:
    row = [members[turn] for members in by_class.values() if turn < len(members)]
    if not row:
      raise ValueError(f"the LaSOT training split has fewer than {num_sequences} sequences")
    names.extend(row[:num_sequences - len(names)])
    turn += 1
  return names


def _lasot_train(root, rngs, num_sequences, num_frames, size) -> list[TrainSequence]:
  made = []
  names = _lasot_names(num_sequences)
  for i, name in enumerate(names):
    class_name = name.split("-")[0]
    seq_dir = os.path.join(root, class_name, name)
    hidden = _hidden_stretch(num_frames)
    frames, boxes = _render(rngs[i], num_frames, size, hidden)
    paths = [os.path.join(seq_dir, "img", f"{k:08d}.jpg") for k in range(1, num_frames + 1)]
    write_frames(paths, frames)
    hidden_ids = np.flatnonzero(hidden)
    occlusion = np.zeros(num_frames, int)
    out_of_view = np.zeros(num_frames, int)
    occlusion[hidden_ids[:len(hidden_ids) // 2]] = 1
    out_of_view[hidden_ids[len(hidden_ids) // 2:]] = 1
    boxes[out_of_view == 1] = 0  # no box while out of view: not valid
    write_text_atomic(os.path.join(seq_dir, "full_occlusion.txt"), _one_line(occlusion))
    write_text_atomic(os.path.join(seq_dir, "out_of_view.txt"), _one_line(out_of_view))
    write_text_atomic(os.path.join(seq_dir, "groundtruth.txt"), format_boxes(boxes))
    made.append(_sequence("LASOT", name, paths, boxes, ~hidden, class_name))
  write_text_atomic(os.path.join(root, layouts.SYNTHETIC_SPLIT),
                    "# <split> <sequence name>; replaces lasot_train_split.txt\n"
                    + "".join(f"train {n}\n" for n in names))
  return made


def _trackingnet_train(root, rngs, num_sequences, num_frames, size) -> list[TrainSequence]:
  classes = layouts.trackingnet_classes()
  known = list(classes)
  step = max(len(known) // num_sequences, 1)
  names = [known[(i * step) % len(known)] for i in range(num_sequences)]
  for k in layouts.TRACKINGNET_CHUNKS:  # the reader needs all twelve chunks
    os.makedirs(os.path.join(root, f"TRAIN_{k}", "anno"), exist_ok=True)
    os.makedirs(os.path.join(root, f"TRAIN_{k}", "frames"), exist_ok=True)
  made = []
  for i, name in enumerate(names):
    chunk = layouts.TRACKINGNET_CHUNKS[i % len(layouts.TRACKINGNET_CHUNKS)]
    hidden = _hidden_stretch(num_frames)
    frames, boxes = _render(rngs[i], num_frames, size, hidden)
    paths = [os.path.join(root, f"TRAIN_{chunk}", "frames", name, f"{k}.jpg") for k in range(num_frames)]
    write_frames(paths, frames)
    boxes[hidden] = 0  # target gone: no box
    write_text_atomic(os.path.join(root, f"TRAIN_{chunk}", "anno", f"{name}.txt"), format_boxes(boxes))
    made.append((chunk, name, _sequence("TRACKINGNET", name, paths, boxes, ~hidden, classes.get(name))))
  return [seq for _, _, seq in sorted(made, key=lambda m: m[:2])]  # the reader's order


def _coco(root, rngs, num_sequences, size) -> list[TrainSequence]:
  width, height = size
  strip = width // OBJECTS_PER_IMAGE
  image_dir = os.path.join(root, "images", "train2017")
  images, annotations, made = [], [], []
  for i in range(num_sequences):
    image_id = 1000 + i
    file_name = f"{image_id:012d}.jpg"
    canvas = np.zeros((height, width, 3), np.uint8)
    boxes = []
    for j in range(OBJECTS_PER_IMAGE):
      frames, strip_boxes = render_sequence(rngs[i], 1, (strip, height))
      canvas[:, j * strip:(j + 1) * strip] = frames[0]
      x, y, w, h = strip_boxes[0]
      boxes.append([x + j * strip, y, w, h])
    canvas[:, OBJECTS_PER_IMAGE * strip:] = canvas[:, OBJECTS_PER_IMAGE * strip - 1:OBJECTS_PER_IMAGE * strip]
    path = os.path.join(image_dir, file_name)
    write_frames([path], [canvas])
    images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
    for j, box in enumerate(boxes):
      category = COCO_CATEGORIES[(i + j) % len(COCO_CATEGORIES)]
      x, y, w, h = (float(v) for v in box)
      annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category["id"],
                          "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0,
                          "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]})
      boxes32 = np.array([[x, y, w, h]], np.float32)
      valid = (boxes32[:, 2] > layouts.COCO_MIN_VALID_SIZE) & (boxes32[:, 3] > layouts.COCO_MIN_VALID_SIZE)
      made.append(TrainSequence("COCO17", str(annotations[-1]["id"]), (path,), boxes32, valid, valid.copy(),
                                False, category["name"]))
    x, y, w, h = (float(v) for v in boxes[0])  # a crowd region over the first object: never a sequence
    annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                        "bbox": [x, y, w, h], "area": w * h, "iscrowd": 1,
                        "segmentation": {"counts": [0, int(w * h)], "size": [height, width]}})
  write_text_atomic(os.path.join(root, "annotations", "instances_train2017.json"),
                    json.dumps({"info": {"description": "synthetic"}, "images": images,
                                "annotations": annotations, "categories": list(COCO_CATEGORIES)}))
  return made


def make_synthetic_train_dataset(layout: str, root: str, num_sequences: int = 4, num_frames: int = 30,
                                 size: tuple[int, int] = (160, 120), seed: int = 0) -> list[TrainSequence]:
  """Writes `num_sequences` sequences of `num_frames` frames of `size` (width, height) pixels in `layout`'s
  training layout under `root`; returns what the reader named READER_NAMES[layout] should read back, in
  its order (frame paths absolute). For `coco`: `num_sequences` images, OBJECTS_PER_IMAGE sequences each."""
  if layout not in LAYOUTS:
    raise ValueError(f"unknown layout {layout!r}; one of {', '.join(LAYOUTS)}")
  if num_sequences < 1 or num_frames < 2:
    raise ValueError(f"need num_sequences >= 1 and num_frames >= 2, got {num_sequences}, {num_frames}")
  width, height = size
  min_width = 16 * OBJECTS_PER_IMAGE if layout == "coco" else 16
  if width < min_width or height < 16:
    raise ValueError(f"frame size {width}x{height} is too small for {layout} ({min_width}x16 at least)")
  root = os.path.abspath(root)
  os.makedirs(root, exist_ok=True)
  rngs = [np.random.default_rng([seed, LAYOUTS.index(layout), i]) for i in range(num_sequences)]
  if layout == "got10k_train":
    made = _got10k_train(root, rngs, num_sequences, num_frames, size)
  elif layout == "lasot_train":
    made = _lasot_train(root, rngs, num_sequences, num_frames, size)
  elif layout == "trackingnet_train":
    made = _trackingnet_train(root, rngs, num_sequences, num_frames, size)
  else:
    made = _coco(root, rngs, num_sequences, size)
  print(f"wrote {len(made)} synthetic {layout} sequences under {root}", flush=True)
  return made
