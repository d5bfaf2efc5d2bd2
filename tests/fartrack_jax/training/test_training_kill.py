"""Killing `scripts/train.py` with SIGKILL, preferably while a checkpoint is being written, loses at most the
steps since the last finished checkpoint: the latest checkpoint loads, and the same command resumes from it."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from data_pipelines.training import synthetic_train
from fartrack_jax import checkpoints
from tests.conftest import ROOT


def _command(workdir, data_root, max_steps):
  return [sys.executable, os.path.join(ROOT, "scripts", "train.py"), "--config",
          os.path.join(ROOT, "configs", "fartrack.py") + ":variant=smoke", "--workdir", workdir,
          "--data-root", f"synthetic={data_root}", f"--config.run.max_steps={max_steps}",
          "--config.data.train.sample_per_epoch=100000", "--config.run.checkpoint_every_steps=2",
          "--config.run.val_every_steps=100000", "--config.run.keep_checkpoints=2"]


@pytest.mark.slow
def test_sigkill_mid_run_leaves_a_loadable_checkpoint_and_resumes(tmp_path):
  data_root = str(tmp_path / "got10k")
  synthetic_train.make_synthetic_train_dataset("got10k_train", data_root, num_sequences=3, num_frames=24)
  workdir = str(tmp_path / "run")
  checkpoints_dir = os.path.join(workdir, "checkpoints")
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.Popen(_command(workdir, data_root, 100000), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  killed_mid_save = False
  try:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
      entries = os.listdir(checkpoints_dir) if os.path.isdir(checkpoints_dir) else []
      finished = [int(e) for e in entries if e.isdigit()]
      if any("tmp" in e for e in entries) and finished:
        killed_mid_save = True
        break
      if finished and max(finished) >= 8:
        break
      time.sleep(0.005)
    assert proc.poll() is None, "training ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
  finally:
    if proc.poll() is None:
      proc.kill()
  params, meta, step = checkpoints.load_train_params(workdir)
  assert step >= 2 and step % 2 == 0 and meta["stage"] == "fartrack"
  assert params["layer_0"]["attn"]["qkv"]["kernel"].shape[0] == 48

  resumed = subprocess.run(_command(workdir, data_root, step + 2), cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=600)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f"done: step {step + 2}" in resumed.stdout
  assert re.search(rf"resumed from step {step}\b", resumed.stderr), resumed.stderr[-3000:]
  print(f"killed {'during a checkpoint write' if killed_mid_save else 'between checkpoints'} after step {step}")
