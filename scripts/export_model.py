r"""Exports the tracking network as ONNX or StableHLO, with the tracker's settings in its metadata.

  python scripts/export_model.py --config configs/fartrack_sparse.py:variant=pico \
      --checkpoint PARAMS_OR_WORKDIR_OR_PTH --format onnx --output fartrack_pico.onnx [--batch N] [--check]

--format onnx: inputs templates [B,T,Hz,Wz,3] float32, search [B,Hx,Wx,3] float32 (normalised crops) and,
for the sparse stage, token_mask [B,N] bool; outputs coord_logits [B,4,V] and (sparse) keep_masks
[B,4,P_z] bool; B dynamic unless --batch. Run it with `scripts/track_video.py --onnx F` or
`fartrack_jax.deploy.runtime` (numpy + OpenCV + onnxruntime, no JAX).
--format stablehlo: `jax.export` serialization for cpu, cuda and tpu, plus F.json with the metadata; load
it with `fartrack_jax.deploy.export.load_stablehlo` (or `jax.export.deserialize`) and call
`exported.call(templates, search[, token_mask])`, no model code needed.
--check runs the export and the jitted JAX forward on the same random inputs (batch 2, a pruned token mask)
and prints max |diff| of the logits and keep-mask mismatches; exit 1 above 1e-4 or on any mismatch.
The output is written atomically: a failed export leaves nothing at --output.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # pylint: disable=g-import-not-at-top
from ml_collections import config_flags

from fartrack_jax import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config of the checkpoint, e.g. "
                                          "configs/fartrack_sparse.py:variant=pico.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Orbax params directory, training workdir or original "
                                  ".pth.tar.")
_RANDOM_INIT = flags.DEFINE_bool("random_init", False, "Export freshly initialised params (seed 0) instead "
                                 "of a checkpoint: to try the deployment path (also --random-init).")
_FORMAT = flags.DEFINE_enum("format", "onnx", ["onnx", "stablehlo"], "What to write.")
_OUTPUT = flags.DEFINE_string("output", None, "File to write (StableHLO: also FILE.json).")
_BATCH = flags.DEFINE_integer("batch", None, "Fixed batch size; default: dynamic.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32"], "Precision of the exported network: float32 "
                           "(a float16 export is not implemented; --quantize int8 is the reduced-precision "
                           "option).")
_QUANTIZE = flags.DEFINE_enum("quantize", None, ["int8"], "ONNX only: onnxruntime's dynamic int8 quantization "
                              "of the matmuls (faster on CPUs with int8 dot products; boxes no longer equal "
                              "the float32 tracker's, see README).")
_CHECK = flags.DEFINE_bool("check", False, "Compare the export with the jitted JAX forward; exit 1 above "
                           "1e-4 on the logits or on any keep-mask difference.")

TOLERANCE = 1e-4  # fp32 parity


def one_line(e: Exception) -> str:
  """An exception as one line: its first line, the first detail, and how many more there are."""
  lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
  text = lines[0] + (f" {lines[1]}" if len(lines) > 1 else "")
  return text + (f" (and {len(lines) - 2} more)" if len(lines) > 2 else "")


def main(argv):
  if len(argv) > 1:
    raise SystemExit(f"unexpected arguments: {' '.join(argv[1:])}")
  for name, value in (("--config", _CONFIG.value), ("--output", _OUTPUT.value)):
    if not value:
      raise SystemExit(f"{name} is required (see --help)")
  if bool(_CHECKPOINT.value) == _RANDOM_INIT.value:
    raise SystemExit("give exactly one of --checkpoint and --random-init")
  if _BATCH.value is not None and _BATCH.value < 1:
    raise SystemExit(f"--batch must be >= 1, got {_BATCH.value}")
  import jax  # pylint: disable=g-import-not-at-top
  from fartrack_jax import config_lib, model as model_lib  # pylint: disable=g-import-not-at-top
  from fartrack_jax.deploy import export  # pylint: disable=g-import-not-at-top
  from fartrack_jax.tracking import evaluate  # pylint: disable=g-import-not-at-top
  try:
    config = config_lib.validate_config(_CONFIG.value)
    if _RANDOM_INIT.value:
      params = model_lib.init_params(model_lib.build_model(config, "float32"), jax.random.key(0))
    else:
      params = evaluate.params_for(config, _CHECKPOINT.value)
  except (ValueError, FileNotFoundError, KeyError) as e:
    raise SystemExit(f"error: {one_line(e)}") from None
  try:
    meta = export.export(config, params, _FORMAT.value, _OUTPUT.value, _BATCH.value,
                         int8=_QUANTIZE.value == "int8")
  except ValueError as e:
    raise SystemExit(f"error: {one_line(e)}") from None
  except ImportError as e:
    raise SystemExit(f"error: {e.name or e} is not installed: pip install -r requirements.txt") from None
  print(f"wrote {_OUTPUT.value}: {_FORMAT.value} {meta['dtype']}, stage {meta['stage']}, {meta['depth']} "
        f"layers, batch {meta['batch'] or 'dynamic'}")
  if _CHECK.value:
    inputs = export.random_inputs(meta, batch=_BATCH.value or 2)
    reference = jax.jit(export.tracking_forward(config, params))(*inputs)
    if _FORMAT.value == "onnx":
      from fartrack_jax.deploy import runtime  # pylint: disable=g-import-not-at-top
      ours = runtime.OnnxNetwork(_OUTPUT.value)(*inputs)
    else:
      exported, _ = export.load_stablehlo(_OUTPUT.value)
      ours = exported.call(*inputs)
    result = export.compare(reference, ours)
    print("  ".join(f"{k} {v:g}" for k, v in result.items()))
    if _QUANTIZE.value:
      return  # int8 is not held to the float32 tolerance; the figures above say how far it is.
    if result["logits_max_abs_diff"] > TOLERANCE or result.get("keep_mask_mismatches", 0):
      raise SystemExit(f"error: the export differs from the JAX forward (tolerance {TOLERANCE} on logits, "
                       "none on masks)")


if __name__ == "__main__":
  cli.run(main)
