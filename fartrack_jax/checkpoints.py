"""Params checkpoints (orbax): what the converter writes and the tracker, evaluator and trainer read."""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


def save_params(directory: str, params, metadata: dict[str, Any]) -> str:
  """Saves `params` plus JSON `metadata` (stage, depth, source...) under `directory`.

  Orbax writes into a temporary directory and renames it when complete, so a crash never leaves a
  directory that looks like a finished checkpoint. An existing `directory` is an error.
  """
  directory = os.path.abspath(directory)
  if os.path.exists(directory):
    raise FileExistsError(f"{directory} already exists; choose a new output path or remove it")
  params = jax.tree_util.tree_map(np.asarray, params)
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
    ckptr.save(directory, ocp.args.Composite(params=ocp.args.StandardSave(params),
                                             metadata=ocp.args.JsonSave(metadata)))
  return directory


def load_params(directory: str) -> tuple[dict, dict]:
  """Returns `(params, metadata)` as written by `save_params` (params as numpy float32 arrays)."""
  directory = os.path.abspath(directory)
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"no params checkpoint at {directory}")
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
    restored = ckptr.restore(directory, ocp.args.Composite(params=ocp.args.StandardRestore(),
                                                           metadata=ocp.args.JsonRestore()))
  params = jax.tree_util.tree_map(np.asarray, restored["params"])
  return params, dict(restored["metadata"])


def load_params_for(directory: str, config) -> tuple[dict, dict]:
  """`load_params`, then checks the tree against the model `config` builds: a stage or depth mismatch is
  reported by name instead of failing later inside `apply`."""
  from fartrack_jax import model as model_lib  # pylint: disable=g-import-not-at-top
  params, meta = load_params(directory)
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
  return params, meta
