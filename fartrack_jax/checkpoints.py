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
