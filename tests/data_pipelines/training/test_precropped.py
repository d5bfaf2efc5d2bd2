"""Pre-cropped training frames (`precropped.py`): the fast data path makes the exact path's examples on the
same draws (frames, box labels, tokens, checks, skip counters equal; pixels close), its crops land where the
full-frame crops land, it works with grain workers, sharding and iterator state, and a missing or stale set
is one clear error."""

import dataclasses
import importlib
import math
import os
import subprocess
import sys

from absl import flags
import cv2
import numpy as np
import pytest

from data_pipelines import crops
from data_pipelines.training import build
from data_pipelines.training import pipeline
from data_pipelines.training import precropped
from data_pipelines.training import processing
from data_pipelines.training import synthetic_train
from data_pipelines.training.datasets import DatasetError
from fartrack_jax import config_lib
from tests.conftest import ROOT
from tests import pipeline_fakes

NAME = "SYNTHETIC"


def _smoke_config():
  return importlib.import_module("configs.fartrack").get_config("variant=smoke")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  """(config, native datasets, pre-cropped datasets, root, tfds data_dir) of a 3-sequence synthetic root
  with one corrupt frame, cut for the smoke crops."""
  root = str(tmp_path_factory.mktemp("synthetic"))
  made = synthetic_train.make_synthetic_train_dataset("got10k_train", root, num_sequences=3, num_frames=24,
                                                      size=(160, 120))
  with open(made[0].frames[3], "wb") as f:  # a frame that cannot be decoded: skipped on both paths
    f.write(b"not an image")
  config = _smoke_config()
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  crops = processing.FrameProcessing.from_config(config)
  precropped.pack_precropped_dataset(NAME, root, data_dir, crops)
  native = build.train_datasets_from_config(config, {"synthetic": root})
  fast = precropped.open_precropped_datasets([NAME], data_dir, crops)
  return config, native, fast, root, data_dir


def test_fast_examples_have_the_exact_paths_draws_labels_checks_and_skips(built):
  config, native, fast, _, _ = built
  exact_examples = build.frame_examples_from_config(config, native, seed=5)
  fast_examples = build.frame_examples_from_config(config, fast, seed=5)
  report = precropped.compare_examples(exact_examples, fast_examples, range(48), config.data.std)
  assert report["token_mismatches"] == 0 and report["skip_mismatches"] == 0
  assert report["search_box_max_abs"] == 0  # the labels are box arithmetic, which the windows do not touch
  skips = sum(int(exact_examples(i)["skips"].sum()) for i in range(48))
  assert skips > 0  # the corrupt frame and rejected crops were met, and skipped alike
  # Pixels: resampled twice and re-encoded, on a noise texture (the worst case for resampling: ~7.5 and ~3.5
  # levels measured); `test_window_crops_land_where_full_frame_crops_land` pins the geometry.
  assert report["template_mean_abs"] < 10 and report["search_mean_abs"] < 10, report
  assert report["crops"] > 0 and report["uncovered_crops"] <= report["crops"] // 20


def test_records_parse_as_tfds_parses_them(built):
  _, _, fast, _, _ = built
  pipeline_fakes.assert_records_parse_as_tfds_parses_them(fast[0].sequence(0).frames[0].source)


def test_on_a_bucket_an_examples_crops_are_read_in_one_call_and_give_the_same_examples(built, monkeypatch):
  config, _, fast, _, _ = built
  local = pipeline_fakes.RecordReads(monkeypatch)
  expected = [build.frame_examples_from_config(config, fast, seed=5)(i) for i in range(8)]
  assert local.together == [] and local.single >= 8 * 2
  monkeypatch.setattr(pipeline, "_on_remote_storage", lambda frame: True)  # as for a data_dir on gs://
  remote = pipeline_fakes.RecordReads(monkeypatch)
  got = [build.frame_examples_from_config(config, fast, seed=5)(i) for i in range(8)]
  # One call per drawn example (a redraw after a skip is another example drawn), its frames together.
  assert remote.single == 0 and len(remote.together) >= 8, (remote.single, remote.together)
  assert all(len(indices) >= 2 for indices in remote.together), remote.together
  pipeline_fakes.assert_batches_equal(expected, got)


def test_a_frame_reads_only_the_record_its_crops_need(built, monkeypatch):
  config, _, fast, _, _ = built
  monkeypatch.setattr(pipeline, "_on_remote_storage", lambda frame: True)  # every example's reads in one call
  reads = pipeline_fakes.RecordReads(monkeypatch)
  draws = []
  sample_frames = pipeline.sampler.sample_frames

  def recorded(*args, **kwargs):
    pick, seq = sample_frames(*args, **kwargs)
    draws.append(pick)
    return pick, seq

  monkeypatch.setattr(pipeline.sampler, "sample_frames", recorded)
  examples = build.frame_examples_from_config(config, fast, seed=7)
  narrowed = [examples(i) for i in range(12)]
  assert len(reads.together) == len(draws) >= 12
  templates_only = 0
  for pick, indices in zip(draws, reads.together):
    source = fast[pick.dataset].sequence(pick.sequence)
    want = []
    for i in sorted(set(pick.template_ids + pick.search_ids)):
      # Record 2k holds frame k's template windows, record 2k + 1 all its windows.
      want.append(source.frames[i].record + (i in pick.search_ids))
      templates_only += i not in pick.search_ids
    assert indices == want, (pick, indices)
  assert templates_only >= 12  # most frames were read as templates alone
  # Reading all windows of every frame (as the format before did) gives the same examples to the bit.
  monkeypatch.setattr(pipeline, "for_crops", lambda frame, kinds: frame)
  pipeline_fakes.assert_batches_equal(narrowed, [examples(i) for i in range(12)])


def test_each_frame_has_a_small_template_record_then_a_record_of_all_its_windows(built):
  _, _, fast, _, _ = built
  seq = fast[0].sequence(1)
  records = seq.frames[0].source.records(range(seq.frames[0].record, seq.frames[0].record + 2 * len(seq.frames)))
  template_bytes = all_bytes = 0
  for k, frame in enumerate(seq.frames):
    template, everything = records[2 * k], records[2 * k + 1]
    assert frame.record % 2 == 0 and frame.record_index == frame.record + 1  # all kinds: the second
    assert frame.for_crops(["template"]).record_index == frame.record
    assert [(r["sequence"], r["frame"], r["part"]) for r in (template, everything)] == [(1, k, 0), (1, k, 1)]
    small = precropped.decode_windows(template["windows"], ["template"])
    full = precropped.decode_windows(everything["windows"])
    assert len(small["template"]) == 1 and len(full["search"]) >= 2  # the smoke template is not jittered
    assert [bytes(w.jpeg) for w in small["template"]] == [bytes(w.jpeg) for w in full["template"]]
    template_bytes += len(template["windows"])
    all_bytes += len(everything["windows"])
  assert template_bytes * 4 < all_bytes
  read = seq.frames[5].for_crops(["template"]).read_frame()
  assert list(read.windows) == ["template"]
  with pytest.raises(ValueError, match=r"a search crop asked of a frame read for template crops only"):
    read.sample_target(seq.boxes[5], 4.0, 64, "search")
  with pytest.raises(ValueError, match=r"crop kinds must be"):
    seq.frames[5].for_crops(["mask"])
  # One record early, the frame's second record is its template record: refused.
  shifted = dataclasses.replace(seq.frames[5], record=seq.frames[5].record - 1)
  with pytest.raises(DatasetError, match=r"record \d+ is part 0 of its frame, the layout says part 1"):
    shifted.read_frame()


def _wave_frame(height=360, width=480):
  """A smooth colour pattern (periods 40-70 px): a crop half a pixel off differs from the right one by ~4."""
  y, x = np.mgrid[0:height, 0:width].astype(np.float64)
  channels = [np.sin(x / 7.0) * np.cos(y / 9.0), np.sin((x + y) / 11.0), np.cos(x / 10.0 - y / 6.0)]
  return np.clip(np.stack(channels, axis=2) * 100 + 128, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("mirrored", [False, True])
@pytest.mark.parametrize("grayscale", [False, True])
def test_window_crops_land_where_full_frame_crops_land(mirrored, grayscale):
  rgb = _wave_frame()
  box = np.array([200.0, 150.0, 60.0, 44.0])
  template = processing.CropSpec(2.0, 112, 0.0, 0.0)
  search = processing.CropSpec(4.0, 224, 3.5, 0.5)
  blob = precropped.encode_windows(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), box, precropped.window_specs(template,
                                                                                                    search))
  frame = precropped.PrecroppedFrame(*rgb.shape[:2], precropped.decode_windows(blob))
  full = rgb
  if grayscale:
    frame, full = frame.to_grayscale(), processing.to_grayscale(full)
  if mirrored:
    frame, full = frame.mirror(), np.ascontiguousarray(full[:, ::-1])
  rng = np.random.default_rng(0)
  flipped_box = processing.flip_box(box, mirrored, rgb.shape[1] - 1)
  boxes = [(flipped_box, 2.0, 112, "template")] + [
      (processing.jitter_box(flipped_box, rng, 3.5, 0.5), 4.0, 224, "search") for _ in range(12)]
  for jittered, factor, size, kind in boxes:
    want, want_factor = crops.sample_target(full, jittered, factor, size)
    got, got_factor = frame.sample_target(jittered, factor, size, kind)
    assert got.shape == want.shape and got.dtype == np.uint8 and got_factor == want_factor
    diff = np.abs(got.astype(np.int32) - want)[2:-2, 2:-2]  # the outer rows: the original's border quirk
    # JPEG at quality 95, two resamplings of a smooth pattern: ~1 level; a half-pixel shift gives ~4.
    assert diff.mean() < 2.0, (jittered, factor, diff.mean())


def test_template_crops_decode_only_the_small_template_window():
  rgb = _wave_frame()
  box = np.array([200.0, 150.0, 60.0, 44.0])
  specs = precropped.window_specs(processing.CropSpec(2.0, 112, 0.0, 0.0), processing.CropSpec(4.0, 224, 3.5, 0.5))
  assert len(specs["template"]) == 1 and len(specs["search"]) == len(precropped.LEVELS)
  frame = precropped.PrecroppedFrame(*rgb.shape[:2], precropped.decode_windows(precropped.encode_windows(rgb, box,
                                                                                                       specs)))
  frame.sample_target(box, 2.0, 112, "template")
  (key,) = frame._decoded
  window = frame.windows[key[0]][key[1]]
  assert key == ("template", 0)
  side = math.ceil(math.sqrt(60 * 44) * 2)
  assert window.stored_width <= 112 * (side + 2 * precropped.MARGIN + 2) / side  # about the template size


def test_normalisation_table_equals_the_elementwise_path_to_the_bit():
  image = np.random.default_rng(1).integers(0, 256, (40, 56, 3), dtype=np.uint8)
  mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
  for brightness in (0.8, 0.93, 1.0, 1.2):
    want = processing.normalize(processing.to_unit_range(image, brightness), mean, std)
    got = processing.normalized_unit_range(image, brightness, mean, std)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


@pytest.mark.slow
def test_grain_batches_same_for_workers_shards_and_resume(built, monkeypatch):
  config, _, fast, _, _ = built
  examples = build.frame_examples_from_config(config, fast, seed=2)
  serial = pipeline_fakes.take(iter(pipeline.frame_dataset(examples, 2)), 3)
  # Per-host shards: host h's batches hold indices h, h + 2, ...
  for host in (0, 1):
    (batch,) = pipeline_fakes.take(iter(pipeline.frame_dataset(examples, 2, shard_index=host, shard_count=2)), 1)
    for row, index in enumerate((host, host + 2)):
      np.testing.assert_array_equal(batch["search"][row], examples(index)["search"])
  it = iter(pipeline.frame_dataset(examples, 2))
  next(it)
  state = it.get_state()
  resumed = iter(pipeline.frame_dataset(examples, 2))
  resumed.set_state(state)
  pipeline_fakes.assert_batches_equal(pipeline_fakes.take(resumed, 2), serial[1:])
  monkeypatch.setenv("PYTHONPATH", ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  workers = pipeline_fakes.take(iter(pipeline.frame_dataset(examples, 2, num_workers=1)), 3)
  pipeline_fakes.assert_batches_equal(workers, serial)


def test_missing_or_stale_set_is_one_clear_error(built, tmp_path):
  config, _, _, _, data_dir = built
  crops = processing.FrameProcessing.from_config(config)
  with pytest.raises(DatasetError, match=r"no packed SYNTHETIC dataset .*--format crops") as missing:
    precropped.open_precropped_datasets([NAME], str(tmp_path), crops)
  assert "\n" not in str(missing.value)
  tiny = processing.FrameProcessing.from_config(importlib.import_module("configs.fartrack").get_config(
      "variant=tiny"))
  with pytest.raises(DatasetError, match=r"stale pre-cropped set, built for template factor 2 size 32 .*"
                                         r"asks for template factor 2 size 112") as stale:
    precropped.open_precropped_datasets([NAME], data_dir, tiny)
  assert "\n" not in str(stale.value)
  older = tmp_path / "older"
  (older / "tracking_crops" / "synthetic" / "1.0.0").mkdir(parents=True)
  (older / "tracking_crops" / "synthetic" / "1.0.0" / "dataset_info.json").write_text("{}")
  with pytest.raises(DatasetError, match=r"older format 1.0.0 .* build it with: python scripts/build_tfds.py "
                                         r"--dataset SYNTHETIC .*--format crops") as old:
    precropped.open_precropped_datasets([NAME], str(older), crops)
  assert "\n" not in str(old.value)


def test_config_data_path_is_checked_and_reaches_the_trainers_data(built, tmp_path):
  from fartrack_jax.training import trainer  # pylint: disable=g-import-not-at-top
  config, _, fast, _, data_dir = built
  config = _smoke_config()
  with config.unlocked():
    config.run.data_path = "crops"
  with pytest.raises(ValueError, match="run.data_path"):
    config_lib.validate_config(config)
  with config.unlocked():
    config.run.data_path = "precropped"
  with pytest.raises(ValueError, match="run.tfds_data_dir"):
    config_lib.validate_config(config)
  with config.unlocked():
    config.run.tfds_data_dir = data_dir
  config_lib.validate_config(config)
  default_data = trainer.default_data
  (batch,) = pipeline_fakes.take(iter(default_data(config, str(tmp_path), "train", 2, 4)), 1)
  want = build.frame_examples_from_config(config, fast, seed=4)
  np.testing.assert_array_equal(batch["templates"][1], want(1)["templates"])


def _script(*args):
  return subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "build_tfds.py"), *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_build_script_cuts_crops_in_worker_processes_with_a_progress_bar(built, tmp_path):
  _, _, fast, root, _ = built
  data_dir = str(tmp_path / "tfds")
  out = _script("--dataset", NAME, "--root", root, "--data-dir", data_dir, "--format", "crops", "--config",
                "configs/fartrack.py:variant=smoke", "--num-workers", "2")
  assert out.returncode == 0, out.stderr[-2000:]
  assert "Generating train examples" in out.stderr  # tfds' progress bar over the frames
  assert f"{NAME}: 3 sequences, 72 frames" in out.stdout
  crops = processing.FrameProcessing.from_config(_smoke_config())
  (again,) = precropped.open_precropped_datasets([NAME], data_dir, crops)
  for seq in (1, 2):  # cut in 2 processes: the same windows, in the same records, as cut in one
    for k in (0, 5, 23):
      assert again.sequence(seq).frames[k].read_frame().windows == fast[0].sequence(seq).frames[k].read_frame().windows
  out = _script("--dataset", NAME, "--root", root, "--data-dir", str(tmp_path / "other"), "--format", "crops",
                "--config", "configs/nope.py")
  assert out.returncode != 0 and "error: --config='configs/nope.py': no such config" in out.stderr


def test_oversampled_windows_are_finer_up_to_the_frames_resolution():
  template, search = processing.CropSpec(2.0, 56, 0.0, 0.0), processing.CropSpec(4.0, 112, 3.5, 0.5)
  specs = {o: precropped.window_specs(template, search, oversample=o) for o in (1.0, 2.0)}
  for kind in precropped.KINDS:
    assert [w.pixels_per_s for w in specs[2.0][kind]] == [2 * w.pixels_per_s for w in specs[1.0][kind]]
  box = (130.0, 90.0, 64.0, 49.0)  # s = 56: the template window at 1/2 of the frame's resolution, or 1/1
  regions = {o: precropped.window_regions(box, 240, 320, spec["template"]) for o, spec in specs.items()}
  (x0, _, x1, _, width, _) = regions[1.0][0]
  assert regions[2.0][0][:4] == regions[1.0][0][:4]
  assert width == math.ceil((x1 - x0) * 28 / 56) and regions[2.0][0][4] == x1 - x0  # capped at the frame's
  with pytest.raises(ValueError, match="oversample"):
    precropped.window_specs(template, search, oversample=0.5)
