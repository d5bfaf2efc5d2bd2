"""A whole Cloud TPU run with every byte on gs://, against a storage server started here (fake-gcs-server
behind one counting relay per client, tests/gcs_emulator.py), two processes where a slice has several hosts:
pack a synthetic training root (frames and crops) into the bucket, stage 1 from the pre-cropped set with
MAE-format weights on the bucket, stage 2 from the stage-1 bucket workdir on the packed frames, export a
depth to the bucket, stage 3 from it, evaluate and analyse with the results on the bucket. gfile, tensorstore
(checkpoints, and the training sets' records by byte ranges) and google-cloud-storage must have sent requests,
array_record's own google-cloud-cpp reader none, and nothing may be written under the working directory (no
`./gs:` folder)."""

import io
import json
import os
import subprocess
import sys
import urllib.parse
import urllib.request

import numpy as np
import pytest

from data_pipelines import synthetic
from data_pipelines.training import synthetic_train
from tests import gcs_emulator
from tests import conftest as helpers
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

BUCKET = "fartrack-test"
B = f"gs://{BUCKET}"


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
  server = gcs_emulator.GcsEmulator(str(tmp_path_factory.mktemp("gcs")), BUCKET)
  yield server
  server.close()


def _read_object(server, name) -> bytes:
  url = f"http://127.0.0.1:{server.port}/storage/v1/b/{BUCKET}/o/{urllib.parse.quote(name, safe='')}?alt=media"
  with urllib.request.urlopen(url, timeout=30) as response:
    return response.read()


def _put_object(server, name, data: bytes):
  url = (f"http://127.0.0.1:{server.port}/upload/storage/v1/b/{BUCKET}/o?"
         f"{urllib.parse.urlencode({'uploadType': 'media', 'name': name})}")
  request = urllib.request.Request(url, data=data, method="POST",
                                   headers={"Content-Type": "application/octet-stream"})
  urllib.request.urlopen(request, timeout=30).close()


def _run(server, cwd, *command, processes=0):
  """One command (scripts/<name>.py and its flags), in `processes` processes through launch_local.py."""
  script = os.path.join(ROOT, "scripts", command[0])
  argv = [sys.executable, script, *command[1:]]
  if processes:
    argv = [sys.executable, os.path.join(ROOT, "scripts", "launch_local.py"), f"--processes={processes}",
            "--devices_per_process=1", "--", script, *command[1:]]
  out = subprocess.run(argv, cwd=cwd, env=dict(os.environ, JAX_PLATFORMS="cpu", **server.env),
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, f"{command[0]}:\n{out.stdout[-5000:]}\n{out.stderr[-3000:]}"
  return out.stdout


# The MAE ViT's 14 x 14 positional grid, as in the real configs: every stage after it keeps that table.
_GRID = ("--config.model.pretrain_grid=14",)


def _stage(config, workdir, *overrides):
  return ("train.py", "--config", os.path.join(ROOT, "configs", config), "--workdir", workdir,
          "--config.run.max_steps=2", "--config.run.checkpoint_every_steps=2",
          "--config.run.val_every_steps=100000", "--config.run.val_batches=1",
          f"--config.run.tfds_data_dir={B}/tfds", *_GRID, *overrides)


def test_pack_train_three_stages_export_evaluate_and_analyse_on_a_bucket(gcs, tmp_path):
  torch = pytest.importorskip("torch", reason="torch (requirements-torch.txt) writes the MAE .pth.tar")
  from fartrack_jax import model as model_lib  # pylint: disable=g-import-not-at-top
  from tests.fartrack_jax.test_converter import _fake_mae  # pylint: disable=g-import-not-at-top
  cwd = tmp_path / "cwd"  # every command runs here: nothing may appear in it
  cwd.mkdir()
  data_root = str(tmp_path / "train")
  synthetic_train.make_synthetic_train_dataset("got10k_train", data_root, num_sequences=3, num_frames=24)

  for fmt in ("frames", "crops"):
    log = _run(gcs, cwd, "build_tfds.py", "--dataset=SYNTHETIC", f"--root={data_root}", f"--data_dir={B}/tfds",
               f"--format={fmt}", "--config=configs/fartrack.py:variant=smoke",
               f"--scratch_dir={tmp_path / 'scratch'}")
    assert "SYNTHETIC: 3 sequences, 72 frames" in log, log
  names = gcs.objects("tfds/")
  for builder, version in (("tracking_frames", "1.0.0"), ("tracking_crops", "2.0.0")):
    folder = f"tfds/{builder}/synthetic/{version}/"
    assert {folder + "dataset_info.json", folder + "sequences.npz"} <= set(names), names
    assert any(n.startswith(folder) and ".array_record-" in n for n in names), names
  assert not os.listdir(tmp_path / "scratch"), "the local build is removed once it is in the bucket"
  log = _run(gcs, cwd, "build_tfds.py", "--dataset=SYNTHETIC", f"--root={data_root}", f"--data_dir={B}/tfds",
             "--format=frames", f"--scratch_dir={tmp_path / 'scratch'}")
  assert "already packed" in log, log

  config = helpers.load_config("fartrack", "variant=smoke")
  config.model.pretrain_grid = 14
  mae = _fake_mae(model_lib.ModelSpec.from_config(config), num_blocks=int(config.model.num_blocks), seed=3)
  buffer = io.BytesIO()
  torch.save({"model": {k: torch.from_numpy(v) for k, v in mae.items()}}, buffer)
  _put_object(gcs, "pretrained/mae.pth.tar", buffer.getvalue())

  log = _run(gcs, cwd, *_stage("fartrack.py:variant=smoke", f"{B}/runs/stage1", "--config.run.data_path=precropped",
                               "--config.model.allow_random_init=False",
                               f"--config.model.pretrain_file={B}/pretrained/mae.pth.tar"), processes=2)
  assert "[0] done: step 2" in log and "[1] done: step 2" in log, log[-3000:]
  log = _run(gcs, cwd, *_stage("fartrack_distill.py:variant=smoke", f"{B}/runs/stage2",
                               "--config.model.allow_random_init=False",
                               f"--config.model.pretrain_pth={B}/runs/stage1"), processes=2)
  assert "[0] done: step 2" in log, log[-3000:]
  _run(gcs, cwd, "export_variant.py", "--config", os.path.join(ROOT, "configs", "fartrack_distill.py") +
       ":variant=smoke", *_GRID, f"--checkpoint={B}/runs/stage2", "--depth=1", f"--output={B}/export_depth1")
  sparse = os.path.join(ROOT, "configs", "fartrack_sparse.py") + ":variant=smoke"
  log = _run(gcs, cwd, *_stage("fartrack_sparse.py:variant=smoke", f"{B}/runs/stage3", "--config.model.depth=1",
                               "--config.model.allow_random_init=False",
                               f"--config.model.pretrain_pth={B}/export_depth1"), processes=2)
  assert "[0] done: step 2" in log, log[-3000:]
  for stage in ("stage1", "stage2", "stage3"):
    names = gcs.objects(f"runs/{stage}/")
    assert f"runs/{stage}/train_log.txt" in names, names
    assert f"runs/{stage}/checkpoints/2/data/process_1-of-2.json" in names, names
  # The last lines reach the bucket copy when the run ends: the final validation, then the goodput totals,
  # the last thing a run logs.
  log_lines = _read_object(gcs, "runs/stage1/train_log.txt").splitlines()
  assert b"goodput_total/" in log_lines[-1] and any(b"val/loss=" in line for line in log_lines[-5:]), log_lines[-5:]

  bench = str(tmp_path / "got10k")
  synthetic.make_synthetic_dataset("got10k", bench, num_sequences=2, num_frames=5, size=(96, 72), seed=3)
  results = f"{B}/results/got10k_val/fartrack"
  _run(gcs, cwd, "evaluate.py", "--config", sparse, "--config.model.depth=1", *_GRID, f"--checkpoint={B}/runs/stage3",
       "--dataset=got10k_val", f"--data_root={bench}", f"--results_dir={results}",
       f"--json={B}/results/run.json", processes=2)
  log = _run(gcs, cwd, "analyze.py", "--dataset=got10k_val", f"--data_root={bench}", f"--results_dir={results}",
             f"--json={B}/results/scores.json", f"--plots={B}/results/plots")
  assert "fartrack" in log, log
  scores = json.loads(_read_object(gcs, "results/scores.json"))
  assert set(scores["fartrack"]) == {"AO", "SR50", "SR75"} and np.isfinite(scores["fartrack"]["AO"]), scores
  assert json.loads(_read_object(gcs, "results/run.json"))["processes"] == 2
  assert "results/plots/success_plot.png" in gcs.objects("results/plots/")

  counts = gcs.requests()
  # The packed and pre-cropped records came by byte ranges through tensorstore (remote_records), not through
  # array_record's own reader (google-cloud-cpp; tests/data_pipelines/training/test_remote_records.py shows
  # that client reaching the server for the files it still reads).
  assert all(counts[client] > 0 for client in ("gfile", "tensorstore", "google_cloud_storage")), counts
  assert counts["array_record"] == 0, counts
  assert os.listdir(cwd) == [], os.listdir(cwd)
  assert not os.path.exists(os.path.join(ROOT, "gs:")), "a bucket path went through os.path.abspath"
