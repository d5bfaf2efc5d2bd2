"""The jitted tracker: template sampling table, crops, batched == sequential, parity with the original."""

import os
import tempfile

import jax
import numpy as np
import pytest

from fartrack_jax import convert
from fartrack_jax import model as model_lib
from data_pipelines import crops as crop_lib
from data_pipelines import synthetic
from fartrack_jax.tracking import loop
from fartrack_jax.tracking import sampling
from fartrack_jax.tracking import tracker as trk
from scripts.benchmarks import serial_tracking
from tests.conftest import init, load_config


def test_selection_table_follows_mode1_then_exponential_sampling():
  table = sampling.selection_table(200, 5)
  # Fewer than 5 stored templates: the oldest repeats in the first slots ("mode1").
  assert table[1].tolist() == [0, 0, 0, 0, 0]
  assert table[2].tolist() == [0, 0, 0, 0, 1]
  assert table[3].tolist() == [0, 0, 0, 1, 2]
  assert table[4].tolist() == [0, 0, 1, 2, 3]
  # Then [0, int((S-1)(1-0.7)), int((S-1)(1-0.49)), int((S-1)(1-0.343)), S-1], in float64: with S-1 = 100,
  # 1 - 0.7**2 is 0.51000000000000001 in float64 (51) but 0.50999999 in float32 (50).
  assert table[5].tolist() == [0, 1, 2, 2, 4]
  assert table[101].tolist() == [0, 30, 51, 65, 100]


def test_sample_target_centres_the_box_and_pads_like_the_original():
  image = np.zeros((50, 60, 3), np.uint8)
  image[:, :, 0] = np.arange(60)[None, :]  # red channel = column index
  crop, factor = crop_lib.sample_target(image, [20, 10, 10, 10], 2.0, 20)
  assert factor == 1.0  # side ceil(sqrt(100) * 2) = 20, output 20
  # x1 = round(20 + 5 - 10) = 15: the crop's first column is image column 15.
  assert crop[0, 0, 0] == 15 and crop[0, 19, 0] == 34
  # A crop past the right edge: the original pads x2 - W + 1 columns, dropping the image's last column.
  crop, _ = crop_lib.sample_target(image, [50, 20, 10, 10], 2.0, 20)
  # x1 = 45, x2 = 65 -> pad 6 on the right: columns 45..58 of the image, then 6 zero columns.
  assert crop[0, :14, 0].tolist() == list(range(45, 59))
  assert crop[0, 14:, 0].tolist() == [0] * 6
  with pytest.raises(ValueError, match="too small"):
    crop_lib.sample_target(image, [1, 1, 0, 0], 2.0, 20)


def test_clip_box_keeps_a_margin_inside_the_image():
  assert crop_lib.clip_box([-5, 90, 20, 30], 100, 200, margin=10) == [0, 90, 15, 10]


def _smoke_tracker(batch, capacity=32, seed=0):
  config = load_config("fartrack_sparse")
  _, params = init(config, seed)
  return config, params, trk.BatchTracker(config, params, batch=batch, capacity=capacity)


def _sequences(n, lengths):
  out = []
  for i, length in enumerate(lengths):
    frames, boxes = synthetic.render_sequence(np.random.default_rng(10 + i), length, (96, 72))
    out.append((f"seq{i}", list(frames), boxes[0]))
  return out


def test_batched_evaluation_equals_one_sequence_at_a_time():
  # Three sequences of different lengths through 2 slots (a slot is refilled when its sequence ends) give
  # exactly the boxes of each sequence tracked alone through the same compiled batch-2 step.
  seqs = _sequences(3, [9, 4, 7])
  config, params, tracker = _smoke_tracker(batch=2)
  together = loop.track_sequences(tracker, seqs)
  alone = {}
  for seq in seqs:
    alone.update(loop.track_sequences(tracker, [seq]))
  assert together.keys() == alone.keys() == {"seq0", "seq1", "seq2"}
  for (key, frames, _) in seqs:
    assert together[key][0].shape == (len(frames), 4)
    np.testing.assert_array_equal(together[key][0], alone[key][0], err_msg=key)
  # A batch-1 step is a different XLA program: the same boxes up to float32 rounding.
  single = loop.track_sequences(trk.BatchTracker(config, params, batch=1, capacity=32), seqs)
  for key in single:
    np.testing.assert_allclose(single[key][0], together[key][0], atol=1e-3)


def test_tracking_is_deterministic_and_uses_the_memory():
  seqs = _sequences(1, [8])
  _, params, tracker = _smoke_tracker(batch=1)
  a = loop.track_sequences(tracker, seqs)["seq0"][0]
  b = loop.track_sequences(tracker, seqs)["seq0"][0]  # the slot is restarted: same boxes again
  np.testing.assert_array_equal(a, b)
  assert int(np.asarray(tracker.memory.count)[0]) == 7  # templates of frames 0..6 stored
  np.testing.assert_array_equal(a[0], seqs[0][2])


def test_memory_overflow_is_refused():
  _, _, tracker = _smoke_tracker(batch=1, capacity=3)
  with pytest.raises(ValueError, match="memory full"):
    loop.track_sequences(tracker, _sequences(1, [6]))


@pytest.mark.slow
def test_step_jit_equals_eager():
  config, params, tracker = _smoke_tracker(batch=1)
  s = tracker.tc
  rng = np.random.default_rng(0)
  search = rng.integers(0, 256, (1, s.search_size, s.search_size, 3), dtype=np.uint8)
  template = rng.integers(0, 256, (1, s.template_size, s.template_size, 3), dtype=np.uint8)
  args = (search, template, np.array([True]), np.array([0.5], np.float32))
  tracker.start({0: template[0]})
  with jax.disable_jit():
    _, eager_box, eager_masks = tracker._step_impl(params, tracker.memory, *args)  # pylint: disable=protected-access
  jitted_box, jitted_masks = tracker.step(*args)
  np.testing.assert_allclose(jitted_box, np.asarray(eager_box), rtol=1e-5, atol=1e-4)  # fp32 crop pixels
  np.testing.assert_array_equal(jitted_masks, np.asarray(eager_masks))


_REPO = os.environ.get("FARTRACK_TORCH_REPO")


@pytest.mark.skipif(not _REPO, reason="set FARTRACK_TORCH_REPO to a checkout of the original FARTrack code "
                    "(plus torch, timm --no-deps, easydict, pyyaml, einops, matplotlib, jpeg4py)")
@pytest.mark.parametrize("stage", ["fartrack", "fartrack_distill", "fartrack_sparse"])
def test_tracker_parity_with_the_original_on_a_synthetic_sequence(stage):
  from fartrack_jax import parity, torch_io  # pylint: disable=g-import-not-at-top
  config = load_config(stage, "variant=tiny")
  frames, boxes = synthetic.render_sequence(np.random.default_rng(1), 12, (160, 120))
  net = parity.load_original(_REPO, config, seed=0)
  with tempfile.TemporaryDirectory() as tmp:
    checkpoint = os.path.join(tmp, "random.pth.tar")
    torch_io.save_state_dict(checkpoint, {k: v.numpy() for k, v in net.state_dict().items()})
    theirs = parity.run_original_tracker(_REPO, config, checkpoint, list(frames), boxes[0])
    _, sd = torch_io.load_state_dict(checkpoint)
  spec = model_lib.ModelSpec.from_config(config)
  params, _ = convert.torch_to_flax(sd, spec, model_lib.init_params(model_lib.build_model(config),
                                                                    jax.random.key(0)))
  ours = loop.track_sequences(trk.BatchTracker(config, params, batch=1, capacity=16),
                             [("s", list(frames), boxes[0])])["s"][0]
  # Float32 logits agree to ~1e-5; boxes in pixels to ~1e-4.
  np.testing.assert_allclose(ours, theirs, atol=1e-3)


def _jpeg_sequences(root, lengths, size=(96, 72)):
  """Synthetic sequences written as JPEG files: the pipelined loop reads them in its worker threads."""
  import cv2  # pylint: disable=g-import-not-at-top
  out = []
  for i, length in enumerate(lengths):
    frames, boxes = synthetic.render_sequence(np.random.default_rng(20 + i), length, size)
    paths = []
    for t, frame in enumerate(frames):
      path = os.path.join(root, f"seq{i}", f"{t:04d}.jpg")
      os.makedirs(os.path.dirname(path), exist_ok=True)
      assert cv2.imwrite(path, frame)
      paths.append(path)
    out.append((f"seq{i}", paths, boxes[0]))
  return out


@pytest.mark.parametrize("batch,threads", [(1, 1), (2, 3)])
def test_pipelined_loop_gives_the_serial_loops_boxes(tmp_path, batch, threads):
  # Sequences of 9, 4, 1, 7 and 5 frames: with 2 slots, slots are refilled mid-run, and the 1-frame
  # sequence ends at its refill. Same compiled step, same crops: the boxes must be equal, not close.
  seqs = _jpeg_sequences(str(tmp_path), [9, 4, 1, 7, 5])
  _, _, tracker = _smoke_tracker(batch=batch)
  serial_order, pipelined_order = [], []
  serial = serial_tracking.track_sequences_serial(tracker, seqs, progress=lambda key, n: serial_order.append(key))
  log = []
  pipelined = loop.track_sequences(tracker, seqs, threads=threads, prefetch=3, step_log=log,
                                  progress=lambda key, n: pipelined_order.append(key))
  assert pipelined.keys() == serial.keys() == {f"seq{i}" for i in range(5)}
  assert pipelined_order == serial_order  # sequences are handed out in the same (completion) order
  for key, paths, init_box in seqs:
    assert pipelined[key][0].shape == (len(paths), 4) and pipelined[key][1].shape == (len(paths),)
    np.testing.assert_array_equal(pipelined[key][0][0], init_box)
    np.testing.assert_array_equal(pipelined[key][0], serial[key][0], err_msg=key)
  # One step per tracked frame of the longest chain of slots, each one's result after its dispatch.
  assert all(ready >= dispatched for dispatched, ready in log)
  assert len(log) == (21 if batch == 1 else 12)


def test_an_unreadable_frame_in_a_worker_names_the_file_and_keeps_finished_sequences(tmp_path):
  # The network is a stand-in, so this checks the loop alone: seq2's 4th frame is not an image; seq0 and
  # seq1 end before it is needed and must be handed out; the error names the file; no thread is left.
  import threading  # pylint: disable=g-import-not-at-top
  seqs = _jpeg_sequences(str(tmp_path), [3, 2, 6, 4], size=(64, 48))
  bad = seqs[2][1][3]
  with open(bad, "wb") as f:
    f.write(b"not a jpeg")
  config = load_config("fartrack_sparse")
  done = []
  with pytest.raises(FileNotFoundError, match=f"cannot read image {bad}"):
    loop.track_sequences(serial_tracking.StandInTracker(config, batch=2), seqs, threads=2,
                        on_done=lambda key, boxes, times: done.append((key, len(boxes))))
  assert done == [("seq1", 2), ("seq0", 3)]
  assert not [t for t in threading.enumerate() if t.name.startswith("track")]


def test_stand_in_tracker_keeps_the_box_in_place():
  # The host-only benchmark's stand-in answers the previous box's centre with its area as a square: after
  # mapping back, the centre stays (to float rounding) and the side is the crop side / search factor.
  config = load_config("fartrack_sparse")
  seqs = _sequences(1, [5])
  boxes = loop.track_sequences(serial_tracking.StandInTracker(config, batch=1), seqs, threads=1)["seq0"][0]
  x, y, w, h = seqs[0][2]
  side = np.ceil(np.sqrt(w * h) * config.test.search_factor) / config.test.search_factor
  np.testing.assert_allclose(boxes[1:, 0] + boxes[1:, 2] / 2, x + w / 2, atol=1e-3)
  np.testing.assert_allclose(boxes[1, 2:], [side, side], atol=1e-3)


@pytest.mark.slow
def test_host_template_store_gives_the_device_memorys_boxes():
  # Five templates (the real trackers' count), so the exponential selection and the store's pruning both
  # act: sequences of 30, 6, 1 and 24 frames through 2 slots. The network sees the same uint8 templates
  # and masks either way; the compiled programs differ only in where the gather happens, so the boxes
  # must be equal, not close.
  config = load_config("fartrack_sparse")
  config.data.template.number = 5
  _, params = init(config, 0)
  device = trk.BatchTracker(config, params, batch=2, capacity=32)
  host = trk.BatchTracker(config, params, batch=2, capacity=1, template_store="host")  # no capacity limit
  seqs = _sequences(4, [30, 6, 1, 24])
  expected = serial_tracking.track_sequences_serial(device, seqs)
  got = loop.track_sequences(host, seqs, threads=2)
  assert got.keys() == expected.keys()
  for key in expected:
    np.testing.assert_array_equal(got[key][0], expected[key][0], err_msg=key)
  # The last sequences in the slots stored 29 and 23 templates; kept are 0 and those from
  # int((count - 1) * 0.3) on, which a later selection could still pick.
  stores = sorted((s.count, sorted(s.templates)) for s in host._stores)  # pylint: disable=protected-access
  assert stores == [(23, [0] + list(range(6, 23))), (29, [0] + list(range(8, 29)))]
  assert host.device_bytes_per_slot() == 5 * (32 * 32 * 3 + 4)
  assert device.device_bytes_per_slot() == 32 * (32 * 32 * 3 + 4) + 4 + 4
