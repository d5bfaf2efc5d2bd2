"""Checkpoint files (orbax), outside a training run: params checkpoints (what the converter and the depth variants
write and the tracker, evaluator and trainer read), and the params or whole state of a training checkpoint read
without its run. (Saving and resuming a run's checkpoints: `training/checkpoint_manager.py`.)"""

from __future__ import annotations

import os
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

from fartrack_jax import model as model_lib
from fartrack_jax import storage

# The items of a training checkpoint (`training/checkpoint_manager.TrainCheckpoints` writes them).
TRAIN_ITEMS = ("state", "data", "meta")


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
    params, meta, step = load_train_params(path)
    return params, dict(meta, step=step)
  return load_params(path)


def load_train_params(directory: str, step: int | None = None) -> tuple[dict, dict, int]:
  """Params (numpy) and metadata of a training checkpoint, without the optimizer state or the data
  iterator: `directory` is a run's workdir or its `checkpoints` folder; `step` defaults to the latest.
  Returns `(params, meta, step)`."""
  state, meta, step = load_train_state(directory, step)
  return state["params"], meta, step


def load_train_state(directory: str, step: int | None = None) -> tuple[dict, dict, int]:
  """The whole state (params, optimizer state, step, rng; numpy, as saved: nested dicts and lists) and the
  metadata of a training checkpoint on this host, whatever mesh wrote it. Returns `(state, meta, step)`."""
  path = storage.as_path(directory)
  if (path / "checkpoints").is_dir():
    path = path / "checkpoints"
  directory = os.fspath(path)
  if not path.is_dir():
    raise FileNotFoundError(f"no training checkpoints at {directory}")
  manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(create=False),
                                  item_names=TRAIN_ITEMS,
                                  item_handlers={"state": ocp.StandardCheckpointHandler(),
                                                 "data": grain.checkpoint.CheckpointHandler(),
                                                 "meta": ocp.JsonCheckpointHandler()})
  try:
    step = manager.latest_step() if step is None else step
    if step is None or step not in manager.all_steps():
      raise FileNotFoundError(f"{directory} has no finished checkpoint"
                              + (f" at step {step}" if step is not None else "")
                              + f" (steps: {list(manager.all_steps())})")
    meta_only = manager.item_metadata(step)
    state_meta = meta_only["state"]
    cpu = jax.sharding.SingleDeviceSharding(jax.local_devices(backend="cpu")[0])
    abstract = jax.tree_util.tree_map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=cpu), dict(state_meta))
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                             meta=ocp.args.JsonRestore()))
  finally:
    manager.close()
  state = jax.tree_util.tree_map(np.asarray, restored["state"])
  return state, dict(restored["meta"]), int(step)
