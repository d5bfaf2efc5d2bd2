r"""Runs the tracker over a benchmark and writes pytracking result files (resumable).

  python scripts/evaluate.py --config configs/fartrack_sparse.py:variant=tiny --checkpoint PARAMS_OR_PTH \
      --dataset got10k_val --data-root /data/got10k --results-dir results/fartrack_tiny/got10k_val \
      [--sequences a,b] [--batch-sequences 8]

--checkpoint is an orbax params directory written by scripts/convert_torch.py, or an original .pth.tar
(converted in memory). Sequences already complete in --results-dir are skipped, so a killed run resumes.
--submission-zip F packages got10k_test / trackingnet results in the server's format.
--json F writes {"frames", "seconds", "frames_per_s", "batch"} of the run (compile included) to F.
--batch-sequences N tracks N sequences at once (vmapped, and sharded over all local devices when N divides
over them); results are identical to tracking them one at a time with the same N.
Several processes (hosts of a TPU slice: --distributed=true; one machine: scripts/launch_local.py, which
passes --coordinator_address/--num_processes/--process_id) share one --results-dir: each tracks its own
share of the sequences (similar frame counts) on its own devices; the files are the same as one process's.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # pylint: disable=g-import-not-at-top
from ml_collections import config_flags

from fartrack_jax import cli
from fartrack_jax import config_lib
from fartrack_jax import distributed

_CONFIG = config_flags.DEFINE_config_file("config", None, "Sparse-stage config, e.g. "
                                          "configs/fartrack_sparse.py:variant=nano.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Orbax params directory or original .pth.tar.")
_DATASET = flags.DEFINE_string("dataset", None, "Benchmark: got10k_val, got10k_test, lasot, lasot_ext, "
                               "trackingnet, nfs, uav123, otb.")
_DATA_ROOT = flags.DEFINE_string("data_root", None, "The benchmark's root folder in its native layout "
                                 "(also --data-root).")
_RESULTS_DIR = flags.DEFINE_string("results_dir", None, "Where <seq>.txt and <seq>_time.txt go "
                                   "(also --results-dir).")
_SEQUENCES = flags.DEFINE_list("sequences", None, "Only these sequences.")
_BATCH = flags.DEFINE_integer("batch_sequences", 1, "Sequences tracked at once (also --batch-sequences).")
_SUBMISSION = flags.DEFINE_string("submission_zip", None, "got10k_test / trackingnet: also package the "
                                  "results in the server's format into this zip (also --submission-zip).")
_JSON = flags.DEFINE_string("json", None, "Write the run's frames, seconds, frames/s and batch as JSON here.")
_SHARD = flags.DEFINE_bool("shard", True, "Shard the batch over all local devices when it divides.")
distributed.define_flags()


def main(argv):
  del argv
  for name, value in (("--config", _CONFIG.value), ("--checkpoint", _CHECKPOINT.value),
                      ("--dataset", _DATASET.value), ("--data-root", _DATA_ROOT.value),
                      ("--results-dir", _RESULTS_DIR.value)):
    if not value:
      raise SystemExit(f"{name} is required (see --help)")
  try:
    distributed.initialize_from_flags(roll_call_dir=_RESULTS_DIR.value)
  except distributed.DistributedError as e:
    raise SystemExit(f"error: {e}") from None
  import jax  # pylint: disable=g-import-not-at-top
  from data_pipelines.evaluation import readers  # pylint: disable=g-import-not-at-top
  from fartrack_jax.tracking import evaluate  # pylint: disable=g-import-not-at-top
  config = config_lib.validate_config(_CONFIG.value)
  try:
    sequences = readers.load_dataset(_DATASET.value, _DATA_ROOT.value, _SEQUENCES.value)
  except ValueError as e:
    raise SystemExit(f"error: {e}") from None
  params = evaluate.params_for(config, _CHECKPOINT.value)
  mesh = None
  n = jax.local_device_count()
  if _SHARD.value and n > 1 and _BATCH.value % n == 0:
    from fartrack_jax import sharding  # pylint: disable=g-import-not-at-top
    mesh = sharding.data_mesh(n)
  share = evaluate.process_share(sequences, jax.process_index(), jax.process_count())
  print(f"{len(sequences)} sequences of {_DATASET.value}"
        + (f", {len(share)} of them on process {jax.process_index()} of {jax.process_count()}"
           if jax.process_count() > 1 else "")
        + f"; batch {_BATCH.value}; devices {n}{' (sharded)' if mesh is not None else ''}", flush=True)
  try:
    run = evaluate.evaluate(config, params, share, _RESULTS_DIR.value, _BATCH.value, mesh,
                            log=lambda msg: print(msg, flush=True))
  except FileNotFoundError as e:  # an unreadable frame; the sequences finished before it are written
    raise SystemExit(f"error: {e}") from None
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices("evaluate: every share tracked")
  distributed.mark_finished()
  if _JSON.value and jax.process_index() == 0:
    import json  # pylint: disable=g-import-not-at-top
    from fartrack_jax import storage  # pylint: disable=g-import-not-at-top
    # Under several processes these are process 0's share of the run.
    fields = {"frames": run["frames"], "seconds": run["seconds"], "frames_per_s": run["frames_per_s"],
              "batch": _BATCH.value, "processes": jax.process_count()}
    storage.write_text_atomic(_JSON.value, json.dumps(fields, indent=1) + "\n")
  if _SUBMISSION.value and jax.process_index() == 0:
    path = evaluate.package_submission(_RESULTS_DIR.value, _DATASET.value, sequences, _SUBMISSION.value)
    print(f"wrote the {_DATASET.value} submission {path}")


if __name__ == "__main__":
  cli.run(main)
