r"""Trains one FARTrack stage; a run started again with the same --workdir resumes from its latest checkpoint.

  python scripts/train.py --config configs/fartrack.py:variant=tiny --workdir /tmp/fartrack_stage1 \
      --data-root got10k=/data/got10k --data-root lasot=/data/lasot/LaSOTBenchmark \
      --data-root coco=/data/coco --data-root trackingnet=/data/trackingnet \
      --config.model.pretrain_file=/data/pretrained/mae_tiny_distill_400e.pth.tar

Any config field can be overridden: `--config.train.global_batch_size=256`, `--config.run.fsdp=4`,
`--config.dtype=bfloat16`. The resolved config is written to <workdir>/config.json; TensorBoard events and
a text log of the metrics go to <workdir>, checkpoints to <workdir>/checkpoints.

Multi-host (TPU slices): start the same command on every host with --distributed=true (scripts/launch_tpu.sh
does): `jax.distributed.initialize()` then finds the other hosts itself. --distributed=auto (default) calls it
only when JAX_COORDINATOR_ADDRESS or a multi-host TPU_WORKER_HOSTNAMES is set (e.g. on GKE). Elsewhere give
--coordinator_address HOST:PORT --num_processes N --process_id I to every process; to rehearse a slice on
one machine, `scripts/launch_local.py --processes 2 --devices-per-process 4 -- scripts/train.py ...` does.
The workdir must be shared between hosts (gs://).

Exit status: 0 the run finished; 75 preempted (a SIGTERM to any process: every process saved the same
step, waited for it to be committed and printed `preempted at step N: ...`; start the same command again
to resume); 1 an error, named on one line `error: process I of N: ...` with what to do; 2 bad flags.
Where the time went is printed at the end (`goodput 87 %: ...`) and kept in <workdir>/goodput.json.
See docs/preemption_and_failures.md.
"""

import logging as py_logging
import os
import sys
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # TensorFlow (imported by clu) C++ INFO lines
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # pylint: disable=g-import-not-at-top
from absl import logging
from ml_collections import config_flags

from fartrack_jax import cli
from fartrack_jax import distributed
from fartrack_jax.training import goodput

# The launch's wall time, for the goodput accounting, counts from the start of this process.
_STARTED_AT = goodput.process_start_time()

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Stage config and variant, e.g. configs/fartrack.py:variant=tiny, "
    "configs/fartrack_distill.py, configs/fartrack_sparse.py:variant=smoke. Override fields with "
    "--config.<path>=<value>.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: config.json, TensorBoard events, "
                               "checkpoints. Reused = resumed.")
_DATA_ROOT = flags.DEFINE_multi_string(
    "data_root", [], "NAME=DIR: a training dataset root by name or family (got10k, lasot, coco, "
    "trackingnet, synthetic, or a training name like GOT10K_vottrain); repeatable (also --data-root). Same as "
    "--config.run.data_roots.NAME=DIR.")
distributed.define_flags()


class _QuietLibraries(py_logging.Filter):
  """Drops the INFO chatter of orbax (a dozen lines per checkpoint) and grain; keeps their warnings."""

  def filter(self, record):
    noisy = any(f"/{lib}/" in record.pathname for lib in ("orbax", "grain", "jax/_src"))
    return not noisy or record.levelno >= py_logging.WARNING


def _latest_checkpoint_note(workdir: str) -> str:
  """Where a relaunch resumes: the latest committed checkpoint (a step folder on a bucket that lacks orbax's
  commit marker is not one)."""
  from fartrack_jax.training import checkpoint_manager  # pylint: disable=g-import-not-at-top
  try:
    steps = checkpoint_manager.committed_steps(workdir)
  except Exception:  # pylint: disable=broad-except
    return ""
  return f" from step {max(steps)}, the latest committed checkpoint" if steps else " from the start (no " \
      "checkpoint is committed yet)"


def main(argv):
  if len(argv) > 1:
    raise SystemExit(f"unexpected arguments: {' '.join(argv[1:])}")
  if _CONFIG.value is None:
    raise SystemExit("--config is required (see --help)")
  if not _WORKDIR.value:
    raise SystemExit("--workdir is required (see --help)")
  import jax  # pylint: disable=g-import-not-at-top
  from fartrack_jax import config_lib  # pylint: disable=g-import-not-at-top
  from fartrack_jax.training import trainer  # pylint: disable=g-import-not-at-top
  try:
    distributed.initialize_from_flags(roll_call_dir=_WORKDIR.value)
  except distributed.DistributedError as e:
    raise SystemExit(f"error: {e}") from None
  config = _CONFIG.value
  for item in _DATA_ROOT.value:
    name, sep, root = item.partition("=")
    if not sep or not name or not root:
      raise SystemExit(f"--data-root {item!r}: expected NAME=DIR")
    with config.unlocked():
      config.run.data_roots[name] = root
  try:
    config_lib.validate_config(config)
  except ValueError as e:
    raise SystemExit(f"error: bad config: {e}") from None
  logging.set_verbosity(logging.INFO)
  quiet = _QuietLibraries()
  logging.get_absl_handler().addFilter(quiet)
  from fartrack_jax import storage  # pylint: disable=g-import-not-at-top
  try:
    storage.check_writable(_WORKDIR.value, "--workdir")
  except storage.StorageError as e:
    raise SystemExit(f"error: {e}") from None
  if jax.process_index() == 0:
    # The metric lines (clu's logging writer) and progress, also as a text file in the workdir (on a bucket:
    # kept locally, copied there every 30 s and at the end).
    file_handler = storage.log_file_handler(storage.as_path(_WORKDIR.value) / "train_log.txt")
    file_handler.setFormatter(py_logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    file_handler.addFilter(quiet)
    logging.get_absl_logger().addHandler(file_handler)
  from data_pipelines.training import datasets  # pylint: disable=g-import-not-at-top
  from fartrack_jax import convert  # pylint: disable=g-import-not-at-top
  from fartrack_jax.training import checkpoint_manager  # pylint: disable=g-import-not-at-top
  try:
    result = trainer.train(config, _WORKDIR.value, started_at=_STARTED_AT)
  except trainer.Preempted as e:
    distributed.mark_finished()
    print(e, flush=True)
    if e.goodput_line:
      print(e.goodput_line, flush=True)
    sys.exit(distributed.PREEMPTED_EXIT_STATUS)
  except (datasets.DatasetError, convert.ConversionError, FileNotFoundError, trainer.NonFiniteLossError,
          storage.StorageError, checkpoint_manager.ModelMismatchError) as e:
    if jax.process_count() == 1:
      raise SystemExit(f"error: {e}") from None
    distributed.exit_with_failure(str(e))
  except Exception as e:  # pylint: disable=broad-except
    line, resumable = distributed.describe_failure(e, distributed.current_phase())
    if resumable:  # a collective failed: because a peer failed for a reason of its own?
      cause = distributed.published_failure()
      line, resumable = (cause, False) if cause else (line, resumable)
    if not resumable and not isinstance(e, jax.errors.JaxRuntimeError) and not isinstance(e, trainer.DataError):
      traceback.print_exc()
    distributed.exit_with_failure(line + (_latest_checkpoint_note(_WORKDIR.value) if resumable else ""))
  distributed.mark_finished()
  print(f"done: step {result.step}; last train metrics "
        + ", ".join(f"{k}={v:.4g}" for k, v in sorted(result.last_metrics.items()) if k != "finite")
        + "; val " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(result.val_metrics.items()))
        + f"; skipped samples {result.skipped_samples}")
  if result.goodput_line:
    print(result.goodput_line)


if __name__ == "__main__":
  cli.run(main)
