"""The training loop every stage runs: `train(config, workdir)`.

Order of work, so that what can be wrong fails before anything is compiled or trained:
  1. the config is validated;
  2. the mesh is built and the global batch checked against devices and processes;
  3. the dataset roots are opened (`DatasetError` naming the root) and the pretrained weights loaded
     (`FileNotFoundError` / `ConversionError` naming the file);
  4. the state is created in its shardings, or restored from the latest checkpoint in
     `<workdir>/checkpoints` together with the input pipeline's position (a checkpoint of another model is
     refused first); then the resolved config is written to `<workdir>/config.json`;
  5. the loop: one jitted step per batch, metrics every `run.log_every_steps` (TensorBoard events + log lines
     via clu), validation loss every `run.val_every_steps`, an asynchronous checkpoint every
     `run.checkpoint_every_steps` and at the end.

The host never waits for the step it has just queued: it reads and uploads batch s+1 while step s runs (it
waits for step s-2 to finish, so no more than three batches are ever on the devices: waiting for step s-1
instead cost a smoke step 3-8 % against a loop that never waits, s-2 0-4 %). The step itself sums the
logging window's metrics on the devices, and the host reads the NaN guard only where it syncs anyway
(logs, validation, checkpoints, the end): `steps.make_train_step(chained=True)`: once a step is not finite
no later step changes the state, and the step's window keeps which step it was, so the run still stops with
the last finite state, naming the step. A preemption (SIGTERM to any process, `stopping.PreemptionNotice`)
saves the step every process agreed on, waits until it is committed and raises `Preempted`. Where the wall
time went (start-up, compile, input, steps, checkpoints, validation, steps recomputed after a restart) goes
to TensorBoard and `<workdir>/goodput.json` (`goodput.py`).

Each process feeds its own rows of the global batch (grain reads indices `process_index::process_count`);
`jax.make_array_from_process_local_data` assembles the global arrays.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from typing import Callable

import jax
import numpy as np

from data_pipelines.training import build, index_cache, pipeline
from fartrack_jax import convert
from fartrack_jax import config_lib
from fartrack_jax import model as model_lib
from fartrack_jax import storage
from fartrack_jax.distributed import peers, stopping
from fartrack_jax.training import checkpoint_manager, goodput, optim, same_data, stages, steps

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
  """The loss or the gradient norm became NaN/Inf; the state was not updated and not saved."""


class DataError(RuntimeError):
  """Reading a training batch failed mid-run (the step and the reader's error are named)."""


class Preempted(Exception):
  """The job was told to stop (SIGTERM); `step` is committed in the checkpoints, `commit_s` seconds after the
  notice. Starting the same launch again resumes there."""

  def __init__(self, step: int, commit_s: float, goodput_line: str = ""):
    super().__init__(f"preempted at step {step}: checkpoint committed in {commit_s:.1f} s; start the same "
                     "launch to resume")
    self.step, self.commit_s, self.goodput_line = step, commit_s, goodput_line


@dataclasses.dataclass
class TrainResult:
  step: int
  last_metrics: dict[str, float]
  val_metrics: dict[str, float]
  skipped_samples: dict[str, int]
  resumed_from: int | None
  goodput_line: str = ""  # `goodput 87 %: input 6 %, ...` over every launch of the workdir


def _resolve_pretrained(path: str) -> str:
  """A relative file name is looked up in the working directory, then in `pretrained_models/` beside it
  (where the original keeps `mae_tiny_distill_400e.pth.tar`)."""
  if storage.is_remote(path) or os.path.isabs(path) or os.path.exists(path):
    return path
  candidate = os.path.join("pretrained_models", path)
  return candidate if os.path.exists(candidate) else path


def initial_params(config, seed: int) -> tuple[dict, str]:
  """The params a fresh run starts from, and where they came from.

  Stage 1 starts from MAE ViT weights (`model.pretrain_file`), stages 2 and 3 from the previous stage
  (`model.pretrain_pth`); an empty path means a fresh random init, which only `model.allow_random_init`
  (the smoke variant) permits. A path that does not exist fails here, at the start.
  """
  model = model_lib.build_model(config, "float32")
  init = jax.tree_util.tree_map(np.asarray, model_lib.init_params(model, jax.random.PRNGKey(seed)))
  field = "model.pretrain_file" if config.stage == "fartrack" else "model.pretrain_pth"
  path = config.model.pretrain_file if config.stage == "fartrack" else config.model.pretrain_pth
  if not path:
    if not config.model.get("allow_random_init", False):
      raise ValueError(f"{field} is empty: {config.stage} starts from pretrained weights; set "
                       f"--config.{field}=PATH (or --config.model.allow_random_init=True for a random init)")
    return init, "random init"
  path = _resolve_pretrained(path)
  if not storage.as_path(path).exists():
    raise FileNotFoundError(f"{field}={path!r} does not exist (give an orbax params directory or a .pth.tar)")
  params, report = convert.load_pretrained(path, config, init)
  for line in report.lines():
    logger.info("pretrained %s: %s", path, line)
  return params, path


def default_data(config, workdir: str, split: str, per_process_batch: int, seed: int,
                 num_examples: int | None = None):
  """Training or validation batches of the config's stage (frame pairs, or clips for the sparse stage),
  this process's shard, after checking that every process opened the same data."""
  # The index describes a local dataset root, so on a bucket workdir it is cached on this host instead.
  cache_dir = config.run.index_cache_dir or (
      os.path.expanduser(index_cache.DEFAULT_DIR) if storage.is_remote(workdir)
      else os.path.join(workdir, "index_cache"))
  datasets = build.open_datasets(config, split, cache_dir)
  same_data.check_same_data(datasets, split)  # every host must draw from the same sequences
  return build.input_pipeline(config, datasets, split, per_process_batch, seed, shard_index=jax.process_index(),
                              shard_count=jax.process_count(), num_examples=num_examples)


def default_loss_fn(config):
  if config.stage in stages.FRAME_STAGES:
    return stages.frame_loss_fn(config)
  from fartrack_jax.training import sparse  # pylint: disable=g-import-not-at-top
  return sparse.sequence_loss_fn(config)


def _skip_reasons() -> tuple[str, ...]:
  return tuple(pipeline.SKIP_REASONS)


def train(config, workdir: str, *, data_fn: Callable | None = None, loss_fn=None,
          async_checkpoints: bool = True,
          on_log: Callable[[int, int, dict[str, float]], None] | None = None,
          started_at: float | None = None) -> TrainResult:
  """`_train` (below), watched for a stalled loop when the process runs alone and its entry point set the
  limits (`peers.watch_alone`, from `--stall_timeout_s`/`--startup_timeout_s`): the stalled run ends with one
  `error:` line naming where it is stuck, as a job of several does through its peer watcher."""
  with peers.stall_watch(stopping.exit_with_failure):
    return _train(config, workdir, data_fn=data_fn, loss_fn=loss_fn, async_checkpoints=async_checkpoints,
                  on_log=on_log, started_at=started_at)


def _train(config, workdir: str, *, data_fn: Callable | None = None, loss_fn=None,
           async_checkpoints: bool = True,
           on_log: Callable[[int, int, dict[str, float]], None] | None = None,
           started_at: float | None = None) -> TrainResult:
  """Trains `config` in `workdir` until `train.epoch` epochs (or `run.max_steps`) are done, resuming from
  the latest checkpoint there. `data_fn(config, workdir, split, per_process_batch, seed, num_examples)`
  and `loss_fn` replace the defaults (tests). `on_log(step, total_steps, scalars)` is called with what is
  written every `run.log_every_steps` steps (`train/...`, `data/...`) and after each validation (`val/...`),
  for progress lines. `started_at`: wall-clock start of this launch, for the goodput accounting (default:
  this process's start). Raises `Preempted` after committing the step of a preemption."""
  from clu import metric_writers, metrics as clu_metrics, periodic_actions  # pylint: disable=g-import-not-at-top

  watch = goodput.Stopwatch(started_at)
  peers.run_starting()
  config = config_lib.validate_config(config)
  # Every process probes the shared workdir (a missing bucket or a read-only one fails here, not at the
  # first checkpoint); process 0 alone writes the shared files.
  workdir_path = storage.check_writable(workdir, "--workdir")
  workdir = os.fspath(workdir_path)

  mesh = steps.make_train_mesh(config.run.fsdp)
  per_process_batch = steps.check_global_batch(int(config.train.global_batch_size), mesh)
  total = optim.total_steps(config)
  if config.run.get("max_steps", 0):
    total = min(total, int(config.run.max_steps))

  data_fn = data_fn or default_data
  train_data = data_fn(config, workdir, "train", per_process_batch, int(config.seed))
  train_iter = iter(train_data)
  # Built now, so a wrong val root fails at the start too; each validation iterates it afresh, so it sees the
  # same run.val_batches batches every time.
  val_data = data_fn(config, workdir, "val", per_process_batch, int(config.seed) + 1,
                     int(config.run.val_batches) * per_process_batch * jax.process_count())

  loss_fn = loss_fn or default_loss_fn(config)
  ckpts = checkpoint_manager.TrainCheckpoints(os.fspath(workdir_path / "checkpoints"), keep=config.run.keep_checkpoints,
                                         keep_period=config.run.keep_period, async_save=async_checkpoints)
  latest = ckpts.latest_step()
  if latest is None:
    params, source = initial_params(config, int(config.seed))
  else:  # only the shapes: the values come from the checkpoint
    checkpoint_manager.check_same_model(ckpts.read_meta(latest), config, ckpts.directory, latest)
    net = model_lib.build_model(config, "float32")
    params = jax.eval_shape(lambda: model_lib.init_params(net, jax.random.PRNGKey(0)))
  if jax.process_index() == 0:  # after the model check: a refused resume leaves the run's config as it was
    storage.write_text_atomic(workdir_path / "config.json",
                              json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str))
  tx, schedules = optim.make_optimizer(config, params)
  build_state = lambda p: steps.init_state(p, tx, int(config.seed))
  shapes = jax.eval_shape(build_state, params)
  shardings = steps.state_shardings(shapes, mesh)
  if latest is None:
    state = jax.jit(build_state, out_shardings=shardings)(jax.device_put(params, shardings["params"]))
    logger.info("starting from %s", source)
  else:
    saved_by = ckpts.saved_process_count(latest)
    watch.lap("startup")
    peers.progress(f"restoring step {latest}")
    state, _ = ckpts.restore(latest, checkpoint_manager.abstract_like(shapes, shardings), train_iter,
                             global_batch=int(config.train.global_batch_size))
    logger.info("resumed from step %d of %s%s", latest, ckpts.directory,
                "" if saved_by in (None, jax.process_count()) else
                f" (saved by {saved_by} processes, now {jax.process_count()}: the data continue at global "
                f"example {latest * int(config.train.global_batch_size)})")
    watch.lap("checkpoints")
  del params

  window_names: list[str] = []  # filled when the step is traced: the order of `window["sums"]`
  train_step = steps.make_train_step(loss_fn, tx, shardings, mesh, schedules, chained=True,
                                     window_names=window_names)
  eval_step = steps.make_eval_step(loss_fn, shardings, mesh)
  data_sharding = steps.batch_sharding(mesh)

  is_main = jax.process_index() == 0
  writer = metric_writers.create_default_writer(workdir, just_logging=not is_main, asynchronous=True)
  hooks = [periodic_actions.ReportProgress(num_train_steps=total, writer=writer,
                                           every_steps=config.run.log_every_steps, every_secs=None)]
  if is_main and config.run.profile_steps:
    hooks.append(periodic_actions.Profile(logdir=workdir, num_profile_steps=config.run.profile_steps,
                                          first_profile=min(total, config.run.checkpoint_every_steps) + 1,
                                          every_secs=None))
  reasons = _skip_reasons()
  skipped = np.zeros(len(reasons), np.int64)
  # The logging window's metrics are summed on the devices by the step itself and fetched once per log, one
  # small vector that clu's `Average` divides by the window's steps. (Built per step, clu's jnp arithmetic
  # cost ~80 small dispatches a step, as much as a smoke step; fetching every step's metrics at the log cost
  # about 1 ms per step of the window; a separate compiled add per step, and a fetch of the step's NaN
  # guard, about 0.1 ms each.)
  window_steps = 0
  last_metrics: dict[str, float] = {}
  val_metrics: dict[str, float] = {}
  meta = {"stage": config.stage, "variant": config.variant, "depth": int(config.model.depth),
          "global_batch_size": int(config.train.global_batch_size), "processes": jax.process_count(),
          "model": config.model.to_dict(), "format": "fartrack-jax-train-v1"}

  step = int(jax.device_get(state["step"]))
  first_step = step
  goodput_path = workdir_path / "goodput.json"
  launches = goodput.previous_launches(goodput_path)
  trained_before = goodput.last_step_trained(launches)  # steps up to here are recomputed after a restart
  window = steps.new_window(mesh)
  previous = []  # the `finite` of the newest steps: the host waits for the one two steps back
  ended, compiled, recorded, goodput_line = "failed", False, False, ""

  def check_finite() -> None:
    finite, (bad_step, loss, grad_norm) = jax.device_get((window["finite"], window["first_bad"]))
    if float(finite) > 0:
      return
    raise NonFiniteLossError(
        f"step {int(bad_step)}: loss={float(loss)}, grad_norm={float(grad_norm)} is not finite; stopping. The "
        f"state was not updated; the last checkpoint is step {ckpts.latest_step()} in {ckpts.directory}")

  notice = stopping.PreemptionNotice()
  window_start, window_samples = time.monotonic(), 0
  batch = None

  def release() -> None:
    """Drops the launch's device arrays, compiled steps and data iterators (see `_record_goodput`)."""
    nonlocal state, batch, window, previous, train_step, eval_step, train_iter, val_data
    state = batch = window = previous = train_step = eval_step = train_iter = val_data = None

  watch.lap("startup")
  try:
    notice.__enter__()
    while step < total:
      peers.progress(f"reading training batch {step + 1}")
      try:
        batch = dict(next(train_iter))
      except StopIteration:
        raise DataError(f"the training data ended before batch {step + 1} of {total}") from None
      except Exception as e:  # pylint: disable=broad-except
        raise DataError(f"reading training batch {step + 1} failed: {type(e).__name__}: "
                        f"{' '.join(str(e).split())[:300]}") from e
      skips = batch.pop("skips", None)
      if skips is not None:
        skipped += np.asarray(skips).reshape(-1, len(reasons)).sum(0)
      batch = steps.device_batch(batch, data_sharding)
      watch.lap("input")
      peers.progress(f"step {step + 1}" if compiled else "compiling the training step")
      with jax.profiler.StepTraceAnnotation("train", step_num=step):
        state, window = train_step(state, batch, window)
      if not compiled:
        compiled = True
        watch.lap("compile")
        peers.progress(f"step {step + 1}", started=True)
      if len(previous) == 2:
        previous.pop(0).block_until_ready()  # two steps back, while this one runs
      previous.append(window["finite"])
      step += 1
      window_steps += 1
      window_samples += int(config.train.global_batch_size)
      for hook in hooks:
        hook(step)
      preempted = notice.reached(step, ckpts)
      log_now = step % config.run.log_every_steps == 0 or step == total
      val_now = step % config.run.val_every_steps == 0 or step == total
      save_now = step % config.run.checkpoint_every_steps == 0 or step == total or preempted
      if log_now or val_now or save_now:
        check_finite()
      watch.lap("recomputed" if step <= trained_before else "steps")
      if log_now:
        job_skipped = _sum_over_processes(skipped)
        elapsed = max(time.monotonic() - window_start, 1e-9)
        sums = jax.device_get(window["sums"])
        last_metrics = {k: float(clu_metrics.Average(total=sums[i], count=window_steps).compute())
                        for i, k in enumerate(window_names)}
        scalars = {f"train/{k}": v for k, v in last_metrics.items() if k != "finite"}
        scalars["train/samples_per_s"] = window_samples / elapsed
        scalars.update({f"data/skipped_{r}": int(n) for r, n in zip(reasons, job_skipped)})
        scalars.update({f"goodput/{k}": v for k, v in watch.fractions().items()})
        writer.write_scalars(step, scalars)
        if on_log is not None:
          on_log(step, total, scalars)
        window = steps.new_window(mesh, finite=window["finite"])
        window_steps, window_start, window_samples = 0, time.monotonic(), 0
        watch.lap("steps")
      if val_now:
        peers.progress(f"validation at step {step}")
        val_metrics = _validate(val_data, int(config.run.val_batches), eval_step, state, data_sharding)
        val_scalars = {f"val/{k}": v for k, v in val_metrics.items()}
        writer.write_scalars(step, val_scalars)
        if on_log is not None:
          on_log(step, total, val_scalars)
        watch.lap("validation")
      if save_now:
        peers.progress(f"saving the checkpoint of step {step}")
        ckpts.save(step, state, train_iter, dict(meta, step=step), force=step == total or preempted)
        if preempted:
          ckpts.wait_until_finished()
        watch.lap("checkpoints")
      if preempted and step < total:
        ended = "preempted"
        raise Preempted(step, time.time() - notice.received_at)
    ended = "finished"
  except Preempted as p:
    recorded = True
    p.goodput_line = _record_goodput(goodput_path, launches, watch, first_step, step, ended, ckpts, writer, release)
    raise
  finally:
    notice.__exit__(None, None, None)
    if not recorded:
      goodput_line = _record_goodput(goodput_path, launches, watch, first_step, step, ended, ckpts, writer,
                                     release)
  return TrainResult(step=step, last_metrics=last_metrics, val_metrics=val_metrics,
                     skipped_samples={r: int(n) for r, n in zip(reasons, _sum_over_processes(skipped))},
                     resumed_from=latest, goodput_line=goodput_line)


def _record_goodput(path, launches, watch, first_step: int, step: int, ended: str, ckpts, writer,
                    release: Callable[[], None]) -> str:
  """Ends the launch: closes the checkpoints (waiting for the last save), `release()`s what it holds and
  closes the metric writer, then writes this launch's goodput (process 0) to TensorBoard and, last,
  `goodput.json`; returns the summary line over every launch. Freeing the launch's device arrays, compiled
  steps and data iterators takes time (tenths of a second for a small model, more with data workers), so it
  happens here, inside the launch's wall time, not after the record when the caller drops them."""
  if ended != "failed":  # a failure is named by the phase it happened in
    peers.progress("closing the checkpoints")
  try:
    ckpts.close()
  finally:
    watch.lap("checkpoints")
    line = ""
    try:
      release()
    finally:
      if jax.process_index() == 0:
        try:
          total = goodput.summed(launches, watch)
          wall = max(sum(total.values()), 1e-9)
          writer.write_scalars(step, {f"goodput_total/{k}": v / wall for k, v in total.items()})
        except Exception as e:  # pylint: disable=broad-except
          logger.warning("could not write the goodput to TensorBoard: %s", e)
      writer.close()
      if jax.process_index() == 0:
        try:
          line = goodput.summary(goodput.record(path, launches, watch, first_step, step, ended))
        except Exception as e:  # pylint: disable=broad-except
          logger.warning("could not write %s: %s", path, e)
  return line


def _sum_over_processes(counts: np.ndarray) -> np.ndarray:
  """The job's totals of per-process counters (each process counts the samples it read)."""
  if jax.process_count() == 1:
    return counts
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return np.asarray(multihost_utils.process_allgather(counts)).reshape(jax.process_count(), -1).sum(0)


def _validate(val_data, n: int, eval_step, state, data_sharding) -> dict[str, float]:
  """Mean metrics over the first `n` batches of `val_data` (a fresh iterator: the same batches every time)."""
  sums: dict[str, float] = {}
  count = 0
  for batch in val_data:
    batch = dict(batch)
    batch.pop("skips", None)
    out = jax.device_get(eval_step(state, steps.device_batch(batch, data_sharding)))
    for k, v in out.items():
      sums[k] = sums.get(k, 0.0) + float(v)
    count += 1
    if count == n:
      break
  return {k: v / max(count, 1) for k, v in sums.items()}
