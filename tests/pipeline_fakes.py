"""Small picklable stand-ins for pipeline tests (grain workers import this module by name)."""

import dataclasses

import cv2
import numpy as np


@dataclasses.dataclass
class FakeSequence:
  name: str
  frames: tuple
  boxes: np.ndarray
  visible: np.ndarray
  is_video: bool = True


@dataclasses.dataclass
class FakeDataset:
  name: str
  seqs: list

  def __len__(self):
    return len(self.seqs)

  def sequence(self, index):
    return self.seqs[index]


def make_video_dataset(root, num_sequences=3, num_frames=24, corrupt=()):
  """Frames whose pixel value encodes (sequence, frame); `corrupt` lists (seq, frame) written as garbage."""
  seqs = []
  for s in range(num_sequences):
    frames = []
    for f in range(num_frames):
      path = f"{root}/s{s}_{f:03d}.png"
      if (s, f) in corrupt:
        with open(path, "wb") as fh:
          fh.write(b"not an image")
      else:
        cv2.imwrite(path, np.full((24, 32, 3), (s * 50 + f) % 256, np.uint8))
      frames.append(path)
    boxes = np.tile(np.array([[4, 4, 10, 8]], np.float32), (num_frames, 1))
    seqs.append(FakeSequence(f"s{s}", tuple(frames), boxes, np.ones(num_frames, bool)))
  return FakeDataset("fake", seqs)


def process(templates, template_boxes, search, search_box, rng):
  """Keeps one pixel of each frame (it identifies the frame) and a random draw (it identifies the rng)."""
  return {"templates": np.array([t[0, 0, 0] for t in templates], np.int32),
          "search": np.int32(search[0, 0, 0]), "draw": np.float32(rng.random()), "valid": True}


def take(it, n):
  """The next `n` batches of an iterator."""
  return [next(it) for _ in range(n)]


def assert_batches_equal(a, b):
  """Two lists of batches hold the same keys and identical arrays."""
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


class RecordReads:
  """Counts the packed sets' record reads: `record` calls, and `records` calls with their indices."""

  def __init__(self, monkeypatch):
    # Here, not at the top: grain workers import this module, and need not import tfds.
    from data_pipelines.training import packed  # pylint: disable=g-import-not-at-top
    self.single, self.together = 0, []
    record, records = packed._RecordSource.record, packed._RecordSource.records  # pylint: disable=protected-access

    def counted_record(source, index):
      self.single += 1
      return record(source, index)

    def counted_records(source, indices):
      self.together.append(list(indices))
      return records(source, indices)

    monkeypatch.setattr(packed._RecordSource, "record", counted_record)  # pylint: disable=protected-access
    monkeypatch.setattr(packed._RecordSource, "records", counted_records)  # pylint: disable=protected-access


def assert_records_parse_as_tfds_parses_them(source):
  """Every record of `source` (a packed or pre-cropped set's `packed._RecordSource`), read through its own
  parser one by one and several at once, equals what tfds' `data_source` gives for it, types included."""
  # Here, not at the top: grain workers import this module, and tfds would slow every worker's start.
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from data_pipelines.training import packed  # pylint: disable=g-import-not-at-top
  reference = tfds.data_source(f"{source.builder}/{packed.config_name(source.name)}:{source.version}",
                               split=packed.SPLIT, data_dir=source.data_dir, download=False)
  assert packed.ExampleParser.supports(reference.dataset_info.features)
  indices = list(range(len(reference)))[::-1]
  pairs = list(zip(indices, source.records(indices))) + [(0, source.record(0))]
  assert source._parse is not None  # pylint: disable=protected-access  # the records above were ours
  for index, ours in pairs:
    theirs = reference[index]
    assert ours.keys() == theirs.keys(), index
    for key, value in theirs.items():
      assert type(ours[key]) is type(value), (index, key, type(ours[key]), type(value))
      if isinstance(value, np.ndarray):
        assert ours[key].dtype == value.dtype and ours[key].shape == value.shape, (index, key)
      np.testing.assert_array_equal(ours[key], value, err_msg=f"record {index} {key}")
