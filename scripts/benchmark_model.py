r"""Batch-1 forward latency of the tracking network per variant (Tiny/Nano/Pico), jitted, float32.

  python scripts/benchmark_model.py [--stage fartrack_sparse] [--variants tiny,nano,pico] \
      [--runs 50] [--warmup 5] [--formats jax,onnxruntime,stablehlo] [--torch-repo PATH] [--json FILE]

For each variant: the jitted forward of `configs/<stage>.py:variant=<v>` at batch 1 on random weights and
inputs (the sparse stage runs its tracking mode, keep masks included), timed `--runs` times after
`--warmup` calls with `block_until_ready` on every call; median and min in ms. With --torch-repo the
original PyTorch model of the same variant is timed in the same run on the same machine (eval mode,
no_grad, --threads threads, default all cores), alternating call by call with ours so that load from
elsewhere on a shared machine affects both alike. --formats adds the exports of the same weights
(`fartrack_jax/deploy`): `onnxruntime` (the ONNX export under onnxruntime, CPU provider, --threads intra-op
threads), `onnxruntime_int8` (the same after onnxruntime's dynamic int8 quantization of the matmuls) and
`stablehlo` (the `jax.export` artefact deserialized and called), all in the same interleaved loop. Prints a
table; --json writes a list of rows {"variant", "framework", "median_ms", "min_ms", "device", ...}.
"""

import importlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # pylint: disable=g-import-not-at-top

from fartrack_jax import cli
from scripts.benchmarks import timing

_STAGE = flags.DEFINE_enum("stage", "fartrack_sparse", ["fartrack", "fartrack_distill", "fartrack_sparse"],
                           "Which stage's network to time (the tracker runs fartrack_sparse).")
_VARIANTS = flags.DEFINE_list("variants", ["tiny", "nano", "pico"], "Variants to time.")
_RUNS = flags.DEFINE_integer("runs", 50, "Timed calls per variant (>= 50 for the reported table).")
_WARMUP = flags.DEFINE_integer("warmup", 5, "Untimed calls first (the first compiles).")
_TORCH_REPO = flags.DEFINE_string("torch_repo", None, "Checkout of the original code: also time its "
                                  "forward (also --torch-repo).")
_JSON = flags.DEFINE_string("json", None, "Write the rows as JSON here.")
_FORMATS = flags.DEFINE_list("formats", ["jax", "onnxruntime", "stablehlo"], "What to time besides --torch-repo: "
                             "jax, onnxruntime, onnxruntime_int8, stablehlo.")
_THREADS = flags.DEFINE_integer("threads", None, "Threads of PyTorch and onnxruntime (default: all cores). "
                                "1 compares per-core speed, which holds up better on a loaded machine.")
FORMATS = ("jax", "onnxruntime", "onnxruntime_int8", "stablehlo")


def _threads() -> int:
  return _THREADS.value or os.cpu_count() or 1


def _random_params_and_inputs(config):
  """The weights (seed 0) and batch-1 inputs every row of a variant runs on."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from fartrack_jax import model as model_lib  # pylint: disable=g-import-not-at-top
  from fartrack_jax.deploy import export  # pylint: disable=g-import-not-at-top
  from fartrack_jax.deploy import metadata  # pylint: disable=g-import-not-at-top
  params = model_lib.init_params(model_lib.build_model(config, "float32"), jax.random.key(0))
  inputs = export.random_inputs(metadata.from_config(config), batch=1, seed=0, pruned=False)
  return jax.tree_util.tree_map(np.asarray, params), inputs


def onnxruntime_forward(config, int8: bool = False):
  """The ONNX export's batch-1 forward under onnxruntime (optionally int8-quantized), and its sync."""
  import tempfile  # pylint: disable=g-import-not-at-top
  from fartrack_jax.deploy import export, runtime  # pylint: disable=g-import-not-at-top
  params, inputs = _random_params_and_inputs(config)
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "model.onnx")
    export.export_onnx(config, params, path, batch=1)
    if int8:
      path = export.quantize_int8(path, os.path.join(tmp, "model_int8.onnx"))
    net = runtime.OnnxNetwork(path, threads=_threads())
  return (lambda: net(*inputs)), (lambda out: out)


def stablehlo_forward(config):
  """The `jax.export` artefact, serialized, deserialized and called (jitted), and its sync."""
  import jax  # pylint: disable=g-import-not-at-top
  from fartrack_jax.deploy import export  # pylint: disable=g-import-not-at-top
  params, inputs = _random_params_and_inputs(config)
  exported = jax.export.deserialize(export.stablehlo_export(config, params, batch=1).serialize())
  call = jax.jit(exported.call)
  inputs = [jax.device_put(x) for x in inputs]
  return (lambda: call(*inputs)), jax.block_until_ready


def jax_forward(config):
  """A zero-argument callable running the jitted batch-1 forward, and its sync function."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from fartrack_jax import model as model_lib  # pylint: disable=g-import-not-at-top
  net = model_lib.build_model(config, "float32")
  params = model_lib.init_params(net, jax.random.key(0))
  spec = net.spec
  rng = np.random.default_rng(0)
  templates = jax.device_put(rng.standard_normal(
      (1, spec.num_templates, spec.template_size, spec.template_size, 3)).astype(np.float32))
  search = jax.device_put(rng.standard_normal((1, spec.search_size, spec.search_size, 3)).astype(np.float32))
  mask = jax.device_put(np.ones((1, spec.num_tokens), bool)) if config.stage == "fartrack_sparse" else None
  fwd = jax.jit(lambda p, t, s, m: net.apply({"params": p}, t, s, token_mask=m))
  return (lambda: fwd(params, templates, search, mask)), jax.block_until_ready


def torch_forward(config, torch_repo):
  """The original's batch-1 forward (eval, no_grad) as a zero-argument callable, and its sync function."""
  import torch  # pylint: disable=g-import-not-at-top
  from fartrack_jax import model as model_lib  # pylint: disable=g-import-not-at-top
  from fartrack_jax import parity  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(_threads())
  net = parity.load_original(torch_repo, config, seed=0)
  spec = model_lib.ModelSpec.from_config(config)
  z = [torch.randn(1, 3, spec.template_size, spec.template_size) for _ in range(spec.num_templates)]
  x = torch.randn(1, 3, spec.search_size, spec.search_size)
  seq = torch.tensor([spec.command_tokens], dtype=torch.float32)
  kwargs = {}
  if config.stage == "fartrack_sparse":
    kwargs = dict(stage="inference", mask=torch.ones(1, spec.num_tokens, spec.num_tokens, dtype=torch.bool))

  def call():
    with torch.no_grad():
      if config.stage == "fartrack_sparse":
        return net(template=z, search=x, seq_input=seq, **kwargs)
      return net(template=z, search=x, seq_input=None)

  # PyTorch on the CPU runs synchronously: the call returns when the result is computed.
  return call, lambda out: out


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  rows = []
  device = timing.jax_device_name()
  for variant in _VARIANTS.value:
    config = importlib.import_module(f"configs.{_STAGE.value}").get_config(f"variant={variant}")
    fns, syncs = {}, {}
    unknown = sorted(set(_FORMATS.value) - set(FORMATS))
    if unknown:
      raise SystemExit(f"--formats: unknown {', '.join(unknown)} (choose from {', '.join(FORMATS)})")
    if "jax" in _FORMATS.value:
      fns["jax"], syncs["jax"] = jax_forward(config)
    if "onnxruntime" in _FORMATS.value:
      fns["onnxruntime"], syncs["onnxruntime"] = onnxruntime_forward(config)
    if "onnxruntime_int8" in _FORMATS.value:
      fns["onnxruntime_int8"], syncs["onnxruntime_int8"] = onnxruntime_forward(config, int8=True)
    if "stablehlo" in _FORMATS.value:
      fns["stablehlo"], syncs["stablehlo"] = stablehlo_forward(config)
    if _TORCH_REPO.value:
      fns["torch"], syncs["torch"] = torch_forward(config, _TORCH_REPO.value)
    timings = timing.time_interleaved(fns, syncs, _RUNS.value, _WARMUP.value)
    torch_row = None
    if "torch" in timings:
      import torch  # pylint: disable=g-import-not-at-top
      torch_row = {"variant": variant, "framework": "torch", **timings["torch"],
                   "device": f"cpu ({torch.get_num_threads()} threads)", "batch": 1, "precision": "float32",
                   "stage": _STAGE.value, "torch": torch.__version__}
    parts = []
    for name in [n for n in FORMATS if n in timings]:
      r = timings[name]
      row = {"variant": variant, "framework": name, **r, "device": device, "batch": 1,
             "precision": "int8 (dynamic)" if name.endswith("int8") else "float32", "stage": _STAGE.value,
             "jax": jax.__version__}
      if name.startswith("onnxruntime"):
        import onnxruntime  # pylint: disable=g-import-not-at-top
        row["onnxruntime"] = onnxruntime.__version__
        row["device"] = f"cpu ({_threads()} threads)"
      if torch_row:
        row["speedup_vs_torch"] = torch_row["median_ms"] / r["median_ms"]
      rows.append(row)
      parts.append(f"{name}: median {r['median_ms']:.2f} ms" +
                   (f" ({row['speedup_vs_torch']:.2f}x torch)" if torch_row else ""))
    if torch_row:
      rows.append(torch_row)
      parts.append(f"torch: median {torch_row['median_ms']:.2f} ms")
    line = f"{variant} " + "; ".join(parts)
    print(line, flush=True)
  print()
  timing.report(rows, ["variant", "framework", "median_ms", "min_ms", "runs", "speedup_vs_torch", "device"],
                   _JSON.value)


if __name__ == "__main__":
  cli.run(main)
