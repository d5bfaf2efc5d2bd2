r"""Seconds from a SIGTERM to a committed checkpoint: what a preempted run needs of its grace period.

  python scripts/benchmark_preemption.py [--config configs/fartrack.py:variant=tiny] [--batch 4] \
      [--workdir_kind local|emulator|both] [--repeats 1] [--json FILE]

For each workdir kind: makes a small synthetic dataset, starts scripts/train.py (random init, logging every
step, no periodic checkpoints), sends SIGTERM once the first training step has been logged (so after the
compile, as a preemption mid-run would find it), and times until the process has exited with the
preemption status (75). `emulator` writes the workdir to a local Google Cloud Storage emulator
(tests/gcs_emulator.py: the same client libraries as on a TPU VM, against a local server) instead of a
local folder. Reports sigterm_to_exit_s (outside the process: signal sent to exit), commit_s (what the run
printed: notice to committed checkpoint) split into finish_step_s (SIGTERM to the agreed step's log line: the
step in flight must finish before its state exists) and save_s (the rest: the save and its commit), the step
saved, and checks that this step is committed (locally:
orbax's finalised steps; on the emulator: its `commit_success.txt`). Prints a table; --json writes the rows.
"""

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position

from fartrack_jax import cli  # pylint: disable=g-import-not-at-top,wrong-import-position
from fartrack_jax import distributed  # pylint: disable=g-import-not-at-top,wrong-import-position
from scripts.benchmarks import timing  # pylint: disable=g-import-not-at-top,wrong-import-position

_CONFIG = flags.DEFINE_string("config", "configs/fartrack.py:variant=tiny", "Config and variant to train.")
_BATCH = flags.DEFINE_integer("batch", 4, "Global batch.")
_KIND = flags.DEFINE_enum("workdir_kind", "both", ["local", "emulator", "both"], "Where the workdir is: a "
                          "local folder, the GCS emulator, or one row each (also --workdir-kind).")
_REPEATS = flags.DEFINE_integer("repeats", 1, "Preemptions per kind (rows).")
_TIMEOUT = flags.DEFINE_integer("timeout_s", 1800, "Give up on a run after this many seconds.")
_JSON = flags.DEFINE_string("json", None, "Write the rows as JSON here.")
BUCKET = "fartrack-bench"
COLUMNS = ("config", "workdir_kind", "batch", "step", "sigterm_to_exit_s", "commit_s", "finish_step_s", "save_s",
           "committed")


def _preempt_once(workdir: str, data_root: str, env: dict) -> dict:
  command = [sys.executable, os.path.join(ROOT, "scripts", "train.py"), "--config",
             os.path.join(ROOT, _CONFIG.value.split(":")[0]) + (":" + _CONFIG.value.split(":", 1)[1]
                                                                if ":" in _CONFIG.value else ""),
             "--workdir", workdir, "--data-root", f"got10k={data_root}",
             # The synthetic root is one GOT-10k-layout set: every config trains and validates on it alone.
             "--config.data.train.datasets_name=GOT10K_vottrain", "--config.data.train.datasets_ratio=1",
             "--config.data.val.datasets_name=GOT10K_vottrain",
             "--config.model.allow_random_init=True", "--config.model.pretrain_file=",
             f"--config.train.global_batch_size={_BATCH.value}", "--config.run.max_steps=100000",
             "--config.run.log_every_steps=1", "--config.run.checkpoint_every_steps=100000",
             "--config.run.val_every_steps=100000", "--config.run.num_workers=0"]
  proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  lines, logged, step_logged_at = [], threading.Event(), {}

  def pump():
    for line in proc.stdout:
      lines.append(line)
      found = re.search(r"\[(\d+)\] .*train/loss=", line)
      if found:
        step_logged_at.setdefault(int(found.group(1)), time.monotonic())
        logged.set()

  thread = threading.Thread(target=pump, daemon=True)
  thread.start()
  try:
    deadline = time.monotonic() + _TIMEOUT.value
    while not logged.wait(1.0):
      if proc.poll() is not None:
        thread.join(timeout=10)
        raise RuntimeError(f"train.py exited with {proc.returncode} before its first logged step:\n"
                           + "".join(lines)[-3000:])
      if time.monotonic() > deadline:
        raise RuntimeError(f"no training step logged within --timeout_s={_TIMEOUT.value}:\n"
                           + "".join(lines)[-3000:])
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    status = proc.wait(timeout=_TIMEOUT.value)
    exited = time.monotonic() - sent
  finally:
    if proc.poll() is None:
      proc.kill()
  thread.join(timeout=10)
  output = "".join(lines)
  found = re.search(r"preempted at step (\d+): checkpoint committed in ([\d.]+) s", output)
  if status != distributed.PREEMPTED_EXIT_STATUS or not found:
    raise RuntimeError(f"train.py exited with {status}, not the preemption status:\n{output[-3000:]}")
  step = int(found.group(1))
  # The state of the agreed step exists only once that step has run: on this CPU a Tiny step takes seconds
  # (on an accelerator, a fraction of one), so the time splits into finishing it and saving it.
  step_s = step_logged_at[step] - sent if step in step_logged_at else float("nan")
  return {"step": step, "sigterm_to_exit_s": exited, "commit_s": float(found.group(2)),
          "finish_step_s": max(step_s, 0.0), "save_s": float(found.group(2)) - max(step_s, 0.0)}


def main(argv):
  del argv
  from data_pipelines.training import synthetic_train  # pylint: disable=g-import-not-at-top
  from fartrack_jax.training import checkpoint_manager  # pylint: disable=g-import-not-at-top
  kinds = ["local", "emulator"] if _KIND.value == "both" else [_KIND.value]
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    data_root = os.path.join(tmp, "got10k")
    synthetic_train.make_synthetic_train_dataset("got10k_train", data_root, num_sequences=3, num_frames=24)
    for kind in kinds:
      server = None
      env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
      if kind == "emulator":
        from tests import gcs_emulator  # pylint: disable=g-import-not-at-top
        server = gcs_emulator.GcsEmulator(os.path.join(tmp, "gcs"), BUCKET)
        env.update(server.env)
      try:
        for repeat in range(_REPEATS.value):
          if kind == "local":
            workdir = os.path.join(tmp, f"run{repeat}")
          else:
            workdir = f"gs://{BUCKET}/run{repeat}"
          print(f"{kind} #{repeat}: training {_CONFIG.value}, SIGTERM after the first logged step ...", flush=True)
          row = _preempt_once(workdir, data_root, env)
          if kind == "local":
            row["committed"] = checkpoint_manager.committed_steps(workdir) == [row["step"]]
          else:
            row["committed"] = (f"run{repeat}/checkpoints/{row['step']}/commit_success.txt"
                                in server.objects(f"run{repeat}/checkpoints/"))
          row.update(config=_CONFIG.value, workdir_kind=kind, batch=_BATCH.value)
          print(f"{kind} #{repeat}: step {row['step']} committed {row['committed']}, SIGTERM to exit "
                f"{row['sigterm_to_exit_s']:.1f} s (commit {row['commit_s']:.1f} s)", flush=True)
          rows.append(row)
      finally:
        if server is not None:
          server.close()
  print()
  timing.report(rows, list(COLUMNS), _JSON.value)


if __name__ == "__main__":
  cli.run(main)
