"""Preemption: a SIGTERM to any process of a run saves one step on every process, waits until it is committed,
and ends with `distributed.PREEMPTED_EXIT_STATUS`; the same launch started again resumes there and ends with
the params of an uninterrupted run. Also: goodput.json accounts for each launch's wall time.

Tolerance 1e-6 between a preempted-and-resumed run and an uninterrupted one of the same topology: the same
fp32 math on the same global batches in the same order (a repeated or skipped batch, a lost optimizer or
rng state would differ by far more)."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from data_pipelines.training import synthetic_train
from fartrack_jax import checkpoints
from fartrack_jax import distributed
from fartrack_jax.training import checkpoint_manager, goodput, trainer
from tests import train_fakes
from tests.conftest import ROOT
from tests.test_multihost import assert_states_close, run_launched, train_args

pytestmark = pytest.mark.slow

TOL = 1e-6
TIMEOUT_S = 1800  # a loaded 2-core machine compiled stage 3 for over 5 minutes


def _config(max_steps):
  return train_fakes.frame_config(max_steps, checkpoint_every_steps=1000, val_every_steps=1000, log_every_steps=2)


def test_sigterm_commits_the_next_step_and_the_relaunch_ends_as_an_uninterrupted_run(tmp_path):
  """One process: SIGTERM during step 4's bookkeeping -> step 5 is saved (the first step after the notice),
  committed before `Preempted` is raised, and the relaunch ends at step 8 with the uninterrupted params.
  goodput.json: each launch's buckets add up to its wall time (within 2 %), and the launches are summed."""
  data_fn = train_fakes.make_data_fn()
  trainer.train(_config(8), str(tmp_path / "straight"), data_fn=data_fn, async_checkpoints=True)

  def on_log(step, total, scalars):
    del total, scalars
    if step == 4:
      os.kill(os.getpid(), signal.SIGTERM)

  workdir = str(tmp_path / "preempted")
  started = time.time()
  with pytest.raises(trainer.Preempted) as preempted:
    trainer.train(_config(8), workdir, data_fn=data_fn, on_log=on_log, started_at=started)
  first_wall = time.time() - started
  assert preempted.value.step == 5, str(preempted.value)
  assert "preempted at step 5: checkpoint committed in" in str(preempted.value)
  assert checkpoint_manager.committed_steps(workdir) == [5]
  assert preempted.value.goodput_line.startswith("goodput ")

  started = time.time()
  resumed = trainer.train(_config(8), workdir, data_fn=data_fn, started_at=started)
  second_wall = time.time() - started
  assert resumed.resumed_from == 5 and resumed.step == 8
  want, _, _ = checkpoints.load_train_params(str(tmp_path / "straight"))
  got, _, step = checkpoints.load_train_params(workdir)
  assert step == 8
  assert train_fakes.max_abs_diff(want, got) <= TOL
  assert train_fakes.max_abs_diff(checkpoints.load_train_params(workdir, step=5)[0], got) > 0  # training moved on

  record = json.loads((tmp_path / "preempted" / "goodput.json").read_text())
  launches = record["launches"]
  assert [l["ended"] for l in launches] == ["preempted", "finished"]
  assert [(l["first_step"], l["last_step"]) for l in launches] == [(0, 5), (5, 8)]
  for launch, wall in zip(launches, (first_wall, second_wall)):
    assert sum(launch["seconds"].values()) == pytest.approx(wall, rel=0.02)
    assert launch["seconds"]["steps"] > 0 and launch["seconds"]["compile"] > 0
  assert launches[1]["seconds"]["checkpoints"] > 0  # the restore
  assert record["total"]["wall_s"] == pytest.approx(first_wall + second_wall, rel=0.02)
  assert resumed.goodput_line == goodput.summary(record["total"]["seconds"])


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("synthetic") / "got10k")
  synthetic_train.make_synthetic_train_dataset("got10k_train", root, num_sequences=3, num_frames=24)
  return root


def _sigterm_one_of_two(args, signal_after_step):
  """Starts the two processes of `args`, sends SIGTERM to process 1 once process 0 has logged
  `signal_after_step`, and returns [(status, output)] of both."""
  jobs = distributed.local_job_commands(2, 4, args, distributed.free_port())
  procs = [subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for argv, env in jobs]
  outputs = [[], []]
  logged = threading.Event()

  def pump(i):
    for line in procs[i].stdout:
      outputs[i].append(line)
      if i == 0 and re.search(rf"\[{signal_after_step}\] .*train/loss=", line):
        logged.set()

  pumps = [threading.Thread(target=pump, args=(i,), daemon=True) for i in range(2)]
  for t in pumps:
    t.start()
  try:
    deadline = time.monotonic() + TIMEOUT_S
    while not logged.is_set() and time.monotonic() < deadline and all(p.poll() is None for p in procs):
      time.sleep(0.05)
    assert logged.is_set() and procs[1].poll() is None, "".join(outputs[0])[-3000:]
    procs[1].send_signal(signal.SIGTERM)
    for p in procs:
      p.wait(timeout=TIMEOUT_S)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for t in pumps:
    t.join(timeout=10)
  return [(p.returncode, "".join(o)) for p, o in zip(procs, outputs)]


@pytest.mark.parametrize("stage, max_steps, signal_after", [("fartrack", 16, 3), ("fartrack_sparse", 8, 2)])
def test_sigterm_to_one_of_two_processes_stops_both_at_one_step_and_the_relaunch_resumes(
    tmp_path, data_root, stage, max_steps, signal_after):
  """SIGTERM to process 1 only: both processes save the same step (JAX's preemption sync point), print the
  preemption line and exit with the preemption status; that step is committed, no other is; the same launch
  started again resumes there and ends with the state of an uninterrupted run of the same 2 processes (against
  1 process x 8 devices the reduction order alone differs by up to 4e-6 after 16 stage-3 steps)."""
  more = ["--config.train.global_batch_size=8", f"--config.run.log_every_steps={signal_after}",
          "--config.run.checkpoint_every_steps=1000"]
  reference = str(tmp_path / "reference")
  run_launched(train_args(stage, reference, data_root, max_steps, *more), 2, 4)

  workdir = str(tmp_path / "two")
  results = _sigterm_one_of_two(train_args(stage, workdir, data_root, max_steps, *more), signal_after)
  steps_said = set()
  for i, (status, output) in enumerate(results):
    assert status == distributed.PREEMPTED_EXIT_STATUS, f"process {i}: {status}\n{output[-3000:]}"
    lines = [l for l in output.splitlines() if l.startswith("preempted at step ")]
    assert len(lines) == 1 and lines[0].endswith("start the same launch to resume"), output[-3000:]
    steps_said.add(int(lines[0].split()[3].rstrip(":")))
  assert len(steps_said) == 1, steps_said
  step = steps_said.pop()
  assert signal_after < step < max_steps
  assert checkpoint_manager.committed_steps(workdir) == [step]

  log = run_launched(train_args(stage, workdir, data_root, max_steps, *more), 2, 4)
  assert f"resumed from step {step} " in log and f"[1] done: step {max_steps}" in log, log[-3000:]
  got, _, _ = checkpoints.load_train_state(workdir, max_steps)
  want, _, _ = checkpoints.load_train_state(reference, max_steps)
  assert_states_close(got, want, f"{stage}: preempted at {step} and resumed vs uninterrupted", tol=TOL)


def test_the_launcher_passes_the_preemption_status_on(tmp_path, data_root):
  """SIGTERM to scripts/launch_local.py (as a scheduler stops a job) reaches every process; they save one
  step and the launcher exits with the preemption status instead of killing them as failed."""
  workdir = str(tmp_path / "run")
  args = train_args("fartrack", workdir, data_root, 100000, "--config.train.global_batch_size=8",
                    "--config.run.log_every_steps=2", "--config.run.checkpoint_every_steps=1000")
  launcher = subprocess.Popen([sys.executable, os.path.join(ROOT, "scripts", "launch_local.py"), "--processes=2",
                               "--devices_per_process=4", "--grace_s=1", "--", *args], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  lines = []
  try:
    for line in launcher.stdout:
      lines.append(line)
      if line.startswith("[0] ") and re.search(r"\[2\] .*train/loss=", line):
        launcher.send_signal(signal.SIGTERM)
        break
    lines.extend(launcher.stdout)
    launcher.wait(timeout=TIMEOUT_S)
  finally:
    if launcher.poll() is None:
      launcher.kill()
  log = "".join(lines)
  assert launcher.returncode == distributed.PREEMPTED_EXIT_STATUS, log[-3000:]
  assert log.count("preempted at step") == 2, log[-3000:]
  assert len(checkpoint_manager.committed_steps(workdir)) == 1
