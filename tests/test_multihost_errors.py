"""Bad multi-process set-ups end with one error line (no traceback, no hang): a process that never joins,
--num_processes that disagrees, incomplete cluster flags, a workdir that cannot be written, a resume with a
config whose model is not the checkpoint's."""

import os
import subprocess
import sys
import time

import pytest

from fartrack_jax import distributed
from fartrack_jax import storage
from fartrack_jax.training import checkpointing, trainer
from tests import train_fakes
from tests.conftest import ROOT, load_config


def _train_command(workdir, *more):
  return [sys.executable, os.path.join(ROOT, "scripts", "train.py"), "--config",
          os.path.join(ROOT, "configs", "fartrack.py") + ":variant=smoke", "--workdir", workdir,
          "--data-root", "synthetic=/nonexistent", *more]


def _one_error_line(stderr):
  errors = [line for line in stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and "Traceback" not in stderr, stderr[-3000:]
  return errors[0]


@pytest.mark.slow
def test_a_process_that_never_joins_is_reported_after_the_timeout(tmp_path):
  port = distributed.free_port()
  started = time.monotonic()
  out = subprocess.run(_train_command(str(tmp_path / "w"), f"--coordinator_address=localhost:{port}",
                                      "--num_processes=2", "--process_id=0", "--init_timeout_s=3"),
                       capture_output=True, text=True, timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert out.returncode != 0
  line = _one_error_line(out.stderr)
  assert "process 0 of 2" in line and "within --init_timeout_s=3 s" in line, line
  assert "process 1 never joined" in line, line  # named from the roll call in the workdir
  assert time.monotonic() - started < 120


@pytest.mark.slow
def test_disagreeing_num_processes_stops_both(tmp_path):
  port = distributed.free_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  procs = [subprocess.Popen(_train_command(str(tmp_path / "w"), f"--coordinator_address=localhost:{port}",
                                           f"--num_processes={n}", f"--process_id={i}", "--init_timeout_s=60"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
           for i, n in ((0, 2), (1, 3))]
  try:
    for i, p in enumerate(procs):
      _, stderr = p.communicate(timeout=300)
      assert p.returncode != 0
      line = _one_error_line(stderr)
      assert f"process {i}: --num_processes disagrees: process 0 has 2, process 1 has 3" in line, line
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()


def test_incomplete_cluster_flags_are_refused():
  with pytest.raises(distributed.DistributedError, match="--num_processes given without --coordinator_address"):
    distributed.initialize("auto", None, 2, None)
  with pytest.raises(distributed.DistributedError, match="--process_id=2 is not in 0..1"):
    distributed.initialize("auto", "localhost:1", 2, 2)
  with pytest.raises(distributed.DistributedError, match="contradicts"):
    distributed.initialize("false", "localhost:1", 2, 0)
  assert distributed.initialize("false") is False


@pytest.mark.slow
def test_an_unwritable_workdir_fails_before_the_first_step(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  with pytest.raises(storage.StorageError, match=r"--workdir .*a_file/run is not writable"):
    storage.check_writable(str(blocker / "run"), "--workdir")
  out = subprocess.run(_train_command(str(blocker / "run")), capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert out.returncode != 0
  assert "is not writable" in _one_error_line(out.stderr)


@pytest.mark.slow
def test_resume_with_another_model_is_refused_by_name(tmp_path):
  config = load_config("fartrack", "smoke")
  config.data.train.sample_per_epoch = 64
  config.run.max_steps = 1
  config.run.checkpoint_every_steps = 1
  config.run.val_every_steps = 100
  workdir = str(tmp_path / "run")
  trainer.train(config, workdir, data_fn=train_fakes.make_data_fn(), async_checkpoints=False)
  config.model.embed_dim = 36
  config.run.max_steps = 2
  with pytest.raises(checkpointing.ModelMismatchError, match=r"model.embed_dim: checkpoint 48, config 36"):
    trainer.train(config, workdir, data_fn=train_fakes.make_data_fn(), async_checkpoints=False)
