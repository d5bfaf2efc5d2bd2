"""Offline evaluation: result files, resume after a kill, batch independence, submissions, video script."""

import json
import os
import subprocess
import sys
import zipfile

import cv2
import numpy as np
import pytest

from data_pipelines import synthetic
from data_pipelines.evaluation import readers
from fartrack_jax import checkpoints
from fartrack_jax import convert
from fartrack_jax.tracking import evaluate
from fartrack_jax.tracking import video
from tests.conftest import ROOT, init, load_config


@pytest.fixture(scope="module")
def got10k(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("got10k"))
  synthetic.make_synthetic_dataset("got10k", root, num_sequences=3, num_frames=6, size=(96, 72), seed=3)
  return root


@pytest.fixture(scope="module")
def smoke():
  config = load_config("fartrack_sparse")
  _, params = init(config, seed=7)
  return config, params


def _read(path):
  with open(path) as f:
    return f.read()


def test_results_are_pytracking_files_and_a_killed_run_resumes(got10k, smoke, tmp_path):
  config, params = smoke
  sequences = readers.load_dataset("got10k_val", got10k)
  out = str(tmp_path / "results")
  first = evaluate.evaluate(config, params, sequences, out, batch=2, log=lambda _: None)
  assert first["tracked"] == 3 and first["frames"] == 18
  for s in sequences:
    lines = _read(os.path.join(out, f"{s.name}.txt")).splitlines()
    assert len(lines) == len(s.frames)
    assert lines[0].split("\t") == [str(int(v)) for v in s.init_box]  # frame 0 is the given box
    assert len(_read(os.path.join(out, f"{s.name}_time.txt")).splitlines()) == len(s.frames)
  reference = {s.name: _read(os.path.join(out, f"{s.name}.txt")) for s in sequences}
  # Simulate a kill: one sequence lost its boxes file, another has a truncated one; rerun.
  os.remove(os.path.join(out, f"{sequences[0].name}.txt"))
  with open(os.path.join(out, f"{sequences[1].name}.txt"), "w") as f:
    f.write("1\t2\t3\t4\n")
  messages = []
  second = evaluate.evaluate(config, params, sequences, out, batch=2, log=messages.append)
  assert second["tracked"] == 2 and second["skipped"] == 1
  assert any("already complete" in m for m in messages)
  for s in sequences:
    assert _read(os.path.join(out, f"{s.name}.txt")) == reference[s.name]
  third = evaluate.evaluate(config, params, sequences, out, batch=2, log=lambda _: None)
  assert third["tracked"] == 0 and third["skipped"] == 3


def test_got10k_and_trackingnet_submissions(got10k, smoke, tmp_path):
  config, params = smoke
  sequences = readers.load_dataset("got10k_test", got10k)
  out = str(tmp_path / "test")
  with pytest.raises(ValueError, match="no complete result"):
    evaluate.package_submission(out, "got10k_test", sequences, str(tmp_path / "x.zip"))
  evaluate.evaluate(config, params, sequences, out, batch=1, log=lambda _: None)
  path = evaluate.package_submission(out, "got10k_test", sequences, str(tmp_path / "got10k.zip"))
  with zipfile.ZipFile(path) as zf:
    names = set(zf.namelist())
    s = sequences[0]
    assert f"{s.name}/{s.name}_001.txt" in names and f"{s.name}/{s.name}_time.txt" in names
    first_line = zf.read(f"{s.name}/{s.name}_001.txt").decode().splitlines()[0]
    assert first_line == ",".join(str(int(v)) for v in s.init_box)
  path = evaluate.package_submission(out, "trackingnet", sequences, str(tmp_path / "tn.zip"))
  with zipfile.ZipFile(path) as zf:
    assert sorted(zf.namelist()) == sorted(f"{s.name}.txt" for s in sequences)


def test_video_box_checks():
  with pytest.raises(ValueError, match="4 numbers"):
    video.parse_box("1,2,3")
  with pytest.raises(ValueError, match="not inside"):
    video.check_box_in_frame([90, 10, 20, 20], 72, 96)
  with pytest.raises(ValueError, match="non-positive"):
    video.check_box_in_frame([10, 10, 0, 5], 72, 96)


def _params_dir(tmp_path, config, params):
  path = str(tmp_path / "params")
  checkpoints.save_params(path, params, convert.metadata_for(config, "", "init"))
  return path


def _run(script, *args):
  return subprocess.run([sys.executable, os.path.join(ROOT, "scripts", script), *args], capture_output=True,
                        text=True, cwd=ROOT, timeout=600)


@pytest.mark.slow
def test_track_video_script_writes_boxes_and_mp4(smoke, tmp_path):
  config, params = smoke
  frames, boxes = synthetic.render_sequence(np.random.default_rng(0), 6, (96, 72))
  video_path = str(tmp_path / "clip.mp4")
  writer = cv2.VideoWriter(video_path, cv2.VideoWriter_fourcc(*"mp4v"), 10, (96, 72))
  for f in frames:
    writer.write(f)
  writer.release()
  params_dir = _params_dir(tmp_path, config, params)
  box = ",".join(str(int(v)) for v in boxes[0])
  common = ["--config=configs/fartrack_sparse.py:variant=smoke", f"--checkpoint={params_dir}"]
  ok = _run("track_video.py", *common, f"--input={video_path}", f"--init-box={box}",
            f"--output-dir={tmp_path / 'out'}")
  assert ok.returncode == 0, ok.stderr
  lines = _read(str(tmp_path / "out" / "boxes.txt")).splitlines()
  assert len(lines) == 6 and [float(v) for v in lines[0].split(",")] == [float(v) for v in boxes[0]]
  assert len(video.VideoFrames(str(tmp_path / "out" / "tracked.mp4"))) == 6
  outside = _run("track_video.py", *common, f"--input={video_path}", "--init-box=90,60,20,20",
                 f"--output-dir={tmp_path / 'out2'}")
  assert outside.returncode != 0 and "not inside" in outside.stderr
  broken = tmp_path / "broken.mp4"
  broken.write_bytes(b"not a video")
  unreadable = _run("track_video.py", *common, f"--input={broken}", f"--init-box={box}",
                    f"--output-dir={tmp_path / 'out3'}")
  assert unreadable.returncode != 0 and "broken.mp4" in unreadable.stderr


@pytest.mark.slow
def test_evaluate_script_stops_at_an_unreadable_frame_resumes_and_writes_json(smoke, tmp_path):
  # The third sequence's 4th frame is not an image: the run ends with one error line naming it, the two
  # sequences tracked before it are written; with the frame repaired, a rerun tracks only the third and
  # --json reports that run's frames.
  config, params = smoke
  root = str(tmp_path / "got10k")
  synthetic.make_synthetic_dataset("got10k", root, num_sequences=3, num_frames=6, size=(96, 72), seed=5)
  sequences = readers.load_dataset("got10k_val", root)
  bad = sequences[2].frames[3]
  original = open(bad, "rb").read()
  with open(bad, "wb") as f:
    f.write(b"not a jpeg")
  out, report = str(tmp_path / "results"), str(tmp_path / "run.json")
  params_dir = _params_dir(tmp_path, config, params)
  args = ["--config=configs/fartrack_sparse.py:variant=smoke", f"--checkpoint={params_dir}",
          "--dataset=got10k_val", f"--data-root={root}", f"--results-dir={out}", f"--json={report}"]
  failed = _run("evaluate.py", *args)
  assert failed.returncode != 0 and f"error: cannot read image {bad}" in failed.stderr
  assert "Traceback" not in failed.stderr and not os.path.exists(report)
  assert [evaluate.is_complete(out, s.name, 6) for s in sequences] == [True, True, False]
  with open(bad, "wb") as f:
    f.write(original)
  resumed = _run("evaluate.py", *args)
  assert resumed.returncode == 0, resumed.stderr
  assert "2 of 3 sequences already complete" in resumed.stdout
  assert all(evaluate.is_complete(out, s.name, 6) for s in sequences)
  fields = json.loads(_read(report))
  assert fields["frames"] == 6 and fields["batch"] == 1
  assert fields["frames_per_s"] == pytest.approx(fields["frames"] / fields["seconds"])


def test_long_sequences_keep_the_template_memory_on_the_host_with_the_same_results(got10k, smoke, tmp_path,
                                                                                 monkeypatch):
  config, params = smoke
  sequences = readers.load_dataset("got10k_val", got10k)
  on_device = str(tmp_path / "device")
  evaluate.evaluate(config, params, sequences, on_device, batch=2, log=lambda _: None)
  monkeypatch.setattr(evaluate, "DEVICE_STORE_MAX_FRAMES", 4)  # these 6-frame sequences count as long
  on_host, messages = str(tmp_path / "host"), []
  evaluate.evaluate(config, params, sequences, on_host, batch=2, log=messages.append)
  assert any("template memory on the host" in m for m in messages)
  for s in sequences:
    assert _read(os.path.join(on_host, f"{s.name}.txt")) == _read(os.path.join(on_device, f"{s.name}.txt"))


@pytest.mark.slow
def test_track_video_script_tracks_a_folder_of_images(smoke, tmp_path):
  config, params = smoke
  frames, boxes = synthetic.render_sequence(np.random.default_rng(1), 5, (96, 72))
  folder = tmp_path / "frames"
  folder.mkdir()
  for i, frame in enumerate(frames):
    cv2.imwrite(str(folder / f"{i:04d}.jpg"), frame)
  (folder / "notes.txt").write_text("not an image")
  box = ",".join(str(int(v)) for v in boxes[0])
  result = _run("track_video.py", "--config=configs/fartrack_sparse.py:variant=smoke",
                f"--checkpoint={_params_dir(tmp_path, config, params)}", f"--input={folder}",
                f"--init-box={box}", f"--output-dir={tmp_path / 'out'}")
  assert result.returncode == 0, result.stderr
  assert len(_read(str(tmp_path / "out" / "boxes.txt")).splitlines()) == 5
  drawn = video.VideoFrames(str(tmp_path / "out" / "tracked.mp4"))
  assert len(drawn) == 5 and drawn[0].shape == (72, 96, 3)
