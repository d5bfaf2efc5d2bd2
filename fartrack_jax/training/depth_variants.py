"""Depth variants: standalone params checkpoints of one depth from a distillation run (Nano = the first 10
layers, Pico = 6), what `scripts/export_variant.py` writes. (Exports of the network for deployment, ONNX and
StableHLO, are `fartrack_jax.deploy`.)

Self-distillation trains every layer to predict the box, so a shallower tracker is the same params with the
deeper layers dropped (`convert.truncate_layers`). A variant is an orbax params checkpoint (the format of
`scripts/convert_torch.py`) whose metadata records the stage and the new depth; the tracker, the evaluator
and the sparse stage's `model.pretrain_pth` load it like any other.
"""

from __future__ import annotations

from fartrack_jax import checkpoints, convert


def variant_config(config, depth: int):
  """`config` at `depth` layers (and with only the emitting layers that still exist)."""
  from fartrack_jax import config_lib  # pylint: disable=g-import-not-at-top
  out = config.copy_and_resolve_references()
  limit = int(config.model.num_blocks) + int(config.model.extension)
  if not 1 <= depth <= limit:
    raise ValueError(f"--depth {depth} is out of range 1..{limit} (model.num_blocks + model.extension)")
  out.model.depth = int(depth)
  out.model.logit_layers = tuple(i for i in config.model.logit_layers if i < depth)
  names = {v: k for k, v in config_lib.VARIANT_DEPTHS.items()}
  if config.variant != "smoke" and depth in names:
    out.variant = names[depth]
  return config_lib.validate_config(out)


def save_variant(source: str, config, depth: int, output: str) -> dict:
  """Writes the first `depth` layers of the params at `source` (trained with `config`) to `output`.
  Returns the metadata written."""
  params, meta = checkpoints.load_any_params(source)
  if int(meta.get("depth", config.model.depth)) < depth:
    raise ValueError(f"{source} has {meta.get('depth')} layers; cannot export depth {depth}")
  checkpoints.check_params_fit(params, config, source, meta)
  target = variant_config(config, depth)
  truncated = convert.truncate_layers(params, depth)
  checkpoints.check_params_fit(truncated, target, output, {"stage": target.stage, "depth": depth})
  out_meta = convert.metadata_for(target, source, "export")
  out_meta["exported_from_depth"] = int(config.model.depth)
  if "step" in meta:
    out_meta["step"] = int(meta["step"])
  checkpoints.save_params(output, truncated, out_meta)
  return out_meta
