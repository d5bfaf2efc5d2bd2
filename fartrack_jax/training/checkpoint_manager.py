"""A training run's checkpoints, saved and resumed through orbax's CheckpointManager: state, input-pipeline
position, metadata. (Reading a checkpoint's params or state outside a run, and the params checkpoints the
converter and `scripts/export_variant.py` write: `fartrack_jax.checkpoints`.)

A checkpoint at step N holds
  state: `{"step", "params", "opt_state", "rng"}` (restored straight into its shardings),
  data:  the grain iterator state of every process (grain's orbax handler), so the next batch after a resume
         is the one that would have come next,
  meta:  JSON (stage, depth, config, step), so `scripts/export_variant.py` and the evaluator can read the
         params without the optimizer.
Saving is asynchronous (training goes on while the arrays are written) and atomic: orbax writes into a
temporary directory and renames it when every item of every process is complete, and restore only sees
finished steps. A process killed mid-save leaves a temporary directory that the next run ignores (and
removes), so the latest checkpoint that exists always loads.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

from fartrack_jax import checkpoints
from fartrack_jax import storage


class TrainCheckpoints:
  """Checkpoints of one run under `<workdir>/checkpoints`."""

  def __init__(self, directory: str, keep: int, keep_period: int = 0, async_save: bool = True):
    self.directory = os.fspath(storage.as_path(directory))
    _whole_replicas_on_cpu()
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, keep_period=keep_period or None, create=True,
        enable_async_checkpointing=async_save, cleanup_tmp_directories=True)
    self._manager = ocp.CheckpointManager(
        self.directory, options=options, item_names=checkpoints.TRAIN_ITEMS,
        item_handlers={"state": ocp.StandardCheckpointHandler(), "data": grain.checkpoint.CheckpointHandler(),
                       "meta": ocp.JsonCheckpointHandler()})

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state, data_iterator, meta: dict[str, Any], force: bool = False) -> bool:
    return self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(data_iterator),
        meta=ocp.args.JsonSave(meta)), force=force)

  def reached_preemption(self, step: int) -> bool:
    """Whether every process of the job has agreed to save `step` for a preemption (JAX's sync point; false
    in a single process). Ask at every step: the agreement counts the steps each process reports."""
    return self._manager.reached_preemption(step)

  def wait_until_finished(self) -> None:
    """Blocks until the checkpoint being written (if any) is committed."""
    self._manager.wait_until_finished()

  def saved_process_count(self, step: int) -> int | None:
    """How many processes wrote the checkpoint at `step` (from grain's `process_I-of-N.json` names)."""
    names = [p.name for p in (storage.as_path(self.directory) / str(step) / "data").glob("process_*-of-*.json")]
    counts = {int(n.rsplit("-of-", 1)[1].split(".")[0]) for n in names}
    return counts.pop() if len(counts) == 1 else None

  def restore(self, step: int, abstract_state, data_iterator, global_batch: int | None = None
              ) -> tuple[Any, dict]:
    """State at `step` laid out like `abstract_state` (ShapeDtypeStructs with shardings, whatever mesh wrote
    it: orbax reshards); moves `data_iterator` to where it was. Returns `(state, meta)`.

    The data position: with the process count that saved it, grain's own state of this process. On another
    number of processes there is no such state, and the position follows from the step instead: with the
    same global batch, step s has consumed exactly the global examples [0, s*G) in any topology (process i
    of n reads indices i::n, G/n per batch), so each process continues at its own batch s (`seek_batches`).
    No example is repeated or skipped."""
    saved = self.saved_process_count(step)
    if saved in (None, jax.process_count()):
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state),
          data=grain.checkpoint.CheckpointRestore(data_iterator), meta=ocp.args.JsonRestore()))
      return restored["state"], dict(restored["meta"])
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    meta = dict(restored["meta"])
    saved_batch = meta.get("global_batch_size")
    if global_batch is not None and saved_batch is not None and int(saved_batch) != global_batch:
      raise ValueError(f"{self.directory} step {step} was saved by {saved} processes with global batch "
                       f"{saved_batch}; the data position carries to {jax.process_count()} processes only with the "
                       f"same global batch, not {global_batch}")
    batches = int(meta.get("step", step))
    data_iterator.set_state(seek_batches(data_iterator.get_state(), batches))
    return restored["state"], meta

  def read_meta(self, step: int) -> dict:
    """The JSON metadata of the checkpoint at `step` (no arrays are read)."""
    return dict(self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


@functools.cache  # once a process
def _whole_replicas_on_cpu() -> None:
  """In one process on CPU devices, orbax saves each replicated array from one device, whole, instead of
  splitting it over its replicas (as orbax already does on GPU). Replica-parallel saving slices every array
  once per device in eager operations, each compiled on first use: on 8 simulated CPU devices the first
  save of the smoke model cost 10 s in 905 slices, for a copy between host buffers that splitting cannot
  speed up. TPU keeps orbax's default, and so does a job of several processes (a slice rehearsed on CPU),
  whose processes then share the writes of the replicated arrays as a slice's hosts do. (Registered as
  orbax's own emergency checkpointer does: without the per-host array metadata files, which restore does
  not need.)"""
  if jax.default_backend() != "cpu" or jax.process_count() > 1:
    return
  absl_logger = logging.getLogger("absl")  # orbax warns of every override, here a deliberate one
  level = absl_logger.level
  absl_logger.setLevel(logging.ERROR)
  try:
    ocp.type_handlers.register_type_handler(
        jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False), override=True)
  finally:
    absl_logger.setLevel(level)


def committed_steps(directory) -> list[int]:
  """The steps of `directory` (a run's workdir or its `checkpoints` folder) whose checkpoint is committed:
  on a bucket orbax writes a step in place and marks it with `commit_success.txt`, locally it renames a
  temporary folder. Reads only the listing (no barrier between processes), so it works in an error path."""
  path = storage.as_path(directory)
  if (path / "checkpoints").is_dir():
    path = path / "checkpoints"
  return sorted(ocp.step.checkpoint_steps(path))


def seek_batches(fresh_state: dict, batches: int) -> dict:
  """The state of an input iterator that has produced `batches` batches, given the state of a fresh one:
  grain's plain iterator over a batched MapDataset (`next_index` counts batches), or its multiprocessing
  prefetch (workers make whole batches round-robin, so worker w has made the batches w, w+W, ... below
  `batches`). Other iterators have no known position: ValueError."""
  if set(fresh_state) == {"next_index"}:
    return {"next_index": batches}
  workers = fresh_state.get("iterators_in_use_states")
  if (workers is not None and all(set(w) == {"next_index"} for w in workers)
      and fresh_state.get("next_index_in_datasets") == len(workers) and not fresh_state.get("future_states")):
    n = len(workers)
    return dict(fresh_state, next_index_in_cycle=batches % n,
                iterators_in_use_states=[{"next_index": max(0, (batches - w + n - 1) // n)} for w in range(n)])
  raise ValueError(f"cannot move this input iterator to batch {batches} on another topology (state "
                   f"{str(fresh_state)[:200]}); resume with the process count that saved the checkpoint")


class ModelMismatchError(ValueError):
  """A run resumed with a config whose model is not the one its checkpoints hold."""


def check_same_model(meta: dict, config, directory: str, step: int) -> None:
  """`ModelMismatchError` naming every model field of `config` that differs from the checkpoint's `meta`
  (a resumed run must train the model it saved; restoring other shapes would fail deep inside orbax)."""
  saved = meta.get("model") or {}
  current = config.model.to_dict()
  norm = lambda v: list(v) if isinstance(v, (tuple, list)) else v
  fields = [("stage", meta.get("stage"), config.stage)]
  # Fields the config no longer has (unread ones, deleted) cannot make the models differ.
  fields += [(f"model.{k}", saved.get(k), current.get(k)) for k in sorted(current)
             if k not in ("pretrain_file", "pretrain_pth", "allow_random_init")]
  diffs = [f"{name}: checkpoint {old!r}, config {new!r}" for name, old, new in fields
           if name == "stage" and old is not None and old != new or name != "stage" and norm(old) != norm(new)]
  if diffs:
    raise ModelMismatchError(f"{directory} step {step} was trained with another model than the config's: "
                             + "; ".join(diffs) + " (use a new --workdir, or the config the run started with)")


def abstract_like(state_shapes, shardings):
  """ShapeDtypeStructs carrying the target shardings, for `restore`."""
  return jax.tree_util.tree_map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state_shapes,
                                shardings)
