"""Train-step throughput of each stage: the jitted step of `steps.make_train_step` on random data.

A row is one config (`fartrack:tiny`, `fartrack_distill:smoke`, ...) at one global batch (and, for stage 3,
one clip length). For each row: random float32 params built directly in their shardings on a `(data, fsdp)`
mesh over all local devices, the stage's optimizer (`optim.make_optimizer`), a random batch of the stage's
shapes on the mesh, the step lowered and compiled ahead of time (timed apart: `compile_s`), then `warmup`
untimed and `steps` timed calls of the compiled step, each followed by `jax.block_until_ready`.

What a row reports:
  - `median_ms`, `min_ms`: wall time of one step; `samples_per_s` = batch / median (a sample is a frame
    pair in stages 1 and 2, a whole clip in stage 3).
  - `flops_per_step`: XLA's `cost_analysis()` of the compiled step times the device count (XLA counts one
    device's partition of an SPMD program; work that data parallelism replicates, such as the optimizer
    update of replicated params, is counted on every device) -- unless the step runs matrix multiplies
    inside loops (stage 3 scans over frames): XLA counts a loop body once, so then it is the matmul count of
    the step's jaxpr with each scan body times its length (`matmul_flops`). `flops_source` says which;
    both counts are in the row (`xla_flops_per_step`, `matmul_flops_per_step`), and `flops_lower_bound` is
    true when matmuls sit in a while loop of unknown trip count. `achieved_tflops` = flops / median.
  - `peak_fraction`: achieved over the dense peak of all devices (`PEAK_TFLOPS`) at `dtype`; null on CPU
    and on an accelerator missing from the table.
  - `peak_memory_mb`: the largest `peak_bytes_in_use` of the local devices when the backend reports it
    (GPU, TPU), else the process's max resident set size (`peak_memory_source` says which). Both are
    peaks over the process's life so far: a row includes the rows run before it in the same process, so
    run rows in separate processes for exact per-row numbers.
  - `step_memory_mb`: XLA's memory analysis of the compiled step on one device (arguments + outputs +
    temporaries - donated aliases): what the step itself needs, comparable across rows.

Stages 1 and 2 use `stages.frame_loss_fn` and `stages.batch_spec`. Stage 3 rows (one per clip length) take
their loss and batch shapes from `fartrack_jax/training/sparse.py` (`sequence_loss_fn(config)`,
`clip_batch_spec(config, batch_size, clip_length)`); where that module is missing or lacks either function,
`run_benchmarks` skips them with a note. The random batch follows the spec's names and dtypes
(`random_batch`), so a new batch layout needs no change here as long as it uses the same conventions.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import resource
import statistics
import sys
import time
from typing import Any, Callable

import jax
import numpy as np

from fartrack_jax import config_lib
from fartrack_jax import model as model_lib
from fartrack_jax.training import losses, optim, sparse, stages, steps

# Global batch of a row when --batch is not given: the smoke variant keeps its config's, others use this.
DEFAULT_BATCH = 32
COLUMNS = ("config", "stage", "batch", "clip_length", "dtype", "compile_s", "median_ms", "min_ms",
           "samples_per_s", "achieved_tflops", "peak_fraction", "step_memory_mb", "peak_memory_mb", "device")

# Dense peak TFLOP/s of one device (chip) at the precision JAX uses by default for each dtype, first match
# of the substring in `device_kind` wins. float32 matmuls run as TF32 on Ampere and later NVIDIA GPUs and as
# bfloat16 passes on TPU by default (jax_default_matmul_precision), so those are the float32 peaks here.
# Vendor data-sheet numbers without sparsity; SXM parts unless the kind says PCIe.
PEAK_TFLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    ("H100 PCIe", {"bfloat16": 756.0, "float32": 378.0}),
    ("H100", {"bfloat16": 989.4, "float32": 494.7}),
    ("H200", {"bfloat16": 989.4, "float32": 494.7}),
    ("A100", {"bfloat16": 312.0, "float32": 156.0}),
    ("TPU v4", {"bfloat16": 275.0, "float32": 275.0}),
    ("TPU v5 lite", {"bfloat16": 197.0, "float32": 197.0}),
    ("TPU v5e", {"bfloat16": 197.0, "float32": 197.0}),
    ("TPU v5", {"bfloat16": 459.0, "float32": 459.0}),  # v5p reports itself as "TPU v5"
    ("TPU v6 lite", {"bfloat16": 918.0, "float32": 918.0}),
    ("TPU v6e", {"bfloat16": 918.0, "float32": 918.0}),
)


@dataclasses.dataclass(frozen=True)
class Row:
  """One benchmark row: `name` as given on the command line, its config, global batch and clip length."""
  name: str
  config: Any
  batch: int
  clip_length: int | None = None


def parse_config_name(name: str) -> tuple[str, str]:
  """`"fartrack_distill:tiny"` -> ("fartrack_distill", "tiny"); the part after ':' is the config argument
  (`configs/<stage>.py:<arg>`, e.g. `variant=nano,seed=1`; the command line's comma-separated --configs
  allows one item), empty = the config's default variant.

  Raises:
    ValueError: naming the entry and the allowed stages when the part before ':' is not a config.
  """
  stage, _, arg = name.strip().partition(":")
  if stage not in config_lib.STAGES:
    raise ValueError(f"--configs entry {name!r}: unknown config {stage!r}; allowed: "
                     f"{', '.join(config_lib.STAGES)} (written <config>:<variant>, e.g. fartrack:tiny)")
  return stage, arg


def load_config(name: str, dtype: str | None = None):
  """The validated config of a `--configs` entry, its compute dtype overridden by `dtype` when given."""
  stage, arg = parse_config_name(name)
  if dtype is not None and dtype not in config_lib.DTYPES:
    raise ValueError(f"--dtype={dtype!r} is not one of {config_lib.DTYPES}")
  try:
    config = importlib.import_module(f"configs.{stage}").get_config(arg or None)
  except ValueError as e:
    raise ValueError(f"--configs entry {name!r}: {e}") from None
  if dtype is not None:
    config.dtype = dtype
  return config_lib.validate_config(config)


def default_batch(config) -> int:
  """The smoke variant's own global batch; `DEFAULT_BATCH` for the real variants."""
  return int(config.train.global_batch_size) if config.variant == "smoke" else DEFAULT_BATCH


def stage_functions(config, batch_size: int, clip_length: int | None = None):
  """The row's `loss_fn(params, batch, rng)` and batch spec `{name: ShapeDtypeStruct}`."""
  if config.stage in stages.FRAME_STAGES:
    return stages.frame_loss_fn(config), stages.batch_spec(config, batch_size)
  if clip_length is None:
    clip_length = int(config.data.search.number)
  return sparse.sequence_loss_fn(config), sparse.clip_batch_spec(config, batch_size, clip_length)


def random_target_tokens(rng: np.random.Generator, shape, bins: int, coord_range: int) -> np.ndarray:
  """int32 `[..., 4]` coordinate tokens (x0, y0, x1, y1) in [0, bins * range) with x0 < x1 and y0 < y1."""
  n = losses.num_coordinate_classes(bins, coord_range)
  if n < 2:
    raise ValueError(f"model.bins * model.range = {n}: need at least 2 coordinate classes for a box")
  lead = tuple(shape[:-1])
  low = rng.integers(0, n - 1, lead + (2,))
  high = low + 1 + (rng.random(lead + (2,)) * (n - 1 - low)).astype(np.int64)
  return np.concatenate([low, high], -1).astype(np.int32)


def random_batch(spec: dict, config, seed: int = 0) -> dict[str, np.ndarray]:
  """Random host arrays of the shapes and dtypes of `spec` (a frame batch or a stage-3 clip batch).

  By name and dtype:
    - `<x>_frames` uint8 [..., H, W, 3] (clip canvases) and other uint8 arrays: uniform in [0, 255];
    - `<x>_sizes` integer [..., 2] beside `<x>_frames`: the canvas's (H, W) (the whole canvas is image);
    - `<x>_boxes` float [..., 4] beside `<x>_frames`: (x, y, w, h) canvas pixels, w and h 10-40% of the
      canvas, inside it;
    - other integer arrays ending in 4: box tokens (`random_target_tokens`); other integers uniform in
      [0, bins * range);
    - other float arrays named `*box*` ending in 4: the corners of those tokens
      (`losses.tokens_to_corners`; the same tokens when the leading shapes match);
    - other floats standard normal (normalised pixels); booleans True (every token kept).
  """
  rng = np.random.default_rng(seed)
  bins, coord_range = int(config.model.bins), int(config.model.range)
  n = losses.num_coordinate_classes(bins, coord_range)
  tokens_by_lead: dict[tuple, np.ndarray] = {}

  def tokens(shape):
    lead = tuple(shape[:-1])
    if lead not in tokens_by_lead:
      tokens_by_lead[lead] = random_target_tokens(rng, shape, bins, coord_range)
    return tokens_by_lead[lead]

  def canvas_of(name, suffix):
    frames = spec.get(name[:-len(suffix)] + "_frames") if name.endswith(suffix) else None
    return tuple(frames.shape[-3:-1]) if frames is not None and len(frames.shape) >= 3 else None

  out = {}
  # Integer arrays first, so that box corners reuse the tokens of the same leading shape.
  for name in sorted(spec, key=lambda k: not np.issubdtype(spec[k].dtype, np.integer)):
    shape, dtype = tuple(spec[name].shape), np.dtype(spec[name].dtype)
    last = shape[-1] if shape else None
    if dtype == np.bool_:
      out[name] = np.ones(shape, bool)
    elif dtype == np.uint8:
      out[name] = rng.integers(0, 256, shape, dtype=np.uint8)
    elif np.issubdtype(dtype, np.integer) and last == 2 and canvas_of(name, "_sizes"):
      out[name] = np.broadcast_to(np.asarray(canvas_of(name, "_sizes")), shape).astype(dtype)
    elif np.issubdtype(dtype, np.integer):
      out[name] = (tokens(shape) if last == 4 else rng.integers(0, n, shape)).astype(dtype)
    elif last == 4 and canvas_of(name, "_boxes"):
      h, w = canvas_of(name, "_boxes")
      size = rng.uniform(0.1, 0.4, shape[:-1] + (2,)) * np.array([w, h])
      corner = rng.uniform(0.0, 1.0, shape[:-1] + (2,)) * (np.array([w, h]) - size)
      out[name] = np.concatenate([corner, size], -1).astype(dtype)
    elif "box" in name and last == 4:
      out[name] = np.asarray(losses.tokens_to_corners(tokens(shape), bins, coord_range)).astype(dtype)
    else:
      out[name] = rng.standard_normal(shape).astype(dtype)
  return {name: out[name] for name in spec}


def peak_tflops(device_kind: str, platform: str, dtype: str) -> float | None:
  """Dense peak TFLOP/s of one device at `dtype`, or None on CPU and for kinds not in `PEAK_TFLOPS`."""
  if platform == "cpu":
    return None
  for key, peaks in PEAK_TFLOPS:
    if key.lower() in device_kind.lower():
      return peaks[dtype]
  return None


def device_description(devices=None) -> dict:
  """`device` ("gpu: 1 x NVIDIA H100 80GB HBM3", "cpu: 1 x cpu, 2 cores"), `num_devices`, `cores`,
  `platform`, `device_kind` of the local devices."""
  devices = list(jax.local_devices() if devices is None else devices)
  d = devices[0]
  cores = os.cpu_count()
  text = f"{d.platform}: {len(devices)} x {d.device_kind}"
  if d.platform == "cpu":
    text += f", {cores} cores"
  return {"device": text, "num_devices": len(devices), "cores": cores, "platform": d.platform,
          "device_kind": d.device_kind}


def _compiled_memory_mb(compiled) -> float | None:
  """XLA's own accounting of one device's memory for the compiled step: arguments + outputs + temporaries,
  minus what donation aliases. Independent of what else the process holds, so it is the number that
  follows the clip length or the batch (the process peaks below include the runtime's baseline)."""
  try:
    m = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if m is None:
    return None
  total = (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
           - m.alias_size_in_bytes)
  return total / 2 ** 20


def peak_memory_mb(devices=None) -> tuple[float, str]:
  """(MB, source): the largest device `peak_bytes_in_use` when reported, else the process max RSS."""
  peaks = []
  for d in (jax.local_devices() if devices is None else devices):
    try:
      stats = d.memory_stats()
    except Exception:  # pylint: disable=broad-except
      stats = None
    if stats and "peak_bytes_in_use" in stats:
      peaks.append(int(stats["peak_bytes_in_use"]))
  if peaks:
    return max(peaks) / 2 ** 20, "device_peak_bytes_in_use"
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  # Linux reports KiB, macOS bytes.
  return (rss / 2 ** 20 if sys.platform == "darwin" else rss / 2 ** 10), "process_max_rss"


@dataclasses.dataclass(frozen=True)
class MatmulCount:
  """Matrix-multiply FLOPs of a jaxpr (2 per multiply-add), loop bodies times their trip counts."""
  flops: float
  in_loops: bool  # some of them sit in a scan of length > 1 or a while loop
  unbounded: bool  # some sit in a while loop, whose trip count is unknown: counted once (a lower bound)


def matmul_flops(jaxpr) -> MatmulCount:
  """Counts `dot_general` (2 * lhs size * rhs free size) and `conv_general_dilated` (2 * output size *
  kernel size / output features) FLOPs of a (closed) jaxpr, through every nested jaxpr: a `scan` body
  times its length, a `cond` by its costliest branch, a `while` body once.

  XLA's `cost_analysis()` counts a loop body once whatever its trip count, so for steps that scan over
  frames (stage 3) this is the count that scales with the clip length.
  """
  from jax.extend import core as jex_core  # pylint: disable=g-import-not-at-top
  jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
  total, in_loops, unbounded = 0.0, False, False
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "dot_general":
      (_, rhs_contract), (_, rhs_batch) = eqn.params["dimension_numbers"]
      lhs, rhs = (tuple(v.aval.shape) for v in eqn.invars[:2])
      rhs_free = [n for i, n in enumerate(rhs) if i not in rhs_contract and i not in rhs_batch]
      total += 2.0 * float(np.prod(lhs)) * float(np.prod(rhs_free))
    elif name == "conv_general_dilated":
      out, rhs = tuple(eqn.outvars[0].aval.shape), tuple(eqn.invars[1].aval.shape)
      out_features = rhs[eqn.params["dimension_numbers"].rhs_spec[0]]
      total += 2.0 * float(np.prod(out)) * float(np.prod(rhs)) / out_features
    inner = [matmul_flops(j) for j in jex_core.jaxprs_in_params(eqn.params)]
    if not inner:
      continue
    if name == "cond":
      total += max(c.flops for c in inner)
    else:
      times = int(eqn.params["length"]) if name == "scan" else 1
      total += times * sum(c.flops for c in inner)
      if any(c.flops for c in inner) and (times > 1 or name == "while"):
        in_loops = True
      unbounded |= name == "while" and any(c.flops for c in inner)
    in_loops |= any(c.in_loops for c in inner)
    unbounded |= any(c.unbounded for c in inner)
  return MatmulCount(total, in_loops, unbounded)


def _flops(compiled) -> float:
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # Older jax: one dict per program.
    analysis = analysis[0] if analysis else {}
  return float((analysis or {}).get("flops", 0.0))


@dataclasses.dataclass
class _StepSetup:
  loss_fn: Callable
  spec: dict
  devices: list
  mesh: Any
  state: Any
  train_step: Any


def _step_setup(row: Row, *, fsdp: int, seed: int, loss_fn, spec, chained: bool = False) -> _StepSetup:
  """What both timings start from: the stage's loss and batch spec (unless given), the mesh over this host's
  devices with the batch checked against it, the initial state in its shardings, and the jitted train step
  (`chained`: the form `trainer.train` runs, taking the previous step's `finite`)."""
  config = row.config
  if loss_fn is None or spec is None:
    loss_fn, spec = stage_functions(config, row.batch, row.clip_length)
  devices = jax.local_devices()
  mesh = steps.make_train_mesh(fsdp, devices=devices)
  steps.check_global_batch(row.batch, mesh)
  model = model_lib.build_model(config, "float32")
  init_key = jax.random.PRNGKey(seed)
  param_shapes = jax.eval_shape(lambda: model_lib.init_params(model, init_key))
  tx, schedules = optim.make_optimizer(config, param_shapes)
  init, shardings = steps.make_sharded_init(lambda: model_lib.init_params(model, init_key), tx, seed, mesh)
  train_step = steps.make_train_step(loss_fn, tx, shardings, mesh, schedules, chained=chained)
  return _StepSetup(loss_fn, spec, devices, mesh, init(), train_step)


def benchmark_row(row: Row, *, steps_timed: int = 10, warmup: int = 2, fsdp: int = 1, seed: int = 0,
                  loss_fn=None, spec: dict | None = None) -> dict:
  """Compiles and times the train step of one row; returns the row's JSON dict (see the module doc).

  `loss_fn` and `spec` default to `stage_functions(row.config, row.batch, row.clip_length)`.

  Raises:
    ValueError: bad `steps_timed`/`warmup`, or a batch that does not split over the devices.
  """
  if steps_timed < 1:
    raise ValueError(f"--steps={steps_timed} must be >= 1")
  if warmup < 0:
    raise ValueError(f"--warmup={warmup} must be >= 0")
  config = row.config
  setup = _step_setup(row, fsdp=fsdp, seed=seed, loss_fn=loss_fn, spec=spec)
  devices, state = setup.devices, setup.state
  batch = jax.device_put(random_batch(setup.spec, config, seed), steps.batch_sharding(setup.mesh))

  start = time.perf_counter()
  traced = setup.train_step.trace(state, batch)
  compiled = traced.lower().compile()
  compile_s = time.perf_counter() - start
  xla_flops = _flops(compiled) * len(devices)
  step_memory_mb = _compiled_memory_mb(compiled)
  matmuls = matmul_flops(traced.jaxpr)  # global shapes: the whole step, all devices
  # XLA counts a loop body once: where matmuls sit in loops (stage 3's frames), the jaxpr count is the one
  # that follows the work.
  flops, flops_source = ((matmuls.flops, "jaxpr_matmuls") if matmuls.in_loops
                         else (xla_flops, "xla_cost_analysis"))

  for _ in range(warmup):
    state, metrics = compiled(state, batch)
    jax.block_until_ready((state, metrics))
  times = []
  for _ in range(steps_timed):
    start = time.perf_counter()
    state, metrics = compiled(state, batch)
    jax.block_until_ready((state, metrics))
    times.append((time.perf_counter() - start) * 1e3)
  metrics = jax.device_get(metrics)

  median_ms = statistics.median(times)
  desc = device_description(devices)
  achieved = flops / (median_ms / 1e3) / 1e12 if flops else None
  peak = peak_tflops(desc["device_kind"], desc["platform"], config.dtype)
  memory_mb, memory_source = peak_memory_mb(devices)
  return {
      "config": row.name, "variant": config.variant, "stage": config.stage, "batch": row.batch,
      "clip_length": row.clip_length, "dtype": config.dtype, "device": desc["device"],
      "num_devices": desc["num_devices"], "cores": desc["cores"], "fsdp": fsdp,
      "compile_s": compile_s, "median_ms": median_ms, "min_ms": min(times),
      "samples_per_s": row.batch / (median_ms / 1e3), "steps": steps_timed, "warmup": warmup,
      "flops_per_step": flops, "flops_source": flops_source, "xla_flops_per_step": xla_flops,
      "matmul_flops_per_step": matmuls.flops, "flops_lower_bound": matmuls.unbounded,
      "achieved_tflops": achieved,
      "peak_fraction": (achieved / (peak * desc["num_devices"]) if achieved and peak else None),
      "peak_memory_mb": memory_mb, "peak_memory_source": memory_source, "step_memory_mb": step_memory_mb,
      "final_loss": float(metrics["loss"]), "finite": bool(metrics["finite"]), "jax": jax.__version__,
  }


def plan_rows(configs, *, batch: int | None = None, dtype: str | None = None, clip_lengths=None,
              fsdp: int = 1) -> list[Row]:
  """The rows of `configs` (`--configs` entries): every config loaded and every batch checked against the
  local devices before anything runs.

  Stage 3 gives one row per clip length (`clip_lengths`, default the config's `data.search.number`).

  Raises:
    ValueError: naming the flag (`--configs` entry, `--batch`, `--fsdp`, `--clip-lengths`) that is wrong.
  """
  if not configs:
    raise ValueError("--configs is empty; give at least one, e.g. fartrack:smoke")
  if batch is not None and batch < 1:
    raise ValueError(f"--batch={batch} must be >= 1")
  lengths = [int(n) for n in clip_lengths or ()]
  if any(n < 1 for n in lengths):
    raise ValueError(f"--clip-lengths={','.join(map(str, lengths))}: every length must be >= 1")
  num_devices = jax.local_device_count()
  if fsdp < 1 or num_devices % fsdp:
    raise ValueError(f"--fsdp={fsdp} does not divide the {num_devices} local devices")
  rows = []
  for name in configs:
    config = load_config(name, dtype)
    size = batch if batch is not None else default_batch(config)
    if size % num_devices:
      raise ValueError(f"--configs entry {name!r}: a global batch of {size} does not split over the "
                       f"{num_devices} local devices; give --batch as a multiple of {num_devices}")
    if config.stage == "fartrack_sparse":
      for n in lengths or [int(config.data.search.number)]:
        rows.append(Row(name, config, size, n))
    else:
      rows.append(Row(name, config, size))
  return rows


def run_benchmarks(configs, *, batch: int | None = None, steps_timed: int = 10, warmup: int = 2,
                   dtype: str | None = None, fsdp: int = 1, clip_lengths=None,
                   log: Callable[[str], None] = print) -> list[dict]:
  """Benchmarks every row of `configs` in turn (see `plan_rows`). Returns the rows' dicts."""
  results = []
  for row in plan_rows(configs, batch=batch, dtype=dtype, clip_lengths=clip_lengths, fsdp=fsdp):
    label = row.name + (f" (clip length {row.clip_length})" if row.clip_length is not None else "")
    loss_fn, spec = stage_functions(row.config, row.batch, row.clip_length)
    log(f"{label}: batch {row.batch}, {row.config.dtype}, compiling ...")
    result = benchmark_row(row, steps_timed=steps_timed, warmup=warmup, fsdp=fsdp, loss_fn=loss_fn, spec=spec)
    log(f"{label}: compile {result['compile_s']:.1f} s, median {result['median_ms']:.1f} ms/step, "
        f"{result['samples_per_s']:.1f} samples/s")
    results.append(result)
  return results


OVERHEAD_COLUMNS = ("config", "stage", "batch", "dtype", "steps", "windows", "bare_ms", "trainer_ms", "overhead_pct",
                    "device")


def overhead_row(row: Row, *, steps_timed: int = 20, warmup: int = 3, fsdp: int = 1, seed: int = 0,
                 loss_fn=None, spec: dict | None = None, windows: int = 1) -> dict:
  """What `trainer.train` adds per step to the jitted step it runs (the NaN guard, metrics, progress,
  preemption checks, goodput), against a bare loop of the same step fed the same way, window by window.

  Trainer: `trainer.train` on the same loss, fed the same host batch by an iterator that repeats it (no input
  pipeline: its cost is the pipeline's, not the loop's), logging every `steps_timed` steps. Bare: inside
  the trainer's log callback after each of its first `windows` windows (the first one holds the compile),
  `steps_timed` times upload the host batch (`steps.device_batch`, as the trainer does) and call the chained
  step of `steps.make_train_step` (its own copy of the state, compiled in `max(warmup, 1)` steps before the
  trainer starts), then one `block_until_ready`. Trainer window k: from the return of the callback at log k to the callback at log
  k+1 (one log's work included). So each bare window is followed by its trainer window, and a machine whose
  speed drifts (a shared VM's does, by tens of percent within minutes) moves both alike.

  Reported: the median over the windows of each one's mean ms per step, and `overhead_pct`, the median over
  the pairs of (trainer window / bare window - 1)."""
  import tempfile  # pylint: disable=g-import-not-at-top
  from fartrack_jax.training import trainer  # pylint: disable=g-import-not-at-top
  config = row.config
  setup = _step_setup(row, fsdp=fsdp, seed=seed, loss_fn=loss_fn, spec=spec, chained=True)
  devices, mesh, train_step, loss_fn = setup.devices, setup.mesh, setup.train_step, setup.loss_fn
  host_batch = random_batch(setup.spec, config, seed)
  data_sharding = steps.batch_sharding(mesh)
  bare_run = {"state": setup.state, "window": steps.new_window(mesh)}

  def bare_steps(n: int) -> None:
    state, window = bare_run["state"], bare_run["window"]
    for _ in range(n):
      state, window = train_step(state, steps.device_batch(host_batch, data_sharding), window)
    jax.block_until_ready((state, window))
    bare_run.update(state=state, window=window)

  bare_steps(max(warmup, 1))  # compiles

  run = config_lib.validate_config(config)
  with run.unlocked():
    run.model.allow_random_init = True
    run.model.pretrain_file = run.model.pretrain_pth = ""
    run.train.global_batch_size = row.batch
    run.run.fsdp = fsdp
    run.run.max_steps = (windows + 1) * steps_timed
    run.run.log_every_steps = steps_timed
    run.run.val_every_steps = run.run.checkpoint_every_steps = 10 * (windows + 1) * steps_timed
    run.run.val_batches = 1
    run.data.train.sample_per_epoch = max(int(run.data.train.sample_per_epoch),
                                          2 * (windows + 1) * steps_timed * row.batch)
    run.train.epoch = max(int(run.train.epoch), 1)

  def data_fn(cfg, workdir, split, per_process_batch, data_seed, num_examples=None):
    del cfg, workdir, split, per_process_batch, data_seed, num_examples
    return _RepeatBatch(host_batch)

  called, returned, bare = {}, {}, []

  def on_log(step, total, scalars):
    del total
    if step in called or not any(k.startswith("train/") for k in scalars):
      return  # the validation at the last step logs too
    called[step] = time.perf_counter()
    if step // steps_timed <= windows:
      start = time.perf_counter()
      bare_steps(steps_timed)
      bare.append((time.perf_counter() - start) / steps_timed * 1e3)
    returned[step] = time.perf_counter()

  with tempfile.TemporaryDirectory() as workdir:
    trainer.train(run, workdir, data_fn=data_fn, loss_fn=loss_fn, on_log=on_log)
  bare_run.clear()
  timed = [(called[(k + 1) * steps_timed] - returned[k * steps_timed]) / steps_timed * 1e3
           for k in range(1, windows + 1)]
  desc = device_description(devices)
  return {"config": row.name, "variant": config.variant, "stage": config.stage, "batch": row.batch,
          "dtype": config.dtype, "steps": steps_timed, "windows": windows, "warmup": warmup,
          "bare_ms": statistics.median(bare), "trainer_ms": statistics.median(timed),
          "overhead_pct": statistics.median(100.0 * (t / b - 1.0) for t, b in zip(timed, bare)),
          "window_bare_ms": bare, "window_trainer_ms": timed,
          "device": desc["device"], "num_devices": desc["num_devices"], "cores": desc["cores"], "fsdp": fsdp,
          "jax": jax.__version__}


class _RepeatBatch:
  """An endless iterator over one batch with a position grain's checkpoint handler can save (JSON bytes)."""

  def __init__(self, batch):
    self._batch, self._count = batch, 0

  def __iter__(self):
    return self

  def __next__(self):
    self._count += 1
    return self._batch

  def get_state(self) -> bytes:
    return json.dumps({"next_index": self._count}).encode()

  def set_state(self, state) -> None:
    self._count = json.loads(state)["next_index"]
