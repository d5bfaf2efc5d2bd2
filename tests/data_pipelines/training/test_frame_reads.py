"""An example's frames are read concurrently only where each read waits on remote storage."""

import threading
import types

import cv2
import numpy as np

from data_pipelines.training import pipeline


class _Frame:
  """A frame reference (as `packed.PackedFrame`) in a set under `data_dir`; records the reading thread."""

  def __init__(self, data_dir: str, image: np.ndarray):
    self.source = types.SimpleNamespace(data_dir=data_dir)
    self.name = f"{data_dir} frame"
    self._encoded = cv2.imencode(".png", image)[1].tobytes()
    self.thread = None

  def read_bytes(self) -> bytes:
    self.thread = threading.current_thread().name
    return self._encoded


def _frames(data_dir: str) -> list[_Frame]:
  rng = np.random.default_rng(0)
  return [_Frame(data_dir, rng.integers(0, 255, (8, 6, 3), np.uint8)) for _ in range(3)]


def test_bucket_frames_are_read_by_the_pool_and_local_ones_in_the_calling_thread(tmp_path):
  remote, local = _frames("gs://bucket/tfds"), _frames(str(tmp_path))
  got_remote, got_local = pipeline.read_images(remote), pipeline.read_images(local)
  caller = threading.current_thread().name
  assert all(f.thread.startswith("frame_read") for f in remote), [f.thread for f in remote]
  assert all(f.thread == caller for f in local), [f.thread for f in local]
  # Both ways give each frame's own pixels, in order.
  for frames, got in ((remote, got_remote), (local, got_local)):
    for frame, image in zip(frames, got):
      assert np.array_equal(image, cv2.cvtColor(cv2.imdecode(np.frombuffer(frame._encoded, np.uint8),
                                                             cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB))


def test_paths_with_a_scheme_count_as_remote(tmp_path):
  assert pipeline._on_remote_storage("gs://b/x.jpg")  # pylint: disable=protected-access
  assert not pipeline._on_remote_storage(str(tmp_path / "x.jpg"))  # pylint: disable=protected-access
