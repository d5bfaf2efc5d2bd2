"""A multi-process run with its workdir on gs://, against a storage server started here (fake-gcs-server)
and reached by the clients a TPU VM uses (TensorFlow's gfile under etils.epath and clu, tensorstore under
orbax; see tests/gcs_emulator.py for how): 2 processes train, a second launch resumes, the params are then
evaluated from the bucket into result files on the bucket, and a bucket that does not exist fails before the
first step."""

import os
import subprocess
import sys

import pytest

from data_pipelines import synthetic
from data_pipelines.training import synthetic_train
from tests.conftest import ROOT
from tests import gcs_emulator

# A storage server and several processes: the slow tier.
pytestmark = pytest.mark.slow

BUCKET = "fartrack-test"


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
  server = gcs_emulator.GcsEmulator(str(tmp_path_factory.mktemp("gcs")), BUCKET)
  yield server
  server.close()


def _launch(server, processes, devices, *command):
  out = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "launch_local.py"),
                        f"--processes={processes}", f"--devices_per_process={devices}", "--", *command],
                       cwd=ROOT, env=dict(os.environ, **server.env), capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
  return out.stdout


def _train(workdir, data_root, max_steps):
  return [os.path.join(ROOT, "scripts", "train.py"), "--config",
          os.path.join(ROOT, "configs", "fartrack_sparse.py") + ":variant=smoke", "--workdir", workdir,
          "--data-root", f"synthetic={data_root}", f"--config.run.max_steps={max_steps}",
          "--config.train.global_batch_size=4", "--config.data.train.sample_per_epoch=256",
          "--config.run.checkpoint_every_steps=2", "--config.run.val_every_steps=100000"]


def test_two_processes_train_resume_and_evaluate_on_a_bucket(gcs, tmp_path):
  data_root = str(tmp_path / "train")
  synthetic_train.make_synthetic_train_dataset("got10k_train", data_root, num_sequences=3, num_frames=24)
  workdir = f"gs://{BUCKET}/runs/stage3"
  log = _launch(gcs, 2, 2, *_train(workdir, data_root, 2))
  assert "[0] done: step 2" in log and "[1] done: step 2" in log
  names = gcs.objects("runs/stage3/")
  assert "runs/stage3/config.json" in names
  events = [n for n in names if "events.out.tfevents" in n]
  assert len(events) == 1, events  # process 0 alone writes the shared files
  step = [n for n in names if n.startswith("runs/stage3/checkpoints/2/")]
  assert {"runs/stage3/checkpoints/2/data/process_0-of-2.json",
          "runs/stage3/checkpoints/2/data/process_1-of-2.json"} <= set(step), step
  assert any("ocdbt.process_1" in n for n in step), step  # process 1's array shards, in the same step dir
  assert not any(n.startswith("gs:") or "/gs:/" in n for n in names)

  log = _launch(gcs, 2, 2, *_train(workdir, data_root, 4))
  assert "resumed from step 2" in log and "[0] done: step 4" in log

  bench = str(tmp_path / "got10k")
  synthetic.make_synthetic_dataset("got10k", bench, num_sequences=2, num_frames=5, size=(96, 72), seed=3)
  results = f"gs://{BUCKET}/results/got10k_val"
  log = _launch(gcs, 2, 1, os.path.join(ROOT, "scripts", "evaluate.py"), "--config",
                os.path.join(ROOT, "configs", "fartrack_sparse.py") + ":variant=smoke", "--checkpoint", workdir,
                "--dataset", "got10k_val", "--data-root", bench, "--results-dir", results)
  names = [n for n in gcs.objects("results/got10k_val/") if n.endswith(".txt")]
  sequences = sorted(name for name in os.listdir(os.path.join(bench, "val")) if not name.endswith(".txt"))
  assert sorted(names) == sorted([f"results/got10k_val/{name}.txt" for name in sequences]
                                 + [f"results/got10k_val/{name}_time.txt" for name in sequences]), names


def test_a_bucket_that_does_not_exist_fails_before_the_first_step(gcs, tmp_path):
  out = subprocess.run([sys.executable, *_train("gs://no-such-bucket/run", str(tmp_path), 2)], cwd=ROOT,
                       env=dict(os.environ, JAX_PLATFORMS="cpu", **gcs.env), capture_output=True, text=True,
                       timeout=300)
  assert out.returncode != 0
  errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and "the bucket gs://no-such-bucket does not exist" in errors[0], out.stderr[-3000:]
