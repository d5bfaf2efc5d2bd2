r"""Train-step throughput per stage and variant: the jitted train step on random weights and data.

  python scripts/benchmark_train.py [--configs fartrack:smoke,fartrack:tiny] [--batch 32] [--steps 10] \
      [--warmup 2] [--dtype float32|bfloat16] [--fsdp 1] [--clip-lengths 8,16,32] [--json FILE]

Each --configs entry is `<config>:<argument>` as for scripts/train.py (`fartrack:tiny`,
`fartrack_distill:variant=nano`, `fartrack_sparse:tiny`; one argument item each, since commas separate
the entries). For each: params, AdamW state and a random batch of the stage's shapes on a mesh over all
local devices (--fsdp devices along the parameter-sharding axis), the train step compiled ahead of time
(compile_s), --warmup untimed steps, then --steps timed steps with block_until_ready after each. Reports
median/min ms per step, samples/s (global batch / median; a sample is a clip in stage 3), achieved
TFLOP/s (XLA's cost analysis of the compiled step; the jaxpr's matmul count where matmuls run in loops,
as in stage 3), its fraction of the devices' dense peak (GPU/TPU only), and peak memory (device peak
bytes; on CPU the process's max RSS; either includes the rows run before in the same process).
Stage-3 entries (fartrack_sparse) give one row per --clip-lengths value. Prints a table; --json writes a list of rows
{"config", "variant", "stage", "batch", "dtype", "device", "num_devices", "compile_s", "median_ms",
"min_ms", "samples_per_s", "flops_per_step", "achieved_tflops", "peak_fraction", "peak_memory_mb", ...}.
Details: scripts/benchmarks/training.py.

--trainer_overhead: instead, per row, the mean ms per step of `trainer.train` (NaN guard, metrics, progress,
preemption checks, goodput; fed one repeated host batch, no input pipeline) against a bare loop of the
same jitted step fed the same way (upload + step), over --windows windows of --steps steps each way, medians
over the windows (the trainer runs one window more: the first holds its compile and is not counted):
columns bare_ms, trainer_ms, overhead_pct, windows (`scripts/benchmarks/training.py::overhead_row`).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags  # pylint: disable=g-import-not-at-top

from fartrack_jax import cli

_CONFIGS = flags.DEFINE_list("configs", ["fartrack:smoke", "fartrack:tiny"], "Rows to time, "
                             "<config>:<argument>, e.g. fartrack:tiny,fartrack_distill:tiny,fartrack_sparse:tiny.")
_BATCH = flags.DEFINE_integer("batch", None, "Global batch of every row (default: the smoke variant's "
                              "config batch, 32 for the others). Must divide over the devices.")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps per row; median and min are over these.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps after compiling.")
_DTYPE = flags.DEFINE_enum("dtype", None, ["float32", "bfloat16"], "Compute dtype of every row (params "
                           "and optimizer state stay float32). Default: each config's own, float32.")
_FSDP = flags.DEFINE_integer("fsdp", 1, "Devices along the FSDP (parameter-sharding) mesh axis; 1 = "
                             "params replicated, pure data parallel. Must divide the device count.")
_CLIP_LENGTHS = flags.DEFINE_list("clip_lengths", [], "Stage 3 (fartrack_sparse) only: one row per clip "
                                  "length, e.g. 8,16,32 (default: the config's data.search.number; also "
                                  "--clip-lengths).")
_JSON = flags.DEFINE_string("json", None, "Write the rows as JSON here.")
_WINDOWS = flags.DEFINE_integer("windows", 1, "--trainer_overhead: windows of --steps steps each way; the "
                                "figures are the medians over the windows (use 3 or more on a shared machine).")
_OVERHEAD = flags.DEFINE_bool("trainer_overhead", False, "Time the training loop's overhead per step against "
                              "a bare loop of the same jitted step instead of the step alone (also "
                              "--trainer-overhead).")


def main(argv):
  del argv
  from scripts.benchmarks import timing as benchmark  # pylint: disable=g-import-not-at-top
  from scripts.benchmarks import training as train_benchmark  # pylint: disable=g-import-not-at-top
  try:
    clip_lengths = [int(n) for n in _CLIP_LENGTHS.value]
  except ValueError:
    raise app.UsageError(f"--clip-lengths={','.join(_CLIP_LENGTHS.value)} must be integers") from None
  try:
    # Every entry is loaded and checked here, before the first (slow) row starts.
    train_benchmark.plan_rows(_CONFIGS.value, batch=_BATCH.value, dtype=_DTYPE.value,
                              clip_lengths=clip_lengths, fsdp=_FSDP.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  if _OVERHEAD.value:
    rows = []
    for row in train_benchmark.plan_rows(_CONFIGS.value, batch=_BATCH.value, dtype=_DTYPE.value,
                                         clip_lengths=clip_lengths, fsdp=_FSDP.value):
      print(f"{row.name}: batch {row.batch}, bare loop and trainer, {_STEPS.value} steps each ...", flush=True)
      rows.append(train_benchmark.overhead_row(row, steps_timed=_STEPS.value, warmup=_WARMUP.value,
                                               fsdp=_FSDP.value, windows=_WINDOWS.value))
      print(f"{row.name}: bare {rows[-1]['bare_ms']:.1f} ms/step, trainer {rows[-1]['trainer_ms']:.1f} ms/step "
            f"({rows[-1]['overhead_pct']:+.1f} %)", flush=True)
    print()
    benchmark.report(rows, list(train_benchmark.OVERHEAD_COLUMNS), _JSON.value)
    return
  rows = train_benchmark.run_benchmarks(_CONFIGS.value, batch=_BATCH.value, steps_timed=_STEPS.value,
                                        warmup=_WARMUP.value, dtype=_DTYPE.value, fsdp=_FSDP.value,
                                        clip_lengths=clip_lengths, log=lambda s: print(s, flush=True))
  print()
  benchmark.report(rows, list(train_benchmark.COLUMNS), _JSON.value)


if __name__ == "__main__":
  cli.run(main)
