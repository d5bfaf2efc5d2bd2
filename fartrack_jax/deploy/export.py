"""Exports of the tracking network: ONNX (through jax2onnx) and StableHLO (`jax.export`).

Both export the forward the tracker runs, with the params baked in:
  inputs   templates `[B, T, Hz, Wz, 3]` float32 and search `[B, Hx, Wx, 3]` float32, normalised as
           `FARTrack.apply` takes them; for the sparse stage also token_mask `[B, N]` bool (True = visible);
  outputs  coord_logits `[B, 4, V]` float32; for the sparse stage also keep_masks `[B, 4, P_z]` bool (the
           tracking masks of the newest template, pruning 25/50/75/90 %).
B is dynamic unless a batch is given. What the tracker needs besides the network (crop sizes and factors,
bins, prune ratios, mean/std, template count) goes into the file's metadata (`metadata.py`), so the runtime
tracker (`runtime.py`) needs neither the config nor JAX.

Why jax2onnx: it converts the jaxpr of the Flax forward directly (stable argsort -> TopK, whose ties go to
the lower index as in XLA's stable sort, so the keep masks are the same), with a symbolic batch dimension;
the graph then runs under onnxruntime with no JAX installed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np

from fartrack_jax import model as model_lib
from fartrack_jax.deploy import metadata as meta_lib

FORMATS = ("onnx", "stablehlo")
# StableHLO lowered for these platforms: one artefact serves a CPU, a GPU or a TPU host.
STABLEHLO_PLATFORMS = ("cpu", "cuda", "tpu")
ONNX_OPSET = 23


def tracking_forward(config, params):
  """The tracker's forward with `params` closed over: `(templates, search[, token_mask]) -> coord_logits
  [, keep_masks]` (sparse stage: both)."""
  # Per-layer logits (distill) are training outputs; the tracker reads the last layer's only.
  spec = dataclasses.replace(model_lib.ModelSpec.from_config(config), logit_layers=())
  net = model_lib.FARTrack(spec, dtype=jnp.float32)
  params = jax.tree_util.tree_map(np.asarray, params)
  if config.stage == "fartrack_sparse":
    def forward(templates, search, token_mask):
      out = net.apply({"params": params}, templates, search, token_mask=token_mask, prune_mode="track")
      return out["coord_logits"], out["keep_masks"]
  else:
    def forward(templates, search):
      return net.apply({"params": params}, templates, search)["coord_logits"]
  return forward


def input_specs(config, batch: int | None = None) -> list[jax.ShapeDtypeStruct]:
  """Shapes of the exported inputs; `batch=None` makes the batch dimension symbolic ("B")."""
  spec = model_lib.ModelSpec.from_config(config)
  b = jax.export.symbolic_shape("B")[0] if batch is None else int(batch)
  z, x = spec.template_size, spec.search_size
  specs = [jax.ShapeDtypeStruct((b, spec.num_templates, z, z, 3), jnp.float32),
           jax.ShapeDtypeStruct((b, x, x, 3), jnp.float32)]
  if config.stage == "fartrack_sparse":
    specs.append(jax.ShapeDtypeStruct((b, spec.num_tokens), jnp.bool_))
  return specs


def _write_atomic(files: dict[str, bytes]) -> None:
  """Writes every file under a temporary name first and renames them only when all are written."""
  from etils import epath  # pylint: disable=g-import-not-at-top
  tmps = {}
  try:
    for path, data in files.items():
      tmp = epath.Path(f"{path}.tmp-{os.getpid()}")
      tmp.parent.mkdir(parents=True, exist_ok=True)
      tmp.write_bytes(data)
      tmps[path] = tmp
    for path, tmp in tmps.items():
      tmp.replace(path)  # over an earlier export of the same name (rename refuses an existing file)
  finally:
    for tmp in tmps.values():
      if tmp.exists():
        tmp.unlink()


def onnx_model(config, params, batch: int | None = None):
  """The `onnx.ModelProto` of the tracking forward, its metadata stored under `metadata.KEY`."""
  from jax2onnx import to_onnx  # pylint: disable=g-import-not-at-top
  # jax2onnx imports every plugin it has and logs a traceback for those written against other JAX versions
  # (dm_pix's); none of them is used here. onnx_ir warns about values it leaves untyped in the graph.
  for name in ("jax2onnx", "onnx_ir"):
    logging.getLogger(name).setLevel(logging.ERROR)
  meta = meta_lib.from_config(config, "float32", batch)
  model = to_onnx(tracking_forward(config, params), input_specs(config, batch), model_name="fartrack",
                  opset=ONNX_OPSET, input_names=meta["inputs"], output_names=meta["outputs"])
  entry = model.metadata_props.add()
  entry.key, entry.value = meta_lib.KEY, json.dumps(meta)
  model.doc_string = (f"FARTrack {meta['stage']} ({meta.get('variant')}, {meta['depth']} layers) tracking "
                      "forward; tracker settings in metadata_props['fartrack']")
  return model


def export_onnx(config, params, output: str, batch: int | None = None) -> dict:
  """Writes the ONNX export to `output` (atomically). Returns the metadata written."""
  model = onnx_model(config, params, batch)
  _write_atomic({output: model.SerializeToString()})
  return json.loads(next(p.value for p in model.metadata_props if p.key == meta_lib.KEY))


def quantize_int8(source: str, output: str) -> str:
  """onnxruntime's dynamic quantization of an ONNX export: int8 weights for the matmuls, activations
  quantized per call; the metadata is kept (its dtype set to "int8-dynamic"). Writes `output` atomically."""
  import tempfile  # pylint: disable=g-import-not-at-top
  import onnx  # pylint: disable=g-import-not-at-top
  from onnxruntime import quantization  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as tmp:
    quantized = os.path.join(tmp, "int8.onnx")
    quantization.quantize_dynamic(source, quantized, weight_type=quantization.QuantType.QInt8,
                                  op_types_to_quantize=["MatMul", "Gemm"])
    model = onnx.load(quantized)
  meta = json.loads(next(p.value for p in onnx.load(source).metadata_props if p.key == meta_lib.KEY))
  del model.metadata_props[:]
  entry = model.metadata_props.add()
  entry.key, entry.value = meta_lib.KEY, json.dumps(dict(meta, dtype="int8-dynamic"))
  _write_atomic({output: model.SerializeToString()})
  return output


def stablehlo_export(config, params, batch: int | None = None,
                     platforms=STABLEHLO_PLATFORMS) -> jax.export.Exported:
  return jax.export.export(jax.jit(tracking_forward(config, params)), platforms=platforms)(
      *input_specs(config, batch))


def export_stablehlo(config, params, output: str, batch: int | None = None,
                     platforms=STABLEHLO_PLATFORMS) -> dict:
  """Writes `jax.export`'s serialization to `output` and the tracker metadata to `output + '.json'`
  (both or neither). Returns the metadata."""
  exported = stablehlo_export(config, params, batch, platforms)
  meta = dict(meta_lib.from_config(config, "float32", batch), platforms=list(exported.platforms))
  _write_atomic({output: bytes(exported.serialize()), output + ".json": json.dumps(meta, indent=1).encode()})
  return meta


def load_stablehlo(path: str, stage: str | None = None):
  """`(exported, metadata)`: call `exported.call(templates, search[, token_mask])`; no model code needed."""
  from etils import epath  # pylint: disable=g-import-not-at-top
  path = epath.Path(path)
  if not path.exists():
    raise meta_lib.DeployError(f"no such StableHLO export: {path}")
  side = epath.Path(f"{path}.json")
  meta = meta_lib.check(side.read_text() if side.exists() else None, str(path), stage)
  try:
    exported = jax.export.deserialize(bytearray(path.read_bytes()))
  except Exception as e:  # pylint: disable=broad-except
    raise meta_lib.DeployError(f"{path} is not a jax.export serialization ({type(e).__name__})") from None
  return exported, meta


def export(config, params, fmt: str, output: str, batch: int | None = None, int8: bool = False) -> dict:
  if fmt == "onnx" and int8:
    import tempfile  # pylint: disable=g-import-not-at-top
    with tempfile.TemporaryDirectory() as tmp:
      meta = export_onnx(config, params, os.path.join(tmp, "float32.onnx"), batch)
      quantize_int8(os.path.join(tmp, "float32.onnx"), output)
    return dict(meta, dtype="int8-dynamic")
  if fmt == "onnx":
    return export_onnx(config, params, output, batch)
  if int8:
    raise ValueError("--quantize int8 applies to --format onnx only")
  if fmt == "stablehlo":
    return export_stablehlo(config, params, output, batch)
  raise ValueError(f"--format must be one of {FORMATS}, got {fmt!r}")


def random_inputs(meta: dict, batch: int = 2, seed: int = 0, pruned: bool = True) -> list[np.ndarray]:
  """Inputs for a parity check: normal templates/search; for the sparse stage a token mask pruning some
  tokens of every template but the newest (as the tracker does) when `pruned`."""
  rng = np.random.default_rng(seed)
  t, z, x = meta["num_templates"], meta["template_size"], meta["search_size"]
  inputs = [rng.standard_normal((batch, t, z, z, 3)).astype(np.float32),
            rng.standard_normal((batch, x, x, 3)).astype(np.float32)]
  if meta["stage"] == "fartrack_sparse":
    mask = np.ones((batch, meta["num_tokens"]), bool)
    if pruned:
      older = (t - 1) * meta["tokens_per_template"]
      mask[:, :older] = rng.random((batch, older)) > 0.25
    inputs.append(mask)
  return inputs


def compare(reference, candidate) -> dict:
  """Max |diff| of the logits and the count of keep-mask entries that differ."""
  reference = reference if isinstance(reference, (tuple, list)) else [reference]
  candidate = candidate if isinstance(candidate, (tuple, list)) else [candidate]
  out = {"logits_max_abs_diff": float(np.max(np.abs(np.asarray(reference[0]) - np.asarray(candidate[0]))))}
  if len(reference) > 1:
    out["keep_mask_mismatches"] = int(np.sum(np.asarray(reference[1]) != np.asarray(candidate[1])))
  return out
