"""Params checkpoints (orbax): what the converter writes and the tracker, evaluator and trainer read."""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from fartrack_jax import storage


def save_params(directory: str, params, metadata: dict[str, Any]) -> str:
  """Saves `params` plus JSON `metadata` (stage, depth, source...) under `directory`.

  Orbax writes into a temporary directory and renames it when complete, so a crash never leaves a
  directory that looks like a finished checkpoint. An existing `directory` is an error.
  """
  directory = os.fspath(storage.as_path(directory))
  if storage.as_path(directory).exists():
    raise FileExistsError(f"{directory} already exists; choose a new output path or remove it")
  params = jax.tree_util.tree_map(np.asarray, params)
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
    ckptr.save(directory, ocp.args.Composite(params=ocp.args.StandardSave(params),
                                             metadata=ocp.args.JsonSave(metadata)))
  return directory


def load_params(directory: str) -> tuple[dict, dict]:
  """Returns `(params, metadata)` as written by `save_params` (params as numpy float32 arrays)."""
  directory = os.fspath(storage.as_path(directory))
  if not storage.as_path(directory).is_dir():
    raise FileNotFoundError(f"no params checkpoint at {directory}")
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
    restored = ckptr.restore(directory, ocp.args.Composite(params=ocp.args.StandardRestore(),
                                                           metadata=ocp.args.JsonRestore()))
  params = jax.tree_util.tree_map(np.asarray, restored["params"])
  return params, dict(restored["metadata"])


def load_params_for(directory: str, config) -> tuple[dict, dict]:
  """`load_params`, then checks the tree against the model `config` builds: a stage or depth mismatch is
  reported by name instead of failing later inside `apply`."""
  params, meta = load_params(directory)
  check_params_fit(params, config, directory, meta)
  return params, meta


def check_params_fit(params, config, directory: str, meta: dict) -> None:
  """ValueError naming every param that is missing, unexpected or of the wrong shape for `config`."""
  from fartrack_jax import model as model_lib  # pylint: disable=g-import-not-at-top
  net = model_lib.build_model(config, "float32")
  expected = jax.eval_shape(lambda: model_lib.init_params(net, jax.random.key(0)))
  want = {jax.tree_util.keystr(k): v.shape for k, v in jax.tree_util.tree_leaves_with_path(expected)}
  have = {jax.tree_util.keystr(k): v.shape for k, v in jax.tree_util.tree_leaves_with_path(params)}
  problems = [f"missing {k}" for k in sorted(set(want) - set(have))]
  problems += [f"unexpected {k}" for k in sorted(set(have) - set(want))]
  problems += [f"{k}: checkpoint {have[k]}, config {want[k]}" for k in sorted(set(want) & set(have))
               if tuple(have[k]) != tuple(want[k])]
  if problems:
    shown = "\n  ".join(problems[:20]) + (f"\n  ... {len(problems) - 20} more" if len(problems) > 20 else "")
    raise ValueError(f"params at {directory} (stage={meta.get('stage')}, depth={meta.get('depth')}) do not "
                     f"fit config stage={config.stage}, depth={config.model.depth}:\n  {shown}")


def load_any_params(path: str) -> tuple[dict, dict]:
  """Params (numpy) and metadata from a params checkpoint (`save_params`), or from a training run's workdir
  or its `checkpoints` folder (the latest step; the metadata then also holds `step`)."""
  p = storage.as_path(path)
  if not p.exists():
    raise FileNotFoundError(f"no checkpoint at {path}")
  if (p / "checkpoints").is_dir() or not (p / "params").exists():
    from fartrack_jax.training import checkpointing  # pylint: disable=g-import-not-at-top
    params, meta, step = checkpointing.load_train_params(path)
    return params, dict(meta, step=step)
  return load_params(path)


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

  Returns `(params, convert.Report)`; raises `convert.ConversionError` / `FileNotFoundError` naming `path`.
  """
  from fartrack_jax import convert, model as model_lib, torch_io  # pylint: disable=g-import-not-at-top
  spec = model_lib.ModelSpec.from_config(config)
  if storage.as_path(path).is_dir():
    params, meta = load_any_params(path)
    source_spec = model_lib.ModelSpec.from_config(_source_config(config, meta))
    state_dict = convert.flax_to_torch(params, source_spec)
    kind = "net"
  elif storage.as_path(path).is_file():
    kind, state_dict = torch_io.load_state_dict(path, allow_pickle=allow_pickle)
  else:
    raise FileNotFoundError(f"pretrained weights not found: {path} (an orbax params directory or a .pth.tar)")
  try:
    if kind == "model":
      return convert.mae_to_flax(state_dict, spec, init_params)
    return convert.torch_to_flax(state_dict, spec, init_params)
  except convert.ConversionError as e:
    raise convert.ConversionError(f"{path}: {e}") from None
