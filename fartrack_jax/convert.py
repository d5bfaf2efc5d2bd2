"""Conversion between the original PyTorch state dicts and Flax params.

The mapping works on numpy arrays keyed by the original's state-dict names; reading and writing the
`.pth.tar` files themselves (which needs torch) is in `fartrack_jax/torch_io.py`, and the orbax params files in
`fartrack_jax/checkpoints.py`. The file-level conversions at the end (`convert_checkpoint_to_flax`,
`convert_params_to_torch`, `load_pretrained`) join the three.

Key map (L = `model.num_blocks`; layer i of ours is `blocks.i` for i < L, else `extension.{i - L}`):

  identity                                  identity
  backbone.{cls_token,pos_embed,pos_embed_z,pos_embed_z0,pos_embed_z1,pos_embed_x,output_bias}   same name
  backbone.word_embeddings.weight           word_embeddings
  backbone.position_embeddings.weight       position_embeddings
  backbone.prev_position_embeddings.weight  prev_position_embeddings   (sparse stage)
  backbone.patch_embed.proj.weight [D,3,p,p] patch_embed/kernel [p,p,3,D]
  backbone.norm.{weight,bias}               norm/{scale,bias}
  ....{norm1,norm2}.{weight,bias}           layer_i/{norm1,norm2}/{scale,bias}
  ....masknorm{1,2}.norm.{weight,bias}      layer_i/masknorm{1,2}/{scale,bias}   (sparse stage)
  ....attn.{qkv,proj}.weight [out,in]       layer_i/attn/{qkv,proj}/kernel [in,out]
  ....mlp.{fc1,fc2}.weight [out,in]         layer_i/mlp/{fc1,fc2}/kernel [in,out]
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Mapping

import jax
import numpy as np

from fartrack_jax import checkpoints
from fartrack_jax import model as model_lib
from fartrack_jax import storage
from fartrack_jax import torch_io
from fartrack_jax.model import ModelSpec

# Params the forward pass never reads; a checkpoint may lack them (they are then left at init).
_NOT_READ_TOP = ("cls_token", "pos_embed", "pos_embed_z", "pos_embed_z1", "prev_position_embeddings")


class ConversionError(ValueError):
  """A checkpoint does not fit the chosen config (missing keys or shape mismatches)."""


@dataclasses.dataclass(frozen=True)
class Entry:
  torch_key: str
  flax_path: tuple[str, ...]
  kind: str  # "same" | "linear" | "conv"
  required: bool


def _to_flax(kind: str, value: np.ndarray) -> np.ndarray:
  if kind == "linear":
    return np.ascontiguousarray(value.T)
  if kind == "conv":
    return np.ascontiguousarray(value.transpose(2, 3, 1, 0))
  return value


def _to_torch(kind: str, value: np.ndarray) -> np.ndarray:
  if kind == "linear":
    return np.ascontiguousarray(value.T)
  if kind == "conv":
    return np.ascontiguousarray(value.transpose(3, 2, 0, 1))
  return value


def torch_layer_prefix(spec: ModelSpec, i: int) -> str:
  if i < spec.num_blocks:
    return f"backbone.blocks.{i}"
  return f"backbone.extension.{i - spec.num_blocks}"


def key_map(spec: ModelSpec) -> list[Entry]:
  """Every Flax param of `spec`'s model with its original state-dict key."""
  entries = [Entry("identity", ("identity",), "same", True)]
  top = ["output_bias", "cls_token", "pos_embed"]
  if spec.stage == "fartrack_sparse":
    top.append("pos_embed_z")
  top += ["pos_embed_z0", "pos_embed_z1", "pos_embed_x"]
  for name in top:
    entries.append(Entry(f"backbone.{name}", (name,), "same", name not in _NOT_READ_TOP))
  tables = ["word_embeddings", "position_embeddings"] + (["prev_position_embeddings"] if spec.prenum else [])
  for name in tables:
    entries.append(Entry(f"backbone.{name}.weight", (name,), "same", name not in _NOT_READ_TOP))
  entries.append(Entry("backbone.patch_embed.proj.weight", ("patch_embed", "kernel"), "conv", True))
  entries.append(Entry("backbone.patch_embed.proj.bias", ("patch_embed", "bias"), "same", True))
  for i, layer in enumerate(spec.layer_names()):
    pre = torch_layer_prefix(spec, i)
    for norm in ("norm1", "norm2"):
      for t, f in (("weight", "scale"), ("bias", "bias")):
        entries.append(Entry(f"{pre}.{norm}.{t}", (layer, norm, f), "same", not spec.masked_norm))
        if spec.masked_norm:
          entries.append(Entry(f"{pre}.mask{norm}.norm.{t}", (layer, f"mask{norm}", f), "same", True))
    for mod in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"):
      path = (layer,) + tuple(mod.split("."))
      entries.append(Entry(f"{pre}.{mod}.weight", path + ("kernel",), "linear", True))
      entries.append(Entry(f"{pre}.{mod}.bias", path + ("bias",), "same", True))
  entries.append(Entry("backbone.norm.weight", ("norm", "scale"), "same", True))
  entries.append(Entry("backbone.norm.bias", ("norm", "bias"), "same", True))
  return entries


def _get(tree, path):
  for p in path:
    tree = tree[p]
  return tree


def _set(tree, path, value):
  for p in path[:-1]:
    tree = tree.setdefault(p, {})
  tree[path[-1]] = value


def strip_prefixes(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Drop DataParallel/DDP wrappers (`module.`) the original's checkpoints may carry."""
  out = {}
  for k, v in state_dict.items():
    for prefix in ("module.model.", "module."):
      if k.startswith(prefix):
        k = k[len(prefix):]
        break
    out[k] = v
  return out


_NORM_KEY = re.compile(r"^(?P<pre>.*\.)(?P<norm>norm\d+)\.(?P<field>weight|bias)$")


def add_masknorm_from_norm(state_dict: dict[str, np.ndarray]) -> list[str]:
  """The sparse builder's remap: a block's `normN.*` also initialises `masknormN.norm.*`.

  Only where the checkpoint has no `masknormN` of its own (a distill or stage-1 checkpoint); a sparse
  checkpoint keeps its trained masked norms. Returns the keys added.
  """
  added = []
  for key in list(state_dict):
    m = _NORM_KEY.match(key)
    if not m:
      continue
    target = f"{m['pre']}mask{m['norm']}.norm.{m['field']}"
    if target not in state_dict:
      state_dict[target] = state_dict[key]
      added.append(target)
  return added


@dataclasses.dataclass
class Report:
  """What a conversion did, for printing."""
  mapped: list[str] = dataclasses.field(default_factory=list)
  derived: list[str] = dataclasses.field(default_factory=list)
  unused: list[str] = dataclasses.field(default_factory=list)
  left_at_init: list[str] = dataclasses.field(default_factory=list)

  def lines(self) -> list[str]:
    out = [f"mapped {len(self.mapped)} keys"]
    if self.derived:
      out.append(f"derived {len(self.derived)} params: " + ", ".join(self.derived))
    out.append(f"unused checkpoint keys ({len(self.unused)}): " + (", ".join(self.unused) or "none"))
    out.append(f"params left at init ({len(self.left_at_init)}): " + (", ".join(self.left_at_init) or "none"))
    return out


def _copy_tree(tree):
  if isinstance(tree, Mapping):
    return {k: _copy_tree(v) for k, v in tree.items()}
  return np.asarray(tree)


def torch_to_flax(state_dict: Mapping[str, np.ndarray], spec: ModelSpec, init_params) -> tuple[dict, Report]:
  """Converts an original state dict (any stage) into Flax params for `spec`.

  `init_params` supplies the shapes and the values of params the checkpoint lacks and the forward never
  reads. Raises `ConversionError` listing every missing required key and every shape mismatch.
  """
  sd = strip_prefixes(state_dict)
  report = Report()
  if spec.masked_norm:
    report.derived += [f"{k} (from {k.replace('mask', '', 1).replace('.norm.', '.')})"
                       for k in add_masknorm_from_norm(sd)]
  params = _copy_tree(init_params)
  problems = []
  used = set()
  for e in key_map(spec):
    expected = _get(params, e.flax_path).shape
    if e.torch_key not in sd:
      if e.required:
        problems.append(f"missing key {e.torch_key} (needed for {'/'.join(e.flax_path)}, shape {expected})")
      else:
        report.left_at_init.append(e.torch_key)
      continue
    value = _to_flax(e.kind, np.asarray(sd[e.torch_key], dtype=np.float32))
    used.add(e.torch_key)
    if value.shape != tuple(expected):
      problems.append(f"shape mismatch for {e.torch_key}: checkpoint {tuple(value.shape)} after layout "
                      f"change, config needs {tuple(expected)}")
      continue
    _set(params, e.flax_path, value)
    report.mapped.append(e.torch_key)
  derived_keys = {d.split(" ")[0] for d in report.derived}
  report.unused = sorted(k for k in sd if k not in used and k not in derived_keys)
  if problems:
    raise ConversionError("checkpoint does not fit the config:\n  " + "\n  ".join(problems))
  return params, report


def flax_to_torch(params, spec: ModelSpec) -> dict[str, np.ndarray]:
  """Flax params -> the original's state dict (same keys, layouts and float32 values)."""
  out = {}
  for e in key_map(spec):
    out[e.torch_key] = _to_torch(e.kind, np.asarray(_get(params, e.flax_path), dtype=np.float32))
  return out


def _cubic_weights(t: np.ndarray, a: float = -0.75) -> np.ndarray:
  """PyTorch's cubic convolution weights for the 4 taps at offsets -1, 0, 1, 2."""
  def near(x):  # |x| <= 1
    return ((a + 2) * x - (a + 3)) * x * x + 1
  def far(x):  # 1 < |x| < 2
    return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
  return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=-1)


def _bicubic_matrix(n_in: int, n_out: int) -> np.ndarray:
  """`[n_out, n_in]` matrix of `F.interpolate(mode='bicubic', align_corners=False)` along one axis."""
  scale = n_in / n_out
  m = np.zeros((n_out, n_in), dtype=np.float64)
  for o in range(n_out):
    src = (o + 0.5) * scale - 0.5
    base = int(np.floor(src))
    w = _cubic_weights(np.array(src - base))
    for tap in range(4):
      m[o, min(max(base - 1 + tap, 0), n_in - 1)] += w[tap]
  return m


def resize_pos_embed(grid_embed: np.ndarray, new_grid: int) -> np.ndarray:
  """Bicubic resize of a square positional-embedding grid, as the original's `finetune_track`.

  Args:
    grid_embed: `[1, G*G, D]` (no class token).
  Returns `[1, new_grid**2, D]`.
  """
  _, n, d = grid_embed.shape
  g = int(round(np.sqrt(n)))
  if g * g != n:
    raise ConversionError(f"positional embedding has {n} tokens, not a square grid")
  grid = grid_embed.reshape(g, g, d).astype(np.float64)
  m = _bicubic_matrix(g, new_grid)
  out = np.einsum("ij,jkd,lk->ild", m, grid, m)
  return out.reshape(1, new_grid * new_grid, d).astype(np.float32)


def mae_to_flax(mae_state_dict: Mapping[str, np.ndarray], spec: ModelSpec, init_params) -> tuple[dict, Report]:
  """Stage-1 initialisation from MAE ViT weights (`mae_tiny_distill_400e.pth.tar`'s `model` dict).

  As the original: the ViT blocks load by index, the last `extension` MAE blocks are copied into the
  extension blocks, and the template/search positional embeddings are the MAE grid (after the class token)
  resized bicubically to the template and search grids. Every tracker-specific param (identity, word and
  position embeddings, output bias) is left at init.
  """
  mae = strip_prefixes(mae_state_dict)
  block_ids = sorted({int(k.split(".")[1]) for k in mae if k.startswith("blocks.")})
  if len(block_ids) < spec.num_blocks:
    raise ConversionError(f"MAE checkpoint has {len(block_ids)} blocks; model.num_blocks={spec.num_blocks}")
  if "pos_embed" not in mae:
    raise ConversionError("MAE checkpoint has no pos_embed")
  sd = {}
  for k, v in mae.items():
    sd[f"backbone.{k}"] = v
  last = block_ids[-spec.extension:] if spec.extension else []
  for j, b in enumerate(last):
    for k, v in mae.items():
      if k.startswith(f"blocks.{b}."):
        sd[f"backbone.extension.{j}." + k[len(f"blocks.{b}."):]] = v
  pos = np.asarray(mae["pos_embed"], dtype=np.float32)
  grid = pos[:, 1:]  # after the class token (patch_start_index=1)
  sd["backbone.pos_embed_z0"] = resize_pos_embed(grid, spec.template_grid)
  sd["backbone.pos_embed_z1"] = sd["backbone.pos_embed_z0"]
  if spec.stage == "fartrack_sparse":
    sd["backbone.pos_embed_z"] = sd["backbone.pos_embed_z0"]
  sd["backbone.pos_embed_x"] = resize_pos_embed(grid, spec.search_grid)
  derived = ["backbone.pos_embed_z0", "backbone.pos_embed_z1", "backbone.pos_embed_x"]
  if spec.masked_norm:
    derived += add_masknorm_from_norm(sd)
  # Tracker-specific params start from init; everything else must come from MAE.
  tracker_only = {"identity", "backbone.output_bias", "backbone.word_embeddings.weight",
                  "backbone.position_embeddings.weight", "backbone.prev_position_embeddings.weight",
                  "backbone.norm.weight", "backbone.norm.bias"}
  params = _copy_tree(init_params)
  report = Report(derived=derived)
  problems = []
  used = set()
  for e in key_map(spec):
    expected = tuple(_get(params, e.flax_path).shape)
    if e.torch_key not in sd:
      if e.torch_key in tracker_only or not e.required:
        report.left_at_init.append(e.torch_key)
      else:
        problems.append(f"missing MAE key for {e.torch_key} (shape {expected})")
      continue
    value = _to_flax(e.kind, np.asarray(sd[e.torch_key], dtype=np.float32))
    used.add(e.torch_key)
    if value.shape != expected:
      problems.append(f"shape mismatch for {e.torch_key}: MAE {value.shape}, config needs {expected}")
      continue
    _set(params, e.flax_path, value)
    report.mapped.append(e.torch_key)
  report.unused = sorted(k for k in mae if f"backbone.{k}" not in used)
  if problems:
    raise ConversionError("MAE checkpoint does not fit the config:\n  " + "\n  ".join(problems))
  return params, report


def truncate_layers(params, depth: int) -> dict:
  """The first `depth` layers of a deeper model's params (Nano = Tiny's first 10 layers)."""
  out = {}
  for k, v in params.items():
    m = re.fullmatch(r"layer_(\d+)", k)
    if m and int(m.group(1)) >= depth:
      continue
    out[k] = v
  return out


def metadata_for(config, source: str, source_kind: str) -> dict:
  return {"format": "fartrack-jax-params-v1", "stage": config.stage, "variant": config.get("variant", ""),
          "depth": int(config.model.depth), "source": os.fspath(storage.as_path(source)) if source else "",
          "source_kind": source_kind, "model": config.model.to_dict()}


def convert_checkpoint_to_flax(checkpoint: str, config, output: str, source: str = "auto",
                               allow_pickle: bool = False, seed: int = 0) -> Report:
  """Reads an original `.pth.tar` (a stage checkpoint's `net`, or MAE weights), converts it for `config`
  and writes an orbax params checkpoint to `output`. Params the file lacks that the forward never reads
  start from a fresh init drawn with `seed`. Raises `ConversionError` before writing anything when the
  checkpoint does not fit."""
  if storage.as_path(output).exists():
    raise FileExistsError(f"{output} already exists; choose a new --output")
  kind, sd = torch_io.load_state_dict(checkpoint, allow_pickle=allow_pickle)
  if source == "auto":
    source = "mae" if kind == "model" else "net"
  spec = model_lib.ModelSpec.from_config(config)
  init = model_lib.init_params(model_lib.build_model(config, "float32"), jax.random.key(seed))
  if source == "mae":
    params, report = mae_to_flax(sd, spec, init)
  elif source == "net":
    params, report = torch_to_flax(sd, spec, init)
  else:
    raise ValueError(f"source must be auto, net or mae; got {source!r}")
  checkpoints.save_params(output, params, metadata_for(config, checkpoint, source))
  return report


def convert_params_to_torch(params_dir: str, config, output: str) -> int:
  """Writes params as `{'net': state_dict}` for the original code: `params_dir` is an orbax params
  checkpoint, a training run's workdir or its `checkpoints` folder (the latest step), as the evaluator and
  the exporter accept. Returns the number of keys written."""
  params, meta = checkpoints.load_any_params(params_dir)
  checkpoints.check_params_fit(params, config, params_dir, meta)
  sd = flax_to_torch(params, model_lib.ModelSpec.from_config(config))
  torch_io.save_state_dict(output, sd, extra={"fartrack_jax": {"stage": meta.get("stage"),
                                                               "depth": meta.get("depth")}})
  return len(sd)


def _source_config(config, meta: dict):
  """`config` with the stage and model section of the checkpoint described by `meta`."""
  source = config.copy_and_resolve_references()
  source.stage = meta.get("stage", config.stage)
  model = meta.get("model")
  if model:
    for key, value in model.items():
      if key in source.model:
        source.model[key] = tuple(value) if isinstance(value, list) else value
  return source


def load_pretrained(path: str, config, init_params, allow_pickle: bool = False):
  """Params for `config` from a previous stage or another depth, whatever the source format.

  `path` is an orbax params checkpoint (`save_params`: converted, or exported by
  `scripts/export_variant.py`), a training run's workdir (its latest checkpoint), an original `.pth.tar`
  with a `net` state dict, or MAE weights (`model`).
  Params of another stage or depth go through the original's state-dict keys, so every rule of the
  converter applies on the way: a distill checkpoint's `normN` initialises the sparse model's
  `masknormN.norm` (the original's remap), extra layers are left out (Nano/Pico from Tiny), and params the
  source lacks that the forward never reads stay at `init_params`.

  Returns `(params, Report)`; raises `ConversionError` / `FileNotFoundError` naming `path`.
  """
  spec = model_lib.ModelSpec.from_config(config)
  if storage.as_path(path).is_dir():
    params, meta = checkpoints.load_any_params(path)
    source_spec = model_lib.ModelSpec.from_config(_source_config(config, meta))
    state_dict = flax_to_torch(params, source_spec)
    kind = "net"
  elif storage.as_path(path).is_file():
    kind, state_dict = torch_io.load_state_dict(path, allow_pickle=allow_pickle)
  else:
    raise FileNotFoundError(f"pretrained weights not found: {path} (an orbax params directory or a .pth.tar)")
  try:
    if kind == "model":
      return mae_to_flax(state_dict, spec, init_params)
    return torch_to_flax(state_dict, spec, init_params)
  except ConversionError as e:
    raise ConversionError(f"{path}: {e}") from None
