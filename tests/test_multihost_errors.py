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
from fartrack_jax.distributed import peers
from fartrack_jax.training import checkpoint_manager, trainer
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


def test_incomplete_cluster_flags_are_refused(monkeypatch):
  monkeypatch.setattr(peers._Alone, "limits", None)  # pylint: disable=protected-access  (restored after)
  with pytest.raises(distributed.DistributedError, match="--num_processes given without --coordinator_address"):
    distributed.initialize("auto", None, 2, None)
  with pytest.raises(distributed.DistributedError, match="--process_id=2 is not in 0..1"):
    distributed.initialize("auto", "localhost:1", 2, 2)
  with pytest.raises(distributed.DistributedError, match="contradicts"):
    distributed.initialize("false", "localhost:1", 2, 0)
  assert distributed.initialize("false") is False
  assert peers._Alone.limits == (600, 1800)  # pylint: disable=protected-access  (the trainer's stall watch)


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
  with pytest.raises(checkpoint_manager.ModelMismatchError, match=r"model.embed_dim: checkpoint 48, config 36"):
    trainer.train(config, workdir, data_fn=train_fakes.make_data_fn(), async_checkpoints=False)


def _fault_args(tmp_path, data_root, *more):
  """tests/fault_driver.py's arguments for a smoke run of 40 steps in `<tmp_path>/w`, a checkpoint every 2."""
  return [os.path.join(ROOT, "tests", "fault_driver.py"), "--config",
          os.path.join(ROOT, "configs", "fartrack.py") + ":variant=smoke", "--workdir", str(tmp_path / "w"),
          "--data-root", f"synthetic={data_root}", "--config.run.max_steps=40",
          "--config.data.train.sample_per_epoch=256", "--config.train.global_batch_size=8",
          "--config.run.checkpoint_every_steps=2", "--config.run.val_every_steps=100000", *more]


def _fault_job(tmp_path, data_root, fault, *more, timeout_s=900):
  """Both processes of a 2-process smoke run with `fault` (tests/fault_driver.py) injected into process 1;
  returns [(status, stderr, seconds)] of each."""
  args = _fault_args(tmp_path, data_root, "--heartbeat_timeout_s=60", *more)
  jobs = distributed.local_job_commands(2, 4, args, distributed.free_port())
  started = time.monotonic()
  procs = [subprocess.Popen(argv, cwd=ROOT, env=dict(env, FARTRACK_FAULT=fault), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True) for argv, env in jobs]
  out = []
  try:
    for p in procs:
      _, stderr = p.communicate(timeout=timeout_s)
      out.append((p.returncode, stderr, time.monotonic() - started))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  return out


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
  from data_pipelines.training import synthetic_train  # pylint: disable=g-import-not-at-top
  root = str(tmp_path_factory.mktemp("synthetic") / "got10k")
  synthetic_train.make_synthetic_train_dataset("got10k_train", root, num_sequences=3, num_frames=24)
  return root


@pytest.mark.slow
@pytest.mark.parametrize("fault, own, advice", [
    ("oom@3:1", "out of device memory in step 3", "lower train.global_batch_size"),
    ("compile@1:1", "the training step did not compile", "will not pass by relaunching"),
    ("data@3:1", "data error in reading training batch 3", "fix or remove the data"),
    ("python@3:1", "ZeroDivisionError in step 3: injected", "a bug or bad input"),
])
def test_a_fault_in_one_process_is_named_for_what_it_is(tmp_path, data_root, fault, own, advice):
  """Process 1 fails (injected); it says what failed with the advice that fits, and process 0 stops at once
  naming process 1 and the same reason; neither tells the user to relaunch (that would repeat the fault)."""
  (status_0, stderr_0, _), (status_1, stderr_1, _) = _fault_job(tmp_path, data_root, fault)
  assert status_1 == 1 and status_0 == 1, (status_0, status_1, stderr_0[-2000:], stderr_1[-2000:])
  line_1 = [l for l in stderr_1.splitlines() if l.startswith("error:")][-1]
  assert line_1.startswith("error: process 1 of 2: ") and own in line_1 and advice in line_1, line_1
  line_0 = _one_error_line(stderr_0)
  assert line_0.startswith("error: process 0 of 2: process 1 failed: ") and own in line_0, line_0
  for line in (line_0, line_1):
    assert "start the same launch" not in line.lower(), line


@pytest.mark.slow
def test_a_stalled_single_process_is_named_within_the_stall_timeout(tmp_path, data_root):
  """One process alone (no peer watcher): its read of batch 4 never returns; the trainer's stall watch
  prints where the main thread is stuck and ends the run with one error line naming the phase."""
  stall_s = 10
  args = _fault_args(tmp_path, data_root, "--distributed=false", f"--stall_timeout_s={stall_s}")
  out = subprocess.run([sys.executable, *args], cwd=ROOT, env=dict(os.environ, FARTRACK_FAULT="stall@4:0"),
                       capture_output=True, text=True, timeout=900)
  assert out.returncode == 1, out.stderr[-3000:]
  line = _one_error_line(out.stderr)
  assert line.startswith("error: process 0 of 1: the run stalled: its training loop has not moved for"), line
  assert "stuck in reading training batch 4" in line and f"(more than {stall_s} s)" in line, line
  secs = int(line.split("has not moved for ")[1].split(" s")[0])
  assert stall_s <= secs <= stall_s + 3, line  # named within the limit plus the watch's one-second poll
  stack = out.stderr.split("main thread (most recent call last):", 1)[1]
  assert "in fault" in stack and "time.sleep(3600)" in stack, stack[-2000:]  # where it is stuck
  assert checkpoint_manager.committed_steps(str(tmp_path / "w")) == [2]  # the steps before the stall kept


@pytest.mark.slow
def test_a_stalled_process_is_named_within_the_stall_timeout(tmp_path, data_root):
  """Process 1's read of batch 4 never returns, but the process is alive (its heartbeat thread runs): both
  processes stop within the stall timeout (plus the watcher's poll), naming process 1 and where it is stuck."""
  stall_s = 30
  results = _fault_job(tmp_path, data_root, "stall@4:1", f"--stall_timeout_s={stall_s}", timeout_s=900)
  for i, (status, stderr, _) in enumerate(results):
    assert status == 1, (i, status, stderr[-3000:])
    line = _one_error_line(stderr)
    assert f"error: process {i} of 2: the job stalled: process 1 has not moved for" in line, line
    assert "stuck in reading training batch 4" in line, line
    assert "process 0 has not moved" not in line, line  # process 0 only waits for it in the step
